"""Maze evaluation and report (flexretrofit.maze.evaluation, .maze_report): exact scoring of answers,
resumable per-maze rows, the summary numbers from hand-written rows, and the report text."""

import math

import pytest

from flexretrofit.evaluation import read_results
from flexretrofit.maze.demo import shipped_mdm_path
from flexretrofit.maze.evaluation import (
    evaluate,
    evaluation_subset,
    flex_solver,
    mdm_solver,
    row_seed,
    score_row,
    summarize_rows,
    true_length_solver,
)
from flexretrofit.maze.instances import MazeDifficulty, build_splits
from flexretrofit.maze.report import (
    pretraining_line,
    rendered_example,
    results_table,
    sample_lines,
    verdict_lines,
    write_report,
)
from flexretrofit.models import LLaDAModelLM, load_tokenizer

SMALL = {
    "easy": MazeDifficulty("easy", height=3, width=3, min_moves=2, max_moves=4),
    "hard": MazeDifficulty("hard", height=4, width=4, min_moves=4, max_moves=7),
}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(shipped_mdm_path())


@pytest.fixture(scope="module")
def mazes():
    """Four easy then four hard test mazes."""
    test = build_splits(0, 0, 8, seed=3, difficulties=SMALL)["test"]
    return evaluation_subset(test, ["easy", "hard"], 4)


def answer_ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def wilson(successes, total, z=1.959963984540054):
    p = successes / total
    center = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return center - half, center + half


def row(difficulty, valid, generated, reference, seconds=1.0, reason=None):
    return {
        "difficulty": difficulty,
        "valid": valid,
        "reason": reason or ("ok" if valid else "wall"),
        "generated_tokens": generated,
        "reference_moves": reference,
        "seconds": seconds,
    }


# ---- choosing mazes ---------------------------------------------------------------------------


def test_evaluation_subset_takes_the_first_of_each_difficulty_in_order():
    test = build_splits(0, 0, 10, seed=1, difficulties=SMALL)["test"]
    chosen = evaluation_subset(test, ["hard", "easy"], 2)
    assert [m.difficulty for m in chosen] == ["hard", "hard", "easy", "easy"]
    assert chosen[:2] == [m for m in test if m.difficulty == "hard"][:2]
    assert chosen[2:] == [m for m in test if m.difficulty == "easy"][:2]
    with pytest.raises(ValueError, match="fewer than num_test_per_difficulty=6"):
        evaluation_subset(test, ["easy"], 6)


def test_row_seed_depends_on_the_maze_only(mazes):
    again = build_splits(0, 0, 8, seed=3, difficulties=SMALL)["test"]
    by_id = {m.id: m for m in again}
    assert [row_seed(m) for m in mazes] == [row_seed(by_id[m.id]) for m in mazes]
    assert len({row_seed(m) for m in mazes}) == len(mazes)
    assert all(0 <= row_seed(m) < 16**15 for m in mazes)


def test_mdm_solver_runs_mixed_prompt_lengths_as_if_each_were_alone(mazes, tokenizer):
    model = LLaDAModelLM.from_pretrained(shipped_mdm_path()).eval()
    solve = mdm_solver(model, tokenizer, 120, {})
    pair = [mazes[0], mazes[-1]]  # different grid sizes: prompts of different lengths
    assert solve(pair) == [solve([pair[0]])[0], solve([pair[1]])[0]]


# ---- scoring ----------------------------------------------------------------------------------


def test_true_length_solver_writes_exactly_the_true_number_of_tokens(tokenizer):
    import dataclasses

    from flexretrofit.maze.demo import build_task_splits
    from flexretrofit.maze.settings import load_settings

    task = load_settings().task  # the mazes the shipped MDM was trained on (subgoal mazes)
    test = build_task_splits(dataclasses.replace(task, num_train=0, num_validation=0))["test"]
    mazes = evaluation_subset(test, ["easy", "hard"], 4)
    model = LLaDAModelLM.from_pretrained(shipped_mdm_path()).eval()
    answers = true_length_solver(model, tokenizer)(mazes)
    assert [len(ids) for ids in answers] == [maze.num_moves for maze in mazes]
    assert all(tokenizer.eos_token_id not in ids for ids in answers)
    scored = [score_row(maze, ids, tokenizer) for maze, ids in zip(mazes, answers)]
    assert sum(row["valid"] for row in scored) >= 2, "real answers, not filler: the shipped MDM solves some"


def test_score_row_accepts_the_true_path_and_rejects_a_wrong_one(mazes, tokenizer):
    maze = mazes[0]
    truth = answer_ids(tokenizer, maze.to_dict()["answer"])
    good = score_row(maze, truth, tokenizer)
    assert good["valid"] is True and good["reason"] == "ok"
    assert good["id"] == maze.id and good["difficulty"] == "easy"
    assert good["generated_tokens"] == len(truth) == maze.num_moves == good["reference_moves"]
    assert good["generated_text"] == maze.to_dict()["answer"]
    assert good["generated_token_ids"] == truth

    short = score_row(maze, truth[:-1], tokenizer)
    assert short["valid"] is False and short["reason"] == "not_at_goal"
    assert short["generated_tokens"] == maze.num_moves - 1

    # A special token is kept in the text, so an answer with a stray EOS does not pass.
    stray = score_row(maze, [*truth, tokenizer.eos_token_id], tokenizer)
    assert stray["valid"] is False and stray["reason"] == "garbage"
    assert score_row(maze, [], tokenizer)["reason"] == "empty"


def test_evaluate_writes_one_row_per_maze_and_resumes(tmp_path, mazes, tokenizer):
    calls = []

    def solve(batch):
        calls.append([m.id for m in batch])
        assert len({m.difficulty for m in batch}) == 1  # batches of one difficulty
        # right for easy mazes, one move short for hard ones
        return [
            answer_ids(tokenizer, m.to_dict()["answer"])[: None if m.difficulty == "easy" else -1]
            for m in batch
        ]

    path = tmp_path / "results.jsonl"
    first = evaluate(solve, mazes[:2] + mazes[4:7], tokenizer, path, batch_size=2, label="fake")
    assert [len(c) for c in calls] == [2, 2, 1]
    assert [r["id"] for r in first] == [m.id for m in mazes[:2] + mazes[4:7]]
    assert [r["valid"] for r in first] == [True, True, False, False, False]
    assert {r["model"] for r in first} == {"fake"}
    assert [r["batch_size"] for r in first] == [2, 2, 2, 2, 1]

    # Lose the last row mid-write, then ask for all eight mazes: only the missing four are solved.
    text = path.read_text()
    path.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 10])
    calls.clear()
    rows = evaluate(solve, mazes, tokenizer, path, batch_size=8, label="fake")
    assert sorted(i for c in calls for i in c) == sorted([mazes[2].id, mazes[3].id, mazes[6].id, mazes[7].id])
    assert [r["id"] for r in rows] == [m.id for m in mazes]  # in the order asked, not the order written
    assert len(read_results(path)) == len(mazes)
    assert [r["valid"] for r in rows] == [True] * 4 + [False] * 4

    calls.clear()
    assert evaluate(solve, mazes, tokenizer, path, batch_size=8, label="fake") == rows
    assert calls == []


# ---- summary ----------------------------------------------------------------------------------


def test_summary_counts_successes_intervals_and_lengths():
    rows = [
        row("easy", True, 2, 2),
        row("easy", True, 3, 3),
        row("easy", False, 4, 3, reason="not_shortest"),
        row("easy", False, 0, 2, reason="empty"),
        row("hard", True, 5, 5, seconds=2.0),
        row("hard", False, 3, 5),
    ]
    summary = summarize_rows(rows, ["easy", "medium", "hard"])
    assert set(summary) == {"easy", "hard", "all", "speed"}  # no rows, no entry
    easy, hard, overall = summary["easy"], summary["hard"], summary["all"]
    assert (easy["n"], easy["successes"], easy["success"]) == (4, 2, 0.5)
    assert easy["ci95"] == pytest.approx(list(wilson(2, 4)))
    assert easy["ci95"][0] == pytest.approx(0.150, abs=1e-3)
    # generated lengths {2, 3, 4, 0} vs true {2, 3, 3, 2}: half the mass sits at lengths the truth lacks
    assert easy["length_tv"] == pytest.approx(0.5)
    assert easy["length_exact"] == pytest.approx(0.5)
    assert easy["mean_generated_length"] == pytest.approx(9 / 4)
    assert easy["mean_reference_length"] == pytest.approx(10 / 4)
    assert easy["failures"] == {"not_shortest": 1, "empty": 1}
    assert (hard["successes"], hard["length_tv"], hard["length_exact"]) == (1, pytest.approx(0.5), 0.5)
    assert hard["failures"] == {"wall": 1}
    assert (overall["n"], overall["successes"]) == (6, 3)
    assert overall["ci95"] == pytest.approx(list(wilson(3, 6)))
    assert summary["speed"] == {
        "generated_tokens": 17,
        "seconds": 7.0,
        "tokens_per_second": pytest.approx(17 / 7),
        "mazes_per_second": pytest.approx(6 / 7),
    }


def test_summary_intervals_are_exact_at_zero_and_all():
    summary = summarize_rows([row("easy", True, 2, 2), row("hard", False, 1, 2)], ["easy", "hard"])
    assert summary["easy"]["ci95"][1] == 1.0 and summary["easy"]["ci95"][0] > 0.0
    assert summary["hard"]["ci95"][0] == 0.0 and summary["hard"]["ci95"][1] < 1.0
    assert summary["hard"]["length_tv"] == 1.0 and summary["hard"]["length_exact"] == 0.0


def test_summary_without_time_has_no_speed():
    summary = summarize_rows([row("easy", True, 2, 2, seconds=0.0)], ["easy"])
    assert summary["speed"]["tokens_per_second"] is None and summary["speed"]["mazes_per_second"] is None


# ---- report -----------------------------------------------------------------------------------


def stats(success, low, high, tv, exact=None, n=10):
    return {
        "n": n,
        "success": success,
        "ci95": [low, high],
        "length_tv": tv,
        "length_exact": success if exact is None else exact,
    }


def test_verdict_reads_success_by_interval_overlap_and_states_the_tv():
    results = {
        "mdm": {
            "easy": stats(0.2, 0.1, 0.3, 0.4),
            "medium": stats(0.9, 0.8, 1.0, 0.25),
            "hard": stats(0.5, 0.3, 0.7, 0.2),
            "all": stats(0.5, 0.4, 0.6, 0.2),
        },
        "flexmdm": {
            "easy": stats(0.8, 0.7, 0.9, 0.1, exact=0.75),
            "medium": stats(0.5, 0.4, 0.6, 0.25),
            "hard": stats(0.6, 0.4, 0.8, 0.2),
            "all": stats(0.55, 0.45, 0.65, 0.3),
        },
    }
    easy, medium, hard, overall = verdict_lines(results, ["easy", "medium", "hard"])
    assert easy.startswith("- easy: FlexMDM succeeds more often than the MDM;")
    assert "FlexMDM's answer lengths are closer" in easy and "(TV 0.100 vs 0.400)" in easy
    assert "right for 75.0% (FlexMDM) vs 20.0% (MDM)" in easy
    assert "the MDM succeeds more often than FlexMDM" in medium and "neither model's" in medium
    assert "no clear success difference" in hard
    assert "no clear success difference" in overall and "the MDM's answer lengths are closer" in overall


def test_results_table_has_a_line_per_difficulty_and_all():
    results = {
        "mdm": {"easy": stats(0.25, 0.1, 0.5, 0.125), "all": stats(0.25, 0.1, 0.5, 0.125)},
        "flexmdm": {"easy": stats(0.5, 0.2, 0.8, 0.0625, n=4), "all": stats(0.5, 0.2, 0.8, 0.0625, n=4)},
    }
    lines = results_table(results, ["easy"]).splitlines()
    assert lines[0].startswith("| difficulty | n | MDM success [95% CI] | FlexMDM success [95% CI] |")
    assert len(lines) == 4 and all(line.count("|") == 9 for line in lines)
    assert lines[2] == (
        "| easy | 4 | 25.0% [10.0%, 50.0%] | 50.0% [20.0%, 80.0%] | 0.125 | 0.062 | 25.0% | 50.0% |"
    )
    assert lines[3].startswith("| all | 4 |")


def test_pretraining_line_reads_the_record():
    assert "missing" in pretraining_line(None)
    record = {
        "backbone": {"n_layers": 4, "d_model": 128, "n_heads": 4},
        "steps": 3000,
        "global_batch_size": 64,
        "wall_seconds": 900.0,
        "cpu_count": 2,
        "recipe": "recipes/instruct.py --config x.yaml",
    }
    line = pretraining_line(record)
    assert line.startswith("The MDM was pretrained from a random LLaDA (4 layers, d=128, 4 heads)")
    assert "3000 steps x 64 mazes (900.0 s on 2 CPU cores) with `recipes/instruct.py --config x.yaml`" in line


def test_samples_and_rendered_example_show_both_answers(mazes, tokenizer):
    rows = {
        "flexmdm": [score_row(m, answer_ids(tokenizer, m.to_dict()["answer"]), tokenizer) for m in mazes],
        "mdm": [score_row(m, [], tokenizer) for m in mazes],
    }
    lines = sample_lines(mazes, rows, 2)
    assert len(lines) == 2 * 4 and lines[0].startswith("- easy `maze 3x3") and lines[4].startswith("- hard")
    assert "flexmdm (" in lines[2] and ", ok)" in lines[2] and "mdm (0 tokens, empty): `(empty)`" in lines[3]
    assert sample_lines(mazes, rows, 0) == []
    caption, picture = rendered_example(mazes, rows["flexmdm"])
    hardest = max(mazes, key=lambda m: m.num_moves)
    assert f"`{hardest.id}`" in caption and "(solved)" in caption
    assert "S" in picture and "G" in picture and "*" in picture


def test_rendered_example_draws_a_cells_answer_too(tokenizer):
    test = build_splits(0, 0, 8, seed=3, difficulties=SMALL, answer_format="cells")["test"]
    cells = evaluation_subset(test, ["easy", "hard"], 4)
    rows = [score_row(m, answer_ids(tokenizer, m.to_dict()["answer"]), tokenizer) for m in cells]
    assert all(row["valid"] for row in rows)
    _, picture = rendered_example(cells, rows)
    hardest = max(cells, key=lambda m: m.num_moves)
    assert picture.count("*") == hardest.num_moves - 1  # every visited cell but the goal


def test_write_report_has_every_section(tmp_path, mazes, tokenizer):
    rows = {
        model: [
            score_row(m, answer_ids(tokenizer, m.to_dict()["answer"]), tokenizer) | {"seconds": 0.1}
            for m in mazes
        ]
        for model in ("mdm", "flexmdm")
    }
    names = ["easy", "hard"]
    results = {model: summarize_rows(rows[model], names) for model in rows}
    training = {"steps": 2, "global_batch_size": 8, "wall_seconds": 1.5, "final_train_loss": 1.25}
    summary = {
        "quick": True,
        "difficulties": names,
        "split": "test",
        "num_test_per_difficulty": 4,
        "results": results,
        "training": {"mdm": training, "flexmdm": training},
        "sampling": {"flexmdm": {"steps": 6, "max_length": 90}, "mdm": {"canvas_length": 90}},
        "mdm_checkpoint": {"path": "ckpt", "parameters": 1_230_000, "pretraining": None},
        "machine": {"cpu_count": 2, "torch_threads": 1},
    }
    path = write_report(
        tmp_path / "report.md",
        summary,
        mazes,
        rows,
        {"summary": tmp_path / "summary.json"},
        seed=3,
        difficulties={
            name: {"height": s.height, "width": s.width, "min_moves": s.min_moves, "max_moves": s.max_moves}
            for name, s in SMALL.items()
        },
        num_samples_shown=2,
    )
    report = path.read_text()
    for section in (
        "# FlexMDM vs MDM on maze planning",
        "A 1.23M-parameter LLaDA-architecture MDM",
        "**Quick run (a few steps)",
        "## Results",
        "(seed 3, disjoint from all training data)",
        "| easy | 4 | 100.0% [",
        "| all | 8 | ",
        "Paper (trained from scratch, larger mazes): easy 68.4% vs 92.3%",
        "Difficulties: easy = 3x3 grid, 2-4 moves, hard = 4x4 grid, 4-7 moves.",
        "What the numbers say:",
        "- all: no clear success difference",
        "## Speed and budget",
        "| flexmdm | 2 steps x 8 mazes, 1.5 s, final loss 1.250 | generate_flex, 6 forward passes |",
        "(90 - prompt)",
        "CPU: 2 cores, 1 torch threads.",
        "The MDM's pretraining record is missing",
        "## Samples",
        "```",
        "## Files",
        f"- summary: `{tmp_path / 'summary.json'}`",
    ):
        assert section in report, section
    assert report.index("## Results") < report.index("## Speed and budget") < report.index("## Samples")
    assert report.index("## Samples") < report.index("## Files")


def test_flex_solver_keeps_the_subgoals_and_the_goal_in_every_answer(tokenizer):
    from flexretrofit.models import FlexMDMForMaskedDiffusion

    subgoal_mazes = build_splits(
        0,
        0,
        6,
        seed=1,
        difficulties={"easy": MazeDifficulty("easy", 4, 4, 4, 8)},
        answer_format="cells",
        hint_rate=0.5,
    )["test"]
    model = FlexMDMForMaskedDiffusion.from_llada(
        LLaDAModelLM.from_pretrained(shipped_mdm_path()), flex_config={"insertion_head_init": 1.0}
    ).eval()
    answers = flex_solver(model, tokenizer, 120, {"steps": 6})(subgoal_mazes)
    for maze, ids in zip(subgoal_mazes, answers):
        text = tokenizer.decode(ids)
        anchors = [piece["text"] for piece in maze.answer_pieces() if piece["anchor"]]
        position = 0
        for anchor in anchors:  # every anchor run, in order, unchanged
            found = text.find(anchor, position)
            assert found >= 0, (text, anchors)
            position = found + len(anchor)
        assert text.endswith(anchors[-1]), "the goal run ends the answer: nothing is inserted after it"
