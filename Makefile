# One task runner. `make demo` and `make test` work on a fresh machine: they create the
# virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: help venv test test-slow lint format demo clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install mondrian with its dev extras

test: $(STAMP)  ## lint, then the default test suite (unit + tiny-model integration)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(PY) -m pytest

test-slow: $(STAMP)  ## the opt-in slow tests as well
	$(PY) -m pytest -m "slow or not slow"

lint: $(STAMP)  ## ruff check and format check
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

demo: $(STAMP)  ## run the main job offline end to end
	HF_HUB_OFFLINE=1 $(VENV)/bin/mondrian demo

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build dist src/*.egg-info
