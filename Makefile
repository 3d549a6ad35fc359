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

## Evaluations (eval/gsm8k.py, eval/humaneval_infill.py; `--help` lists every setting):
##   make eval-gsm8k MODEL=runs/instruct_gsm8k_8b/final PRESET=published
##   make eval-infill MODEL=runs/instruct_infill_8b/final METHOD=mdm VARIANT=multi_line
## Variables: MODEL, DATA (default: the shipped GSM8K test split; a JSONL path, or `hub` for openai/gsm8k),
## METHOD=flexmdm|mdm (SAMPLER=flex|mdm, the old name, still works), STEPS,
## LIMIT, OUT, PRESET, VARIANT, EVAL_ARGS (more flags), EVAL_THREADS (OMP_NUM_THREADS). Without MODEL
## they run on EMBEDDED_MODEL (a fresh retrofit of it for METHOD=flexmdm) with LIMIT=16, STEPS=16 and one
## thread: a smoke run of seconds, not a result. EMBEDDED_MODEL is the tiny random LLaDA built on first use,
## not the shipped maze MDM (src/flexretrofit/assets/maze_mdm): that one knows only mazes, and its
## 128-token window cannot hold a GSM8K or HumanEval prompt plus an answer.
EMBEDDED_MODEL ?= $(TINY)/llada
METHOD ?= $(or $(SAMPLER),flexmdm)
VARIANT ?= single_line
EVAL_STEPS = $(or $(STEPS),$(if $(or $(MODEL),$(PRESET)),,16))
EVAL_LIMIT = $(or $(LIMIT),$(if $(MODEL),,16))
EVAL_FLAGS = $(if $(MODEL),--model $(MODEL),--model $(EMBEDDED_MODEL) --fresh-retrofit) --method $(METHOD) \
	$(if $(EVAL_STEPS),--steps $(EVAL_STEPS)) $(if $(EVAL_LIMIT),--limit $(EVAL_LIMIT)) \
	$(if $(PRESET),--preset $(PRESET)) $(EVAL_ARGS)
# The tiny model gains nothing from intra-op threads, and on a busy 2-core machine they cost 30x.
EVAL_THREADS ?= $(if $(MODEL),,1)
EVAL_ENV = $(if $(EVAL_THREADS),OMP_NUM_THREADS=$(EVAL_THREADS))
EVAL_OUT = runs/eval/$(if $(MODEL),,tiny-)$(1)-$(METHOD)$(if $(PRESET),-$(PRESET))$(if $(EVAL_STEPS),-s$(EVAL_STEPS))

$(TINY)/llada/config.json: | $(STAMP)
	$(BIN)/python -m flexretrofit.testing_cli tiny-checkpoint $(TINY)/llada

eval-gsm8k: $(STAMP) $(if $(MODEL),,$(EMBEDDED_MODEL)/config.json)
	$(EVAL_ENV) $(BIN)/python eval/gsm8k.py $(EVAL_FLAGS) $(if $(DATA),--data $(DATA)) --output-dir $(or $(OUT),$(call EVAL_OUT,gsm8k))

eval-infill: $(STAMP) $(if $(MODEL),,$(EMBEDDED_MODEL)/config.json)
	$(EVAL_ENV) $(BIN)/python eval/humaneval_infill.py $(EVAL_FLAGS) --variant $(VARIANT) --output-dir $(or $(OUT),$(call EVAL_OUT,infill))

## The README's first command: retrofit the shipped tiny maze MDM into a FlexMDM on CPU (subgoal mazes: the
## FlexMDM keeps the given cells as anchors), evaluate both on the test mazes (the MDM with and without the
## subgoals in its prompt) and write runs/demo_maze/report.md (+ .png, summary.json)
demo: $(STAMP)
	$(BIN)/python recipes/demo_maze.py

## Re-create the shipped maze MDM (src/flexretrofit/assets/maze_mdm) from a random tiny LLaDA (~30 min on 2 cores)
demo-pretrain: $(STAMP)
	rm -rf runs/demo_pretrain
	$(BIN)/python recipes/demo_maze.py pretrain

## One prepared check of the real 8B path on one GPU (random bf16 weights unless GPU_CHECK_ARGS="--weights DIR"):
## forward, a retrofit training step through the trainer, generate_flex vs a fixed canvas, FlexMDM/LLaDA overhead.
## Writes gpu_check.json and prints the table; about 5 minutes on one H100/H200, no downloads (docs/gpu_projection.md).
.PHONY: gpu-check
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --out gpu_check.json $(GPU_CHECK_ARGS)
