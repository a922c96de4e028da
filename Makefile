# Two commands set up everything on a fresh machine (Python 3.11+ and pip):
#   make run    virtual env + install, then download -> sweep -> eval --best -> visualize
#   make test   virtual env + install with the test extra, then pytest
#   make test-fast   the same without the slow tests (pytest -m 'not slow'): under a minute
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
GRID ?= configs/grid.yaml
# download source: LINCLF_CIFAR10_URL (and LINCLF_CIFAR10_MD5) from the environment, else the official URL
DOWNLOAD_ARGS := $(if $(LINCLF_CIFAR10_MD5),--md5 $(LINCLF_CIFAR10_MD5),)

.PHONY: run features test test-fast bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/linclf download $(DOWNLOAD_ARGS)
	$(BIN)/linclf sweep $(GRID)
	$(BIN)/linclf eval --best
	$(BIN)/linclf visualize --best

# learned k-means features: build them, sweep on them, evaluate the best, draw its centroids
features: $(VENV)/.installed
	$(BIN)/linclf download $(DOWNLOAD_ARGS)
	$(BIN)/linclf features configs/kmeans.yaml
	$(BIN)/linclf sweep configs/kmeans.yaml
	$(BIN)/linclf eval --best --sweep kmeans
	$(BIN)/linclf visualize --best --sweep kmeans

# pytest exits 5 when it collected no tests: that must fail, never pass silently
PYTEST = $(BIN)/python -m pytest $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test: $(VENV)/.installed-test
	$(call PYTEST,)

test-fast: $(VENV)/.installed-test
	$(call PYTEST,-m "not slow")

bench: $(VENV)/.installed
	$(BIN)/python scripts/bench_loss.py
	$(BIN)/python scripts/bench_train.py
	$(BIN)/python scripts/bench_sweep.py
	$(BIN)/python scripts/bench_api.py
	$(BIN)/python scripts/bench_features.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
