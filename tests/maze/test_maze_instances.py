import random
from collections import Counter

import pytest

from flexretrofit.maze.instances import (
    DIFFICULTIES,
    OPPOSITE,
    MazeDifficulty,
    MazeInstance,
    answer_lengths,
    build_splits,
    generate_maze,
    load_splits,
    read_jsonl,
    reference_length_distribution,
    render,
    sample_instance,
    save_splits,
    shortest_path,
    write_jsonl,
)
from flexretrofit.maze.text import (
    MOVES,
    WALL_BITS,
    CheckResult,
    answer_text,
    check_answer,
    parse_moves,
    prompt_text,
    success_rates,
)

# A 2x3 snake: (0,0) -> (0,1) -> (0,2) -> (1,2) -> (1,1) -> (1,0).
SNAKE_WALLS = (0xD, 0x5, 0x3, 0xD, 0x5, 0x6)


@pytest.fixture(scope="module")
def test_split():
    return build_splits(0, 0, 300, seed=0)["test"]


def snake() -> MazeInstance:
    return MazeInstance("custom", 2, 3, SNAKE_WALLS, (0, 0), (1, 0), tuple("RRDLL"))


def moves_text(moves) -> str:
    return "".join(f" {move}" for move in moves)


def cells_along(instance, moves):
    """Cell before each move."""
    row, col = instance.start
    cells = []
    for move in moves:
        cells.append((row, col))
        row, col = row + MOVES[move][0], col + MOVES[move][1]
    return cells


# ---- format -------------------------------------------------------------------------------


def test_prompt_and_answer_format_of_a_hand_built_maze():
    instance = snake()
    assert prompt_text(instance) == "maze 2x3 walls: d 5 3 d 5 6 start 0,0 goal 1,0 path:"
    assert answer_text(instance) == " R R D L L"
    assert instance.num_moves == 5


def test_parse_moves_ignores_whitespace_and_rejects_other_characters():
    assert parse_moves(" R R D L L") == tuple("RRDLL")
    assert parse_moves("RRD\nLL ") == tuple("RRDLL")
    assert parse_moves("") == ()
    for bad in ("R R x", "r r", "R,R", "<|mdm_mask|>", "1"):
        with pytest.raises(ValueError, match="unexpected character"):
            parse_moves(bad)


def test_answer_text_round_trips_through_parse_moves(test_split):
    for instance in test_split:
        assert parse_moves(answer_text(instance)) == instance.path


def test_render_marks_start_goal_and_path():
    picture = render(snake())
    assert picture.count("S") == 1 and picture.count("G") == 1
    assert picture.count("*") == 4  # the path's inner cells
    assert picture.splitlines()[0] == "+---+---+---+"


# ---- checker ------------------------------------------------------------------------------


def test_checker_accepts_every_reference_answer(test_split):
    assert Counter(instance.difficulty for instance in test_split) == {
        "easy": 100,
        "medium": 100,
        "hard": 100,
    }
    for instance in test_split:
        result = check_answer(instance, answer_text(instance))
        assert result == CheckResult(True, "ok") and bool(result), (instance.id, result)


def test_checker_rejects_a_step_through_a_wall(test_split):
    rng = random.Random(0)
    tested = 0
    for instance in test_split:
        cells = cells_along(instance, instance.path)
        index = rng.randrange(instance.num_moves)
        row, col = cells[index]
        blocked = [
            move
            for move, (d_row, d_col) in MOVES.items()
            if instance.walls[row * instance.width + col] & WALL_BITS[move]
            and 0 <= row + d_row < instance.height
            and 0 <= col + d_col < instance.width
        ]
        if not blocked:
            continue
        moves = list(instance.path)
        moves[index] = rng.choice(blocked)
        result = check_answer(instance, moves_text(moves))
        assert not result.valid and result.reason == "wall", result
        assert f"move {index} " in result.detail
        tested += 1
    assert tested > 200


def test_checker_rejects_an_off_grid_move(test_split):
    tested = 0
    for instance in test_split:
        cells = cells_along(instance, instance.path)
        for index, (row, col) in enumerate(cells):
            outward = [
                move
                for move, (d_row, d_col) in MOVES.items()
                if not (0 <= row + d_row < instance.height and 0 <= col + d_col < instance.width)
            ]
            if outward:
                moves = list(instance.path)
                moves[index] = outward[0]
                result = check_answer(instance, moves_text(moves))
                assert not result.valid and result.reason == "off_grid", result
                tested += 1
                break
    assert tested > 200


def test_checker_rejects_truncated_and_empty_paths(test_split):
    for instance in test_split:
        result = check_answer(instance, moves_text(instance.path[:-1]))
        assert not result.valid and result.reason == "not_at_goal", result
    assert check_answer(test_split[0], "  ").reason == "empty"


def test_checker_rejects_a_detour_that_still_reaches_the_goal(test_split):
    rng = random.Random(1)
    for instance in test_split:
        index = rng.randrange(1, instance.num_moves + 1)
        back = instance.path[index - 1]
        moves = (*instance.path[:index], OPPOSITE[back], back, *instance.path[index:])
        result = check_answer(instance, moves_text(moves))
        assert not result.valid and result.reason == "not_shortest", result


def test_checker_rejects_garbage(test_split):
    instance = test_split[0]
    for text in ("hello", answer_text(instance) + " X", "<|endoftext|>", "R1"):
        result = check_answer(instance, text)
        assert not result.valid and result.reason == "garbage", (text, result)


def test_success_rates_per_difficulty(test_split):
    easy = [instance for instance in test_split if instance.difficulty == "easy"][:4]
    hard = [instance for instance in test_split if instance.difficulty == "hard"][:2]
    texts = [answer_text(easy[0]), answer_text(easy[1]), "", "U", answer_text(hard[0]), "garbage"]
    assert success_rates(easy + hard, texts) == {"easy": 0.5, "hard": 0.5, "all": 0.5}


# ---- instances and generation ---------------------------------------------------------------


def test_instance_rejects_inconsistent_mazes_and_paths():
    with pytest.raises(ValueError, match="disagree"):
        MazeInstance("custom", 2, 3, (0xD, 0x7, 0x3, 0xD, 0x5, 0x6), (0, 0), (1, 0), tuple("RRDLL"))
    with pytest.raises(ValueError, match="border"):
        MazeInstance("custom", 2, 3, (0x5, 0x5, 0x3, 0xD, 0x5, 0x6), (0, 0), (1, 0), tuple("RRDLL"))
    with pytest.raises(ValueError, match="does not lead"):
        MazeInstance("custom", 2, 3, SNAKE_WALLS, (0, 0), (1, 0), tuple("DRR"))
    with pytest.raises(ValueError, match="same cell"):
        MazeInstance("custom", 2, 3, SNAKE_WALLS, (0, 0), (0, 0), ())


def test_generated_mazes_are_perfect():
    rng = random.Random(0)
    for height, width in [(5, 5), (6, 6), (7, 7), (3, 8)]:
        walls = generate_maze(height, width, rng)
        openings = sum(bin(~mask & 0xF).count("1") for mask in walls) // 2
        assert openings == height * width - 1  # a spanning tree has cells - 1 passages ...
        # ... and reaches every cell (a valid instance from corner to every other cell).
        for goal in [(row, col) for row in range(height) for col in range(width)][1:]:
            MazeInstance(
                "custom",
                height,
                width,
                walls,
                (0, 0),
                goal,
                shortest_path(height, width, walls, (0, 0), goal),
            )


def test_sample_instance_is_deterministic_given_the_rng():
    first = sample_instance("hard", random.Random(7))
    second = sample_instance("hard", random.Random(7))
    assert first == second and first.id == second.id
    assert first != sample_instance("hard", random.Random(8))


def test_difficulty_validation():
    with pytest.raises(ValueError, match="max_moves"):
        MazeDifficulty("big", 3, 3, 2, 9)
    with pytest.raises(ValueError, match="unknown difficulty"):
        sample_instance("impossible", random.Random(0))


# ---- lengths ------------------------------------------------------------------------------


def test_path_lengths_differ_by_difficulty_and_vary_widely():
    lengths = answer_lengths(build_splits(0, 0, 1500, seed=3)["test"])
    assert set(lengths) == {"easy", "medium", "hard"}
    means = {name: sum(values) / len(values) for name, values in lengths.items()}
    assert means["easy"] < means["medium"] < means["hard"]
    for name, values in lengths.items():
        spec = DIFFICULTIES[name]
        assert min(values) == spec.min_moves and max(values) == spec.max_moves
        assert max(values) >= 2.5 * min(values)
        # Close to the exact reference distribution (uniform on the range).
        reference = reference_length_distribution(name)
        counts = Counter(values)
        tv = 0.5 * sum(
            abs(counts[length] / len(values) - reference.get(length, 0.0)) for length in counts | reference
        )
        assert tv < 0.15, (name, tv)
    all_lengths = [value for values in lengths.values() for value in values]
    assert min(all_lengths) <= 2 and max(all_lengths) >= 30


def test_reference_length_distribution_is_a_distribution():
    for name, spec in DIFFICULTIES.items():
        distribution = reference_length_distribution(name)
        assert sorted(distribution) == list(range(spec.min_moves, spec.max_moves + 1))
        assert sum(distribution.values()) == pytest.approx(1.0)


# ---- splits and files -----------------------------------------------------------------------


def test_splits_are_deterministic_disjoint_and_sized():
    splits = build_splits(60, 15, 30, seed=11)
    again = build_splits(60, 15, 30, seed=11)
    assert list(splits) == ["train", "validation", "test"]
    assert {name: [i.id for i in part] for name, part in splits.items()} == {
        name: [i.id for i in part] for name, part in again.items()
    }
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [60, 15, 30]
    hashes = [instance.canonical_hash for part in splits.values() for instance in part]
    assert len(hashes) == len(set(hashes))
    other_seed = build_splits(60, 15, 30, seed=12)
    assert {i.id for i in other_seed["test"]}.isdisjoint({i.id for i in splits["test"]})


def test_test_split_does_not_depend_on_train_size():
    small = build_splits(10, 5, 20, seed=2)
    large = build_splits(200, 5, 20, seed=2)
    assert [i.id for i in small["test"]] == [i.id for i in large["test"]]


def test_train_never_contains_an_evaluation_maze_even_when_streams_collide():
    # A 2x2 grid has 4 mazes and 24 instances with 2- or 3-move paths: the streams collide, dedup must act.
    tiny = {"tiny": MazeDifficulty("tiny", 2, 2, 2, 3)}
    splits = build_splits(4, 4, 4, seed=0, difficulties=tiny)
    hashes = [instance.canonical_hash for part in splits.values() for instance in part]
    assert len(hashes) == 12 == len(set(hashes))
    with pytest.raises(ValueError, match="duplicates"):
        build_splits(30, 0, 0, seed=0, difficulties=tiny)


def test_difficulty_mix_sets_the_counts():
    splits = build_splits(10, 0, 7, seed=0, difficulty_mix={"easy": 3, "hard": 1})
    assert Counter(i.difficulty for i in splits["train"]) == {"easy": 8, "hard": 2}
    assert Counter(i.difficulty for i in splits["test"]) == {"easy": 5, "hard": 2}
    with pytest.raises(ValueError, match="unknown difficulties"):
        build_splits(1, 0, 0, difficulty_mix={"expert": 1.0})


def test_jsonl_round_trip(tmp_path):
    splits = build_splits(12, 6, 9, seed=5)
    paths = save_splits(splits, tmp_path / "maze")
    assert sorted(path.name for path in paths.values()) == ["test.jsonl", "train.jsonl", "validation.jsonl"]
    loaded = load_splits(tmp_path / "maze")
    assert loaded == splits
    record = loaded["test"][0].to_dict()
    assert set(record) == {"id", "difficulty", "answer_format", "prompt", "answer", "num_moves", "maze"}
    assert record["prompt"] == prompt_text(splits["test"][0]) and record["answer"] == answer_text(
        splits["test"][0]
    )


def test_jsonl_with_a_stale_prompt_is_rejected(tmp_path):
    path = write_jsonl([snake()], tmp_path / "one.jsonl")
    assert read_jsonl(path) == [snake()]
    path.write_text(path.read_text().replace("start 0,0", "start 0,1"))
    with pytest.raises(ValueError, match="does not match"):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError, match="save_splits"):
        load_splits(tmp_path / "missing")


def test_cells_format_writes_cell_ids_and_checks_them(tmp_path):
    spec = {"hard": MazeDifficulty("hard", height=4, width=4, min_moves=3, max_moves=8)}
    cells = build_splits(6, 2, 4, seed=3, difficulties=spec, answer_format="cells")
    moves = build_splits(6, 2, 4, seed=3, difficulties=spec)
    # The same mazes in either format; only the text differs.
    assert [i.id for i in cells["test"]] == [i.id for i in moves["test"]]
    instance = cells["test"][0]
    start, goal = (instance.start[0] * 4 + instance.start[1]), (instance.goal[0] * 4 + instance.goal[1])
    assert prompt_text(instance).endswith(f"start {start:x} goal {goal:x} path:")
    answer = answer_text(instance)
    assert len(answer.split()) == instance.num_moves and answer.split()[-1] == f"{goal:x}"
    assert check_answer(instance, answer).valid
    assert read_jsonl(write_jsonl(cells["test"], tmp_path / "cells.jsonl")) == cells["test"]
    # A jump to a cell that is not a neighbour, a cell off the grid, and a wrong last cell all fail.
    ids = answer.split()
    assert check_answer(instance, " ".join(ids[:-2] + [ids[-1]])).reason in {"garbage", "wall"}
    assert check_answer(instance, answer + " z").reason == "garbage"
    assert not check_answer(instance, " ".join(ids[:-1])).valid


def test_cells_format_refuses_grids_beyond_one_hex_digit():
    with pytest.raises(ValueError, match="at most 16 cells"):
        build_splits(1, 0, 0, difficulties={"big": MazeDifficulty("big", 5, 5, 2, 6)}, answer_format="cells")


# ---------------------------------------------------------------------------------------------
# Subgoal mazes (hints on the path, anchors for infilling)
# ---------------------------------------------------------------------------------------------

FOUR_BY_FOUR = {"easy": MazeDifficulty("easy", 4, 4, 3, 6), "hard": MazeDifficulty("hard", 4, 4, 11, 15)}


@pytest.fixture(scope="module")
def subgoal_mazes():
    return build_splits(0, 0, 60, seed=3, difficulties=FOUR_BY_FOUR, answer_format="cells", hint_rate=0.5)[
        "test"
    ]


def test_subgoal_reference_answers_pass_and_round_trip(subgoal_mazes):
    assert any(m.hints for m in subgoal_mazes)
    for maze in subgoal_mazes:
        record = maze.to_dict()
        assert check_answer(maze, record["answer"]).valid
        assert MazeInstance.from_dict(record) == maze
        pieces = record["anchored_answer"]
        assert "".join(p["text"] for p in pieces) == record["answer"]
        assert pieces[-1]["anchor"], "the goal is always an anchor"
        cells = record["answer"].split()
        given = [cells[i] for i in maze.hints]
        assert record["prompt"].endswith(" via" + "".join(f" {c}" for c in given) + " path:")
        assert " via" not in record["plain_prompt"]


def test_subgoal_hints_are_drawn_at_the_rate_and_never_on_the_goal(subgoal_mazes):
    interior = sum(m.num_moves - 1 for m in subgoal_mazes)
    given = sum(len(m.hints) for m in subgoal_mazes)
    assert 0.4 < given / interior < 0.6
    assert all(m.num_moves - 1 not in m.hints for m in subgoal_mazes)


def test_corrupted_subgoal_answers_fail(subgoal_mazes):
    for maze in subgoal_mazes[:20]:
        cells = maze.to_dict()["answer"].split()
        assert not check_answer(maze, " ".join(cells[:-1])).valid  # stops short of the goal
        wrong = [c for c in "0123456789abcdef" if c not in cells][0]
        corrupted = cells.copy()
        corrupted[len(cells) // 2] = wrong
        assert not check_answer(maze, " ".join(corrupted)).valid
        assert not check_answer(maze, " ".join(cells + cells[-2:-1])).valid  # one step too many


def test_a_shortest_path_that_skips_a_subgoal_fails():
    # A 2x2 room without inner walls has two shortest paths from 0,0 to 1,1; the subgoal is 0,1.
    maze = MazeInstance("easy", 2, 2, (0x9, 0x3, 0xC, 0x6), (0, 0), (1, 1), ("R", "D"), "cells", hints=(0,))
    assert check_answer(maze, " 1 3").valid
    verdict = check_answer(maze, " 2 3")
    assert not verdict.valid and verdict.reason == "missed_subgoal"


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(answer_format="moves", hints=(0,)), "answer_format='cells'"),
        (dict(answer_format="cells", hints=(1,)), "increasing path-cell indices"),
        (dict(answer_format="cells", hints=(-1,)), "increasing path-cell indices"),
    ],
)
def test_bad_hints_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        MazeInstance("easy", 2, 2, (0x9, 0x3, 0xC, 0x6), (0, 0), (1, 1), ("R", "D"), **fields)


def test_plain_mazes_have_no_anchors():
    maze = build_splits(0, 0, 3, seed=0, difficulties=FOUR_BY_FOUR, answer_format="cells")["test"][0]
    assert "hints" not in maze.to_dict() and maze.anchors == ()
    with pytest.raises(ValueError, match="no subgoals"):
        maze.answer_pieces()
