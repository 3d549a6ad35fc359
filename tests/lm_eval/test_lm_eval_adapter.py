"""The lm-evaluation-harness adapter: registered models, stop strings, Monte Carlo ELBOs, local tasks end to end."""

import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

lm_eval = pytest.importorskip(
    "lm_eval", reason="lm-eval is an optional extra: pip install 'flexretrofit[lm-eval]'"
)

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import flexretrofit.lm_eval  # noqa: E402,F401  (registers the models)
from flexretrofit.evaluation.gsm8k import truncate_at_stop  # noqa: E402
from flexretrofit.lm_eval import (  # noqa: E402
    FlexMDMLM,
    LLaDAMDMLM,
    LMEvalSetupError,
    flexmdm_elbo,
    mdm_elbo,
)
from flexretrofit.lm_eval.__main__ import main  # noqa: E402
from flexretrofit.lm_eval.models import mdm_lengths  # noqa: E402
from flexretrofit.testing import (  # noqa: E402
    build_tiny_tokenizer,
    save_tiny_llada_checkpoint,
    tiny_flexmdm,
    tiny_llada,
)

FAST = {"mc_num": 8, "batch_size": 8}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def flexmdm(tokenizer):
    return tiny_flexmdm(tokenizer, seed=0)


@pytest.fixture(scope="module")
def llada(tokenizer):
    return tiny_llada(tokenizer, seed=0)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("checkpoints")
    flex = root / "flexmdm"
    tiny_flexmdm(tokenizer, seed=1).save_pretrained(flex)
    tokenizer.save_pretrained(flex)
    llada = save_tiny_llada_checkpoint(root / "llada", tokenizer=tokenizer, seed=1)
    return {"flexmdm": str(flex), "llada": str(llada)}


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory, tokenizer):
    """One generate_until task and one multiple-choice task, read from local JSONL files."""
    root = tmp_path_factory.mktemp("tasks")
    gen = [{"question": "1 + 2", "answer": " 3"}, {"question": "2 + 2", "answer": " 4"}]
    mc = [
        {"question": "The maze has a", "choices": ["path", "goal"], "label": 0},
        {"question": "The maze has", "choices": ["walls", "start"], "label": 0},
    ]
    for name, rows in (("gen", gen), ("mc", mc)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    common = "dataset_path: json\ntest_split: test\n"
    cache = root / "datasets_cache"
    (root / "tiny_gen.yaml").write_text(
        "task: tiny_gen\n" + common + "dataset_kwargs:\n"
        f"  data_files:\n    test: {root / 'gen.jsonl'}\n  cache_dir: {cache}\n"
        "output_type: generate_until\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        'doc_to_target: "{{answer}}"\n'
        'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 6\n'
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (root / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n" + common + "dataset_kwargs:\n"
        f"  data_files:\n    test: {root / 'mc.jsonl'}\n  cache_dir: {cache}\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{label}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return root


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _prefer_token(model, token_id, strength=12.0):
    """Make every logit of ``model`` prefer ``token_id`` by ``strength`` nats (a forward hook on the head)."""
    bias = torch.zeros(model.get_output_embeddings().out_features)
    bias[token_id] = strength
    return model.get_output_embeddings().register_forward_hook(lambda module, args, out: out + bias.to(out))


def _requests(kind, args_list):
    return [Instance(kind, {}, args, idx) for idx, args in enumerate(args_list)]


class LocalTaskManager(TaskManager):
    """Only the included tasks: indexing lm-eval's thousands of built-in task files takes ~30 s on 2 cores."""

    def __init__(self, *args, **kwargs):
        kwargs["include_defaults"] = False
        super().__init__(*args, **kwargs)


# ------------------------------------------------------------------------------------------------
# stop strings and generation
# ------------------------------------------------------------------------------------------------
def test_cut_at_stop_strings_cuts_at_the_earliest_occurrence():
    assert truncate_at_stop("a1b2c3", ["3", "b"]) == "a1"
    assert truncate_at_stop("a1b2c3", ["", "z"]) == "a1b2c3"
    assert truncate_at_stop("x\n\ny", ["\n\n", "\n"]) == "x"


@pytest.mark.parametrize("kind", ["flexmdm", "llada_mdm"])
def test_generate_until_honours_stop_strings_and_max_gen_toks(kind, tokenizer, flexmdm, llada):
    model_class, model = (FlexMDMLM, flexmdm) if kind == "flexmdm" else (LLaDAMDMLM, llada)
    lm = model_class(pretrained=model, tokenizer=tokenizer, device="cpu", steps=8, batch_size=4)
    decoded_lengths = []
    decode = lm.tok_decode
    lm.tok_decode = lambda ids: decoded_lengths.append(len(ids)) or decode(ids)
    prompt = "The quick brown"
    (free,) = lm.generate_until(_requests("generate_until", [(prompt, {"until": [], "max_gen_toks": 8})]))
    assert max(decoded_lengths) <= 8
    assert len(free) >= 2, f"the tiny model generated too little text to test stop strings: {free!r}"
    stop = free[len(free) // 2]
    late = free[-1]
    requests = _requests(
        "generate_until",
        [
            (prompt, {"until": [stop], "max_gen_toks": 8}),
            (prompt, {"until": [late, stop], "max_gen_toks": 8}),
        ],
    )
    expected = free[: free.index(stop)]
    assert lm.generate_until(requests) == [expected, free[: min(free.index(stop), free.index(late))]]
    assert stop not in expected
    lm.generate_until(_requests("generate_until", [(prompt, {"until": [], "max_gen_toks": 3})]))
    assert decoded_lengths[-1] <= 3


def test_flexmdm_generations_do_not_depend_on_the_batch(tokenizer, flexmdm):
    lm = FlexMDMLM(pretrained=flexmdm, tokenizer=tokenizer, device="cpu", steps=8, batch_size=3)
    prompts = ["The quick brown", "def add(a, b):", "maze 7x7 walls:", "Question: A baker"]
    batched = lm.generate_until(_requests("generate_until", [(p, {"until": ["\n"]}) for p in prompts]))
    single = [lm.generate_until(_requests("generate_until", [(p, {"until": ["\n"]})]))[0] for p in prompts]
    assert batched == single
    # lm-eval's `repeats` sends one prompt several times: each repeat gets its own draw.
    sampled = {"until": [], "temperature": 1.0, "do_sample": True}
    repeats = lm.generate_until(_requests("generate_until", [(prompts[0], sampled)] * 3))
    assert len(set(repeats)) > 1


def test_mdm_lengths_round_up_to_whole_blocks():
    assert mdm_lengths({}, 8) == (8, 8, 8)
    assert mdm_lengths({"block_length": 32}, 40) == (64, 32, 64)
    assert mdm_lengths({"block_length": 4, "steps": 6}, 10) == (12, 4, 6)
    assert mdm_lengths({"gen_length": 16, "block_length": 8, "steps": 3}, 256) == (16, 8, 4)


# ------------------------------------------------------------------------------------------------
# the ELBOs
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["flexmdm", "llada_mdm"])
def test_loglikelihood_is_finite_negative_and_seeded(kind, tokenizer, flexmdm, llada):
    model_class, model = (FlexMDMLM, flexmdm) if kind == "flexmdm" else (LLaDAMDMLM, llada)
    pairs = [("The quick brown", " fox jumps"), ("The lazy", " dog"), ("maze 7x7", " walls: 0 1 2")]

    def run(seed, batch_size=8):
        lm = model_class(
            pretrained=model, tokenizer=tokenizer, device="cpu", seed=seed, mc_num=8, batch_size=batch_size
        )
        return lm.loglikelihood(_requests("loglikelihood", pairs))

    first = run(0)
    assert all(math.isfinite(score) and score < 0 and greedy is False for score, greedy in first)
    assert run(0) == first
    # Same noise whatever the batching (padding changes only float rounding).
    assert [s for s, _ in run(0, batch_size=3)] == pytest.approx([s for s, _ in first], rel=1e-5)
    assert [s for s, _ in run(1)] != [s for s, _ in first]


@pytest.mark.parametrize("kind", ["flexmdm", "llada_mdm"])
def test_elbo_is_higher_for_the_token_the_model_prefers(kind, tokenizer):
    model = tiny_flexmdm(tokenizer, seed=3) if kind == "flexmdm" else tiny_llada(tokenizer, seed=3)
    elbo = flexmdm_elbo if kind == "flexmdm" else mdm_elbo
    context = _encode(tokenizer, "The quick brown")
    (preferred,), (other,) = _encode(tokenizer, " path"), _encode(tokenizer, " goal")
    pairs = [(context, [preferred] * 3), (context, [other] * 3)]
    before = elbo(model, pairs, seed=0, **FAST)
    handle = _prefer_token(model, preferred)
    try:
        after = elbo(model, pairs, seed=0, **FAST)
    finally:
        handle.remove()
    assert after[0] > after[1] + 10.0
    assert after[0] > before[0]  # the bias raised the preferred continuation's bound ...
    assert after[1] < before[1]  # ... and lowered the other one's


def test_mdm_lengths_take_no_more_steps_than_tokens():
    assert mdm_lengths({"steps": 64}, 8) == (8, 8, 8)  # a short-answer task under a long-answer setting
    assert mdm_lengths({"gen_length": 64, "block_length": 32, "steps": 500}, 256) == (64, 32, 64)


def test_flexmdm_elbo_of_an_empty_continuation_is_the_chance_of_inserting_nothing(tokenizer):
    # With g_hat = c at every slot, the bound for "nothing after the context" is -int kappa_alpha(t) c dt
    # = c ln((1 - alpha(1 - eps)) / (1 - alpha(eps))): only the slot after the context counts.
    model = tiny_flexmdm(tokenizer, seed=4)
    c = 0.5
    model.insertion_head.register_forward_hook(lambda module, args, out: torch.full_like(out, c))
    context = _encode(tokenizer, "The quick brown fox")
    (estimate,) = flexmdm_elbo(model, [(context, [])], mc_num=64, batch_size=64, seed=0)
    alpha = model.insertion_schedule.value(torch.tensor([1e-3, 1 - 1e-3], dtype=torch.float64))
    expected = c * math.log((1 - float(alpha[1])) / (1 - float(alpha[0])))
    assert estimate == pytest.approx(expected, rel=0.02)


def test_mdm_elbo_with_uniform_logits_is_minus_n_log_vocab(tokenizer):
    # Uniform logits: every masked token costs ln V, and E[#masked / t] = n, so the bound is -n ln V.
    model = tiny_llada(tokenizer, seed=5)
    torch.nn.init.zeros_(model.get_output_embeddings().weight)
    context, continuation = _encode(tokenizer, "The quick"), _encode(tokenizer, " brown fox jumps")
    (estimate,) = mdm_elbo(model, [(context, continuation)], mc_num=256, batch_size=128, seed=0)
    vocab = model.get_output_embeddings().out_features
    assert estimate == pytest.approx(-len(continuation) * math.log(vocab), rel=0.25)
    assert mdm_elbo(model, [(context, [])], **FAST) == [0.0]


def test_loglikelihood_rolling_says_it_is_not_available(tokenizer, llada):
    lm = LLaDAMDMLM(pretrained=llada, tokenizer=tokenizer, device="cpu")
    with pytest.raises(NotImplementedError, match="loglikelihood_rolling"):
        lm.loglikelihood_rolling(_requests("loglikelihood_rolling", [("some text",)]))


# ------------------------------------------------------------------------------------------------
# lm-eval end to end, on local tasks
# ------------------------------------------------------------------------------------------------
def test_simple_evaluate_scores_a_biased_model_on_local_tasks(tokenizer, task_dir):
    # The model prefers " path": right on the first question (" path" vs " goal"), wrong on the second
    # (" walls" vs " start", neither preferred, so no claim), and it generates only " path"s.
    model = tiny_flexmdm(tokenizer, seed=6)
    (path_id,) = _encode(tokenizer, " path")
    _prefer_token(model, path_id)
    lm = FlexMDMLM(pretrained=model, tokenizer=tokenizer, device="cpu", steps=8, **FAST)
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=["tiny_gen", "tiny_mc"],
        task_manager=LocalTaskManager(include_path=str(task_dir)),
        log_samples=True,
        bootstrap_iters=0,
    )
    mc_samples = sorted(results["samples"]["tiny_mc"], key=lambda sample: sample["doc_id"])
    assert mc_samples[0]["acc"] == 1.0
    assert 0.0 <= results["results"]["tiny_mc"]["acc,none"] <= 1.0
    assert 0.0 <= results["results"]["tiny_gen"]["exact_match,none"] <= 1.0
    responses = [sample["resps"][0][0] for sample in results["samples"]["tiny_gen"]]
    assert any(responses) and all(response.replace(" path", "") == "" for response in responses)


def test_registered_models_run_by_name_from_the_command_line_and_the_api(
    checkpoints, task_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(lm_eval.tasks, "TaskManager", LocalTaskManager)
    out = tmp_path / "flexmdm"
    model_args = f"pretrained={checkpoints['flexmdm']},mc_num=4,steps=8"
    argv = ["lm_eval", "--model", "flexmdm", "--model_args", model_args, "--tasks", "tiny_gen", "tiny_mc"]
    argv += [
        "--include_path",
        str(task_dir),
        "--device",
        "cpu",
        "--batch_size",
        "4",
        "--output_path",
        str(out),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    main()
    (results_file,) = out.rglob("results_*.json")
    results = json.loads(results_file.read_text())["results"]
    assert 0.0 <= results["tiny_gen"]["exact_match,none"] <= 1.0
    assert 0.0 <= results["tiny_mc"]["acc,none"] <= 1.0

    results = lm_eval.simple_evaluate(
        model="llada_mdm",
        model_args={"pretrained": checkpoints["llada"], "mc_num": 4, "block_length": 4},
        tasks=["tiny_gen", "tiny_mc"],
        task_manager=LocalTaskManager(include_path=str(task_dir)),
        device="cpu",
        bootstrap_iters=0,
    )["results"]
    assert 0.0 <= results["tiny_gen"]["exact_match,none"] <= 1.0
    assert 0.0 <= results["tiny_mc"]["acc,none"] <= 1.0
    capsys.readouterr()

    class NoTaskIndex(TaskManager):
        def __init__(self, *args, **kwargs):
            raise AssertionError("lm-eval indexed its tasks before the model arguments were checked")

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", NoTaskIndex)
    argv = ["lm_eval", "--model", "flexmdm", "--model_args", f"pretrained={checkpoints['llada']}"]
    monkeypatch.setattr(sys, "argv", argv + ["--tasks", "tiny_gen", "--include_path", str(task_dir)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("error: ") and "use --model llada_mdm" in error[-1]
    assert not any("Traceback" in line for line in error)


def test_bad_model_arguments_fail_before_loading(tokenizer, llada, checkpoints):
    with pytest.raises(ValueError, match="not arguments of this model"):
        FlexMDMLM(pretrained=checkpoints["flexmdm"], stepz=3)
    with pytest.raises(ValueError, match="set per request"):
        FlexMDMLM(pretrained=checkpoints["flexmdm"], max_length=10)
    with pytest.raises(ValueError, match="batch_size=auto"):
        LLaDAMDMLM(pretrained=checkpoints["llada"], batch_size="auto")
    with pytest.raises(ValueError, match="use --model flexmdm"):
        LLaDAMDMLM(pretrained=checkpoints["flexmdm"])


def test_bad_checkpoints_and_dtypes_fail_with_one_clear_error(checkpoints, tmp_path):
    with pytest.raises(LMEvalSetupError, match=r"dtype='float8' is not a torch dtype; use auto"):
        LLaDAMDMLM(pretrained=checkpoints["llada"], dtype="float8")
    with pytest.raises(FileNotFoundError, match="has no config.json; pass the folder that holds config.json"):
        LLaDAMDMLM(pretrained=str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "llada",')
    with pytest.raises(LMEvalSetupError, match="config.json is not valid JSON"):
        LLaDAMDMLM(pretrained=str(tmp_path))
    truncated = tmp_path / "truncated"
    shutil.copytree(checkpoints["llada"], truncated)
    shard = sorted(truncated.glob("*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(LMEvalSetupError) as error:
        LLaDAMDMLM(pretrained=str(truncated))
    assert f"{shard} is incomplete or corrupt" in str(error.value)
    model = LLaDAMDMLM(pretrained=checkpoints["llada"], dtype="bfloat16", device="cpu")
    assert type(model.model).__name__ == "LLaDAModelLM" and model.model.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            "missing",
            r"has no tokenizer files \(tokenizer.json or tokenizer_config.json\); pass tokenizer=PATH",
        ),
        ("broken", r"could not load a tokenizer from .*broken \(JSONDecodeError: .*\); pass tokenizer=PATH"),
    ],
)
def test_a_checkpoint_without_a_usable_tokenizer_is_one_line_and_exit_2(
    checkpoints, task_dir, tmp_path, damage, message
):
    folder = tmp_path / damage
    shutil.copytree(checkpoints["llada"], folder)
    if damage == "missing":
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            (folder / name).unlink(missing_ok=True)
    else:
        (folder / "tokenizer_config.json").write_text('{"tokenizer_class":')
    with pytest.raises(LMEvalSetupError, match=message):
        LLaDAMDMLM(pretrained=str(folder), device="cpu")
    if damage == "missing":
        return  # one run of the command line is enough: both mistakes take the same way out
    # The command line, in its own process (as a user runs it): one line on stderr, exit 2, no traceback.
    args = ["--model", "llada_mdm", "--model_args", f"pretrained={folder}", "--tasks", "tiny_gen"]
    args += ["--include_path", str(task_dir), "--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "flexretrofit.lm_eval", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (last,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert re.search(message, last) and done.stderr.rstrip().endswith(last)
