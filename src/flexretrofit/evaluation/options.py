"""The settings of an evaluation run: one table of options (flag, YAML key and summary field each),
the sampler defaults per benchmark and the named presets. Data only; :mod:`.settings` parses and checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flexretrofit.evaluation.generators import (
    DEFAULT_INFILL_INSTRUCTION,
    GSM8K_PROMPT_STYLES,
    INFILL_LAYOUTS,
    SAMPLERS,
)
from flexretrofit.evaluation.humaneval_infill import INFILL_VARIANTS
from flexretrofit.evaluation.sandbox import MAX_TIMEOUT_S
from flexretrofit.sampling.config import MAX_STEPS

GSM8K = "gsm8k"
INFILL = "humaneval_infill"
BENCHMARKS = (GSM8K, INFILL)

# The published choices of confidence and window of the flexible-length sampler (method doc, section 7).
_PUBLISHED_FLEX: dict[str, dict[str, Any]] = {
    GSM8K: {"confidence": "prob_diff", "sliding_window": False},
    INFILL: {"confidence": "top_prob", "sliding_window": True, "window_scale": 15.0, "max_window": 32},
}
# Sampler settings without a preset: the published choices of confidence and window, few steps.
DEFAULT_SAMPLER_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    GSM8K: {
        "flex": {"steps": 64, **_PUBLISHED_FLEX[GSM8K]},
        "mdm": {"steps": 64, "gen_length": 128, "block_length": 32},
    },
    INFILL: {
        "flex": {"steps": 64, **_PUBLISHED_FLEX[INFILL]},
        "mdm": {"steps": 32, "gen_length": 32, "block_length": 32},
    },
}
# Method doc, section 7, for FlexMDM. The MDM rows are our choices (the doc gives none): LLaDA's usual
# GSM8K setting (256 tokens, blocks of 32, one token per step), and one 64-token block for a middle.
PRESETS: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "published": {
        GSM8K: {
            "flex": {"steps": 256, **_PUBLISHED_FLEX[GSM8K]},
            "mdm": {"steps": 256, "gen_length": 256, "block_length": 32},
        },
        INFILL: {
            "flex": {"steps": 4096, **_PUBLISHED_FLEX[INFILL]},
            "mdm": {"steps": 64, "gen_length": 64, "block_length": 64},
        },
    },
}


@dataclass(frozen=True)
class Option:
    """One setting: a flag, a YAML key and a summary field. ``scope``: ``run``, ``both`` (sampler setting
    of either sampler), ``flex`` or ``mdm``; ``benchmark``: None for both benchmarks."""

    name: str
    default: Any
    help: str
    type: Callable[[str], Any] | None = str
    choices: Sequence[Any] | None = None
    flag: bool = False  # --name / --no-name
    many: bool = False  # a list: --name a b c
    scope: str = "run"
    benchmark: str | None = None
    minimum: float | None = None  # smallest allowed value (numbers; each element of a list)
    maximum: float | None = None  # largest allowed value (numbers)
    strict: bool = False  # the value must be > minimum, not >=


def int_or_none(text: str) -> int | None:
    """An integer flag that also takes ``none`` (or ``null``): unset."""
    return None if str(text).lower() in ("none", "null") else int(text)


OPTIONS: tuple[Option, ...] = (
    Option(
        "model",
        None,
        "checkpoint folder or hub id: a FlexMDM or a LLaDA (told apart by config.json model_type)",
    ),
    Option("tokenizer", None, "tokenizer folder or hub id (default: the model's)"),
    Option(
        "sampler",
        "flex",
        "flex: FlexMDM flexible-length sampler; mdm: LLaDA's fixed-length baseline",
        choices=SAMPLERS,
    ),
    Option(
        "preset", None, "named sampler settings (published: method doc, section 7)", choices=("published",)
    ),
    Option(
        "fresh_retrofit",
        False,
        "with --sampler flex and a LLaDA model: evaluate a fresh, untrained retrofit (demo only)",
        type=None,
        flag=True,
    ),
    Option("output_dir", None, "results folder (default: runs/eval/<benchmark>-<sampler>)"),
    Option(
        "limit", None, "only the first N examples (GSM8K) or tasks (infilling)", type=int_or_none, minimum=1
    ),
    Option("batch_size", 8, "prompts per sampler call", type=int, minimum=1),
    Option("seed", 0, "base seed; row i uses seed + i", type=int, minimum=0),
    Option(
        "dtype",
        "auto",
        "model dtype (auto: bfloat16 on a GPU that has it, else float32)",
        choices=("auto", "float32", "bfloat16", "float16"),
    ),
    Option("device", None, "device (default: Accelerate's device for this process)"),
    Option(
        "num_shards",
        None,
        "split the run into N independent jobs (instead of Accelerate processes)",
        type=int_or_none,
        minimum=1,
    ),
    Option("shard_index", None, "which of --num-shards this job runs (0-based)", type=int_or_none, minimum=0),
    Option(
        "merge_only",
        False,
        "only merge the shard results and write the summary (refused, naming the shards, while rows are missing)",
        type=None,
        flag=True,
    ),
    Option("progress", True, "show a progress bar", type=None, flag=True),
    # GSM8K
    Option(
        "data",
        None,
        "GSM8K JSONL ('question', 'answer' per line), or 'hub' for openai/gsm8k through datasets; "
        "default: the shipped test split (offline)",
        benchmark=GSM8K,
    ),
    Option("split", "test", "split of --data hub (only the test split ships)", benchmark=GSM8K),
    Option(
        "prompt_style",
        "chat",
        "chat: the instruction-tuning prompt; few_shot: plain text for base models",
        choices=GSM8K_PROMPT_STYLES,
        benchmark=GSM8K,
    ),
    Option(
        "system_prompt",
        None,
        "chat style: the instruction the model was tuned with (default: flexretrofit's GSM8K instruction)",
        benchmark=GSM8K,
    ),
    # HumanEval infilling
    Option(
        "variant",
        "single_line",
        "which official task file (openai/human-eval-infilling, shipped in the package)",
        choices=INFILL_VARIANTS,
        benchmark=INFILL,
    ),
    Option("num_samples", 1, "middles generated per task", type=int, benchmark=INFILL, minimum=1),
    Option(
        "k",
        [1],
        "pass@k to report (each k <= --num-samples)",
        type=int,
        many=True,
        benchmark=INFILL,
        minimum=1,
    ),
    Option(
        "layout",
        "boundary",
        "boundary: the training layout 'instruction prefix BND | BND suffix'; plain: prefix | suffix",
        choices=INFILL_LAYOUTS,
        benchmark=INFILL,
    ),
    Option(
        "instruction",
        DEFAULT_INFILL_INSTRUCTION,
        "instruction before the code (boundary layout)",
        benchmark=INFILL,
    ),
    Option(
        "chat_template",
        False,
        "put the instruction in a chat user turn (as the format's use_chat_template)",
        type=None,
        flag=True,
        benchmark=INFILL,
    ),
    Option(
        "ensure_newline",
        False,
        "append a missing final newline to a middle",
        type=None,
        flag=True,
        benchmark=INFILL,
    ),
    Option(
        "sandbox_timeout",
        10.0,
        "seconds per program",
        type=float,
        benchmark=INFILL,
        minimum=0,
        strict=True,
        maximum=MAX_TIMEOUT_S,
    ),
    Option("sandbox_workers", 2, "programs run in parallel", type=int, benchmark=INFILL, minimum=1),
    # sampler settings (defaults per benchmark and sampler: DEFAULT_SAMPLER_SETTINGS)
    Option(
        "steps", None, "sampler steps (forward passes)", type=int, scope="both", minimum=1, maximum=MAX_STEPS
    ),
    Option("temperature", 0.0, "0 = argmax tokens", type=float, scope="both", minimum=0),
    Option(
        "suppress_tokens",
        [],
        "tokens never generated, as spelled (e.g. '<|eot_id|>'); mdm: pass the EOS token for a base model",
        many=True,
        scope="both",
    ),
    Option(
        "confidence",
        "top_prob",
        "which MASKs to unmask first",
        choices=("top_prob", "prob_diff", "entropy", "position"),
        scope="flex",
    ),
    Option("sliding_window", False, "rank only a left window of MASKs", type=None, flag=True, scope="flex"),
    Option(
        "window_scale",
        15.0,
        "window = min(floor(a K), max_window) MASKs",
        type=float,
        scope="flex",
        minimum=0,
        strict=True,
    ),
    Option("max_window", 32, "cap of the window", type=int, scope="flex", minimum=1),
    Option(
        "max_length",
        None,
        "cap on prompt + response tokens (default: the model's)",
        type=int_or_none,
        scope="flex",
        minimum=1,
    ),
    Option("bucket_size", 16, "canvas width rounding", type=int, scope="flex", minimum=1),
    Option(
        "gen_length",
        None,
        "MASKs after the prompt (or between prefix and suffix)",
        type=int,
        scope="mdm",
        minimum=1,
    ),
    Option("block_length", None, "semi-autoregressive block size", type=int, scope="mdm", minimum=1),
    Option("cfg_scale", 0.0, "classifier-free guidance (0 = off)", type=float, scope="mdm", minimum=0),
    Option(
        "remasking",
        "low_confidence",
        "which MASKs to unmask first",
        choices=("low_confidence", "random"),
        scope="mdm",
    ),
)
SAMPLER_SCOPES = {"flex": ("both", "flex"), "mdm": ("both", "mdm")}
# Settings the rows do not depend on: left out of run_config.json, so a rerun into the same folder may
# change them (every other setting must stay the same, see harness.check_run_config).
NOT_IN_FINGERPRINT = {
    "output_dir", "limit", "batch_size", "num_shards", "shard_index", "merge_only", "progress", "device",
    "config", "preset", "sandbox_workers", "k",
}  # fmt: skip


def options_for(benchmark: str) -> list[Option]:
    """The options of one benchmark's entry point (run and sampler options included)."""
    return [option for option in OPTIONS if option.benchmark in (None, benchmark)]
