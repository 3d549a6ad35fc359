"""The maze demo (flexretrofit.maze.demo, run by recipes/demo_maze.py): the shipped MDM, a shortened comparison
end to end, numbers that recompute from the written rows, resuming, and the pretraining command.

The scoring, summary and report functions have their own tests in test_maze_evaluation.py."""

import dataclasses
import json
import re
import runpy
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from flexretrofit.evaluation import read_results, total_variation_distance
from flexretrofit.maze.demo import build_task_splits, canvas_length, run_comparison, shipped_mdm_path
from flexretrofit.maze.evaluation import summarize_rows
from flexretrofit.maze.instances import read_jsonl
from flexretrofit.maze.report import verdict_lines
from flexretrofit.maze.settings import load_settings
from flexretrofit.maze.text import check_answer
from flexretrofit.models import LLaDAModelLM, load_tokenizer

REPO = Path(__file__).resolve().parents[2]
recipe = runpy.run_path(str(REPO / "recipes" / "demo_maze.py"))
train = recipe["train_with_instruct"]  # the recipe's trainer: recipes/instruct.py


@pytest.fixture(scope="module")
def settings():
    return load_settings()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, settings):
    """The demo with --quick settings (2 training steps per model, 3 test mazes per difficulty)."""
    work_dir = tmp_path_factory.mktemp("demo") / "work"
    summary = run_comparison(settings, work_dir, quick=True, train=train)
    return work_dir, summary


# ---- the shipped checkpoint ----------------------------------------------------------------


def test_shipped_checkpoint_is_a_trained_llada_mdm(settings):
    folder = shipped_mdm_path()
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "maze_task.json"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in names)  # safetensors only
    assert (folder / "model.safetensors").stat().st_size < 10 * 2**20
    with safe_open(str(folder / "model.safetensors"), "pt") as weights:
        assert any("transformer.blocks" in key for key in weights.keys())

    model = LLaDAModelLM.from_pretrained(folder).eval()
    assert model.config.model_type == "llada"
    tokenizer = load_tokenizer(folder)
    assert model.config.mask_token_id == tokenizer.mask_token_id
    record = json.loads((folder / "maze_task.json").read_text())
    assert record["task"] == json.loads(json.dumps(dataclasses.asdict(settings.task)))
    assert record["canvas_length"] == canvas_length(tokenizer, settings.task)

    # Trained as an MDM on an EOS-padded canvas: from a fully masked answer it fills the canvas end with EOS
    # and the answer start with a cell next to the start; a random model does neither.
    test = build_task_splits(dataclasses.replace(settings.task, num_train=0, num_validation=0))["test"]
    first_cells_right = 0
    for maze in test[:20]:
        prompt = tokenizer(maze.to_dict()["prompt"], add_special_tokens=False)["input_ids"]
        canvas = [*prompt, *[tokenizer.mask_token_id] * (record["canvas_length"] - len(prompt))]
        with torch.no_grad():
            predicted = model(torch.tensor([canvas])).logits[0].argmax(-1)
        assert predicted[-1].item() == tokenizer.eos_token_id
        first_cells_right += (
            tokenizer.decode(predicted[len(prompt)]).strip() == maze.to_dict()["answer"].split()[0]
        )
    assert first_cells_right >= 10, "a trained MDM knows the first step of most paths"


# ---- the shortened demo ---------------------------------------------------------------------


def test_quick_demo_writes_a_full_report(quick_run, settings):
    work_dir, summary = quick_run
    report = (work_dir / "report.md").read_text()
    for section in (
        "# FlexMDM vs MDM on maze planning",
        "## Results",
        "## Speed and budget",
        "## Samples",
        "## Files",
        "What the numbers say:",
        "The MDM was pretrained from a random LLaDA",
    ):
        assert section in report
    for name in [*settings.task.difficulties, "all"]:
        assert f"| {name} | " in report
    assert "Paper" in report and "+---+" in report  # the paper's numbers and a rendered maze
    assert (work_dir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((work_dir / "summary.json").read_text())
    assert on_disk["results"] == json.loads(json.dumps(summary["results"]))
    assert set(on_disk["results"]) == {"flexmdm", "mdm"}
    for model in ("flexmdm", "mdm"):
        assert {"success", "ci95", "length_tv"} <= set(on_disk["results"][model]["all"])
    assert summary["training"]["flexmdm"]["steps"] == settings.quick.train_steps
    assert "mdm" not in summary["training"], "the MDM baseline is the shipped MDM as pretrained"
    # Both MDM arms ran; the baseline is the better one overall.
    arms = summary["baselines"]["arms"]
    assert set(arms) == {"mdm_with_hints", "mdm_without_hints"}
    chosen = summary["baselines"]["chosen"]
    assert arms[chosen]["all"]["success"] == max(a["all"]["success"] for a in arms.values())
    assert summary["results"]["mdm"] == arms[chosen]
    assert "MDM baselines" in report
    for model in ("flexmdm", *arms):
        rows = read_results(work_dir / f"results_{model}.jsonl")
        assert len(rows) == settings.quick.num_test_per_difficulty * len(settings.task.difficulties)


def test_reported_numbers_recompute_from_the_rows(quick_run):
    work_dir, summary = quick_run
    tokenizer = load_tokenizer(summary["training"]["flexmdm"]["final"])
    mazes = {maze.id: maze for maze in read_jsonl(work_dir / "data" / "test.jsonl")}
    chosen = summary["baselines"]["chosen"]
    for model, file in (("mdm", chosen), ("flexmdm", "flexmdm")):
        rows = read_results(work_dir / f"results_{file}.jsonl")
        for difficulty in ("easy", "hard"):
            group = [row for row in rows if row["difficulty"] == difficulty]
            for row in group:  # the text is what the ids decode to, and the length is the ids' count
                assert row["generated_text"] == tokenizer.decode(
                    row["generated_token_ids"], skip_special_tokens=False
                )
            success = sum(check_answer(mazes[r["id"]], r["generated_text"]).valid for r in group) / len(group)
            tv = total_variation_distance(
                [len(r["generated_token_ids"]) for r in group], [mazes[r["id"]].num_moves for r in group]
            )
            reported = summary["results"][model][difficulty]
            assert reported["success"] == pytest.approx(success)
            assert reported["length_tv"] == pytest.approx(tv)
    report = (work_dir / "report.md").read_text()
    hard = summary["results"]["flexmdm"]["hard"]
    assert f"{hard['length_tv']:.3f}" in report


def test_summary_counts_successes_and_lengths():
    rows = [
        {
            "difficulty": "easy",
            "valid": True,
            "reason": "ok",
            "generated_tokens": 2,
            "reference_moves": 2,
            "seconds": 0.5,
        },
        {
            "difficulty": "easy",
            "valid": False,
            "reason": "wall",
            "generated_tokens": 3,
            "reference_moves": 2,
            "seconds": 0.5,
        },
    ]
    summary = summarize_rows(rows, ["easy"])
    easy = summary["easy"]
    assert (easy["successes"], easy["success"], easy["length_exact"]) == (1, 0.5, 0.5)
    assert easy["length_tv"] == pytest.approx(0.5)
    assert easy["failures"] == {"wall": 1}
    assert easy["ci95"][0] < 0.5 < easy["ci95"][1]
    assert summary["speed"]["tokens_per_second"] == pytest.approx(5.0)


def test_verdict_counts_a_difference_only_when_intervals_separate():
    def stats(success, low, high, tv):
        return {"success": success, "ci95": [low, high], "length_tv": tv, "length_exact": success}

    results = {
        "mdm": {"easy": stats(0.2, 0.1, 0.3, 0.4), "all": stats(0.5, 0.4, 0.6, 0.2)},
        "flexmdm": {"easy": stats(0.8, 0.7, 0.9, 0.1), "all": stats(0.55, 0.45, 0.65, 0.3)},
    }
    easy, overall = verdict_lines(results, ["easy"])
    assert "FlexMDM succeeds more often" in easy and "FlexMDM's answer lengths are closer" in easy
    assert "no clear success difference" in overall and "the MDM's answer lengths are closer" in overall


def test_an_interrupted_demo_continues(quick_run, settings):
    work_dir, summary = quick_run
    path = work_dir / "results_flexmdm.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    kept = "".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2]  # two rows lost, one cut mid-write
    path.write_text(kept)
    resumed = run_comparison(settings, work_dir, quick=True, train=train)
    rows = read_results(path)
    assert len(rows) == len(lines)
    assert [json.loads(line)["id"] for line in lines] == [row["id"] for row in rows]
    assert resumed["results"]["flexmdm"]["all"]["n"] == summary["results"]["flexmdm"]["all"]["n"]
    assert resumed["training"] == summary["training"]  # the trained models were reused, not retrained


def test_a_work_dir_refuses_other_settings(quick_run, settings):
    work_dir, _ = quick_run
    with pytest.raises(ValueError, match="other settings"):
        run_comparison(settings, work_dir, quick=False, train=train)
    with pytest.raises(ValueError, match="other settings"):  # the recipe's `run` command, not --quick
        recipe["main"](["run", "--work-dir", str(work_dir)])


def test_budgets_must_match(tmp_path, settings):
    text = re.sub(
        r"max_steps: (\d+)",
        lambda m: f"max_steps: {int(m[1]) + 1}",
        (REPO / "recipes/configs/demo/continue_mdm.yaml").read_text(),
    )
    (tmp_path / "mdm.yaml").write_text(text)
    other = load_settings()
    other.compare.mdm_config = str(tmp_path / "mdm.yaml")
    with pytest.raises(ValueError, match="same budget"):
        run_comparison(other, tmp_path / "work", train=train)


def test_settings_reject_unknown_keys(tmp_path):
    (tmp_path / "maze.yaml").write_text(
        (REPO / "recipes/configs/demo/maze.yaml").read_text() + "\nquick:\n  stepz: 1\n"
    )
    with pytest.raises(ValueError, match="stepz"):
        load_settings(tmp_path / "maze.yaml")


@pytest.mark.parametrize(
    "section, line, message",
    [
        ("quick", "num_test_per_difficulty: -5", "quick.num_test_per_difficulty must be an integer >= 1"),
        ("evaluation", "num_test_per_difficulty: 2.5", "must be an integer >= 1"),
        ("evaluation", "batch_size: 0", "evaluation.batch_size must be an integer >= 1"),
        ("task", "hint_rate: 1.5", "task.hint_rate must be a number in"),
        ("task", "num_train: -1", "task.num_train must be an integer >= 0"),
        ("evaluation", "flexmdm: [1, 2]", "evaluation.flexmdm must be a mapping"),
    ],
)
def test_settings_refuse_values_that_cannot_be_right(tmp_path, section, line, message):
    text = (REPO / "recipes/configs/demo/maze.yaml").read_text()
    text = re.sub(rf"(?m)^{section}:\n", f"{section}:\n  {line}\n", text, count=1)
    key = line.split(":")[0]
    # drop the file's own line for the key in that section, so the injected one is the only one
    head, _, tail = text.partition(f"{section}:\n  {line}\n")
    tail = re.sub(rf"(?m)^  {key}:.*\n", "", tail, count=1)
    (tmp_path / "maze.yaml").write_text(head + f"{section}:\n  {line}\n" + tail)
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        load_settings(tmp_path / "maze.yaml")
    assert "\n" not in str(error.value)


def test_settings_read_the_old_method_keys(tmp_path):
    text = (REPO / "recipes/configs/demo/maze.yaml").read_text()
    old = text.replace("\n  flexmdm: {", "\n  flex: {").replace("\n  flexmdm_steps:", "\n  flex_steps:")
    assert old != text and "flexmdm:" not in old.split("evaluation:")[1]
    (tmp_path / "old.yaml").write_text(old)
    assert load_settings(tmp_path / "old.yaml") == load_settings()
    (tmp_path / "both.yaml").write_text(
        text.replace("\n  flexmdm_steps:", "\n  flex_steps: 3\n  flexmdm_steps:")
    )
    with pytest.raises(ValueError, match="quick.flex_steps is the old name of quick.flexmdm_steps") as error:
        load_settings(tmp_path / "both.yaml")
    assert "\n" not in str(error.value)


def test_a_work_dir_from_before_the_renamed_keys_continues(quick_run, settings):
    work_dir, summary = quick_run
    path = work_dir / "settings.json"
    current = path.read_text()
    saved = json.loads(current)
    saved["settings"]["evaluation"]["flex"] = saved["settings"]["evaluation"].pop("flexmdm")
    saved["settings"]["quick"]["flex_steps"] = saved["settings"]["quick"].pop("flexmdm_steps")
    path.write_text(json.dumps(saved))
    try:
        resumed = run_comparison(settings, work_dir, quick=True, train=train)
    finally:
        path.write_text(current)
    assert (
        resumed["training"] == summary["training"]
    )  # reused, not retrained: the settings were taken as the same
    assert resumed["results"]["flexmdm"]["all"]["n"] == summary["results"]["flexmdm"]["all"]["n"]


def test_settings_refuse_a_list_and_a_missing_required_key(tmp_path):
    (tmp_path / "list.yaml").write_text("- task\n- quick\n")
    with pytest.raises(ValueError, match="mapping of sections"):
        load_settings(tmp_path / "list.yaml")
    (tmp_path / "partial.yaml").write_text("task:\n  seed: 1\n")
    with pytest.raises(ValueError, match="section task needs difficulties"):
        load_settings(tmp_path / "partial.yaml")


# ---- pretraining ----------------------------------------------------------------------------


def test_pretrain_command_writes_a_loadable_maze_mdm(tmp_path, settings):
    out = tmp_path / "mdm"
    recipe["main"](["pretrain", "--quick", "--work-dir", str(tmp_path / "work"), "--output-dir", str(out)])
    record = json.loads((out / "maze_task.json").read_text())
    assert record["pretraining"]["steps"] == settings.quick.train_steps
    assert (
        record["canvas_length"]
        == json.loads((shipped_mdm_path() / "maze_task.json").read_text())["canvas_length"]
    )
    model = LLaDAModelLM.from_pretrained(out)
    shipped = LLaDAModelLM.from_pretrained(shipped_mdm_path())
    assert (
        model.config.to_dict()["n_layers"]
        == shipped.config.n_layers
        == settings.pretrain.backbone["n_layers"]
    )


@pytest.mark.parametrize(
    "difficulty, message",
    [
        ("{height: 4}", "task.difficulties.easy needs width, min_moves, max_moves"),
        (
            "{height: '4', width: 4, min_moves: 3, max_moves: 6}",
            "task.difficulties.easy.height must be a whole",
        ),
        ("[4, 4, 3, 6]", "task.difficulties.easy must be a mapping of height, width"),
        ("{height: 4, width: 4, min_moves: 3, max_moves: 6, size: 2}", "has unknown key(s) ['size']"),
    ],
)
def test_a_partial_or_mistyped_difficulty_is_one_line(tmp_path, difficulty, message):
    text = (REPO / "recipes/configs/demo/maze.yaml").read_text()
    text = re.sub(r"(?m)^    easy: .*$", f"    easy: {difficulty}", text, count=1)
    (tmp_path / "maze.yaml").write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        load_settings(tmp_path / "maze.yaml").task.specs()
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "section, line, message",
    [
        ("compare", "flexmdm_config: 5", "compare.flexmdm_config must be text, got 5"),
        ("compare", "mdm_checkpoint: [a]", "compare.mdm_checkpoint must be text or null"),
        ("task", "difficulties: null", "task.difficulties must be a mapping, got None"),
        ("evaluation", "split: 3", "evaluation.split must be text"),
    ],
)
def test_settings_of_the_wrong_type_are_one_line(tmp_path, section, line, message):
    text = (REPO / "recipes/configs/demo/maze.yaml").read_text()
    key = line.split(":")[0]
    head, _, tail = text.partition(f"{section}:\n")
    tail = re.sub(rf"(?m)^  {key}:.*\n(    .*\n)*", "", tail, count=1)
    (tmp_path / "maze.yaml").write_text(head + f"{section}:\n  {line}\n" + tail)
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        load_settings(tmp_path / "maze.yaml")
    assert "\n" not in str(error.value)
