# The two commands of the README: `make quickstart` and `make test`.
# Everything they need is installed here, into .venv, from the package registries.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup quickstart test bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

quickstart: setup
	$(VENV)/bin/vs2 quickstart

test: setup
	$(PY) -m pytest

# Speed against the baselines on a random-weight ViT-B-32 (benchmarks/README.md).
bench: setup
	$(PY) benchmarks/build_random.py ViT-B-32 64 runs/bench/ViT-B-32
	$(VENV)/bin/vs2 bench runs/bench/ViT-B-32/exported --ablations --out runs/bench/vit-b-32.json
