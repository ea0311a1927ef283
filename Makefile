# The two commands of the README: `make quickstart` and `make test`.
# Everything they need is installed here, into .venv, from the package registries.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# ONNX Runtime's CUDA build where it has wheels (it runs on the CPU too), the CPU build elsewhere.
ORT_EXTRA ?= $(shell $(PYTHON) -c "import platform; print('gpu' if (platform.system(), platform.machine()) in {('Linux', 'x86_64'), ('Windows', 'AMD64')} else 'cpu')")

.PHONY: setup quickstart test lint bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[export,$(ORT_EXTRA),test]'
	touch $@

setup: $(VENV)/.installed

quickstart: setup
	$(VENV)/bin/vs2 quickstart

lint: setup
	$(VENV)/bin/ruff check vs2_export tests benchmarks

test: lint
	$(PY) -m pytest

# Speed against the baselines on a random-weight ViT-B-32 (benchmarks/README.md).
bench: setup
	$(PY) benchmarks/build_random.py ViT-B-32 64 runs/bench/ViT-B-32
	$(VENV)/bin/vs2 bench runs/bench/ViT-B-32/exported --ablations --out runs/bench/vit-b-32.json
