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

## Tiny CPU runs of the training recipes, a few steps each (the same configs the training tests run)
TINY := build/tiny
smoke-retrofit: $(STAMP)
	$(BIN)/python -m flexretrofit.testing_cli tiny-checkpoint $(TINY)/llada
	$(BIN)/python -m flexretrofit.testing_cli tiny-data $(TINY)/data
	rm -rf runs/tiny_retrofit
	DS_ACCELERATOR=cpu $(BIN)/python recipes/retrofit_llada.py --config recipes/configs/tiny_retrofit_cpu.yaml

## GSM8K-format and infill tuning of the smoke retrofit, and the LLaDA MDM baseline on the same data
smoke-instruct: $(STAMP) smoke-retrofit
	rm -rf runs/tiny_instruct_gsm8k runs/tiny_instruct_infill runs/tiny_instruct_mdm
	DS_ACCELERATOR=cpu $(BIN)/python recipes/instruct.py --config recipes/configs/tiny_instruct_gsm8k_cpu.yaml
	DS_ACCELERATOR=cpu $(BIN)/python recipes/instruct.py --config recipes/configs/tiny_instruct_infill_cpu.yaml
	DS_ACCELERATOR=cpu $(BIN)/python recipes/instruct.py --config recipes/configs/tiny_instruct_mdm_cpu.yaml
