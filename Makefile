# flexretrofit developer targets. Every target creates .venv and installs into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 0
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-fast lint demo demo-pretrain smoke-retrofit smoke-instruct eval-gsm8k eval-infill bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## Full test suite (includes slow and distributed tests; ~minutes on 2 CPU cores)
test: $(STAMP)
	$(BIN)/python -m pytest -q

## Everything except tests marked slow or distributed
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not distributed"

lint: $(STAMP)
	$(BIN)/ruff check src tests recipes eval benchmarks
	$(BIN)/ruff format --check src tests recipes eval benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
