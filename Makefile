# The two commands of the README: `make quickstart` and `make test`.
# Everything they need is installed here, into .venv, from the package registries, the optional
# extras included so CI runs their tests: [openvino] (180 MB) and [ray] (590 MB, ~45 s here).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# ONNX Runtime's CUDA build where it has wheels (it runs on the CPU too), the CPU build elsewhere.
ORT_EXTRA ?= $(shell $(PYTHON) -c "import platform; print('gpu' if (platform.system(), platform.machine()) in {('Linux', 'x86_64'), ('Windows', 'AMD64')} else 'cpu')")

CHROMIUM ?= /usr/bin/chromium

.PHONY: setup quickstart test lint bench js-setup

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[export,$(ORT_EXTRA),test,text,openvino,ray]'
	touch $@

setup: $(VENV)/.installed

quickstart: setup
	$(VENV)/bin/vs2 quickstart

lint: setup
	$(VENV)/bin/ruff check vs2_export tests benchmarks

# What the JS tests need (tests/test_js_*.py): node_modules as package-lock.json pins them, and
# a Chromium for the browser tests (apt, as root: what CI runs as). Both steps are skipped when
# done already, so this costs nothing on a second run.
js-setup: node_modules/.package-lock.json
	@test -x $(CHROMIUM) || { apt-get update && apt-get install -y chromium; }

node_modules/.package-lock.json: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js 20+ (the JS tests run on it)"; exit 1; }
	ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
	@touch $@

# VS2_REQUIRE_JS=1 / VS2_REQUIRE_EXTRAS=1: a missing node_modules, Chromium, [openvino] or [ray]
# fails their tests instead of skipping them. Two pytest-xdist workers, one test file each at a
# time (module fixtures are built once): much of the suite is single-threaded Python (tracing,
# interpreter start-up of each `vs2` subprocess), so two workers on 2 cores took 1026 s where one
# took 1597 s. The ViT-H-14 test (~5 min) is collected first (tests/conftest.py) and kept first
# (--no-loadscope-reorder: xdist would start with the files of most tests), so it does not run
# alone at the end. TEST_WORKERS=0 runs in one process. Memory: that test peaks near 9 GB.
TEST_WORKERS ?= 2
test: lint js-setup
	VS2_REQUIRE_JS=1 VS2_REQUIRE_EXTRAS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30

# Speed against the baselines on a random-weight ViT-B-32 (benchmarks/README.md).
bench: setup
	$(PY) benchmarks/build_random.py ViT-B-32 64 runs/bench/ViT-B-32
	$(VENV)/bin/vs2 bench runs/bench/ViT-B-32/exported --run runs/bench/ViT-B-32 --ablations --images calibration/images --report runs/bench/vit-b-32.json
