"""Maze instances: procedural mazes with an exact checker whose answer length varies a lot, and subgoals.

The paper's synthetic length benchmark (method doc, section 1): given a maze, a start and a goal, write
the path. A fixed-canvas MDM must guess how long the path is before it writes it; FlexMDM inserts as it
goes. Mazes here are small (5x5 to 7x7 cells) so that a tiny model can learn them on a CPU.

Mazes are perfect (a spanning tree of the grid, carved by a randomized depth-first search), so the
path between two cells is unique and is the shortest. Each difficulty fixes the grid size and a range
of path lengths; the path length of an instance is drawn uniformly from that range, so the reference
length distribution is known exactly (:func:`reference_length_distribution`).

Text format (one token per cell and per move under a byte-level BPE that knows ``" 0".." f"`` and
``" U" " D" " L" " R"``; see :data:`TOKENIZER_TEXT`)::

    prompt: maze 5x5 walls: 9 5 3 d 3 a d 6 9 6 ... start 1,3 goal 4,0 path:
    answer:  D L L D R

- ``5x5`` is rows x columns. ``walls`` lists one lowercase hex digit per cell, row by row from the top
  left: the cell's wall mask, bit 1 = wall above (U), 2 = right (R), 4 = below (D), 8 = left (L). The
  grid border is always walled.
- ``start`` / ``goal`` are ``row,column``, zero-based, row 0 at the top.
- The answer is the moves ``U D L R``, each preceded by one space (so every move is the same token,
  the first one included). :func:`parse_moves` accepts any whitespace between moves, or none.

A second answer format, ``cells`` (:data:`ANSWER_FORMATS`), writes the path as the cells it visits, one
hex digit per cell (index ``row * width + column``), and the start and goal the same way::

    prompt: maze 3x3 walls: 9 5 3 d 3 a d 6 9 6 ... start 1 goal 6 path:
    answer:  4 3 6

Each answer token then says where the path is, so the number of cells missing between two known cells
is their distance in the maze minus one: a local question, which is what an inserting model can use.
Cell ids are single hex digits, so this format takes grids of at most 16 cells.

**Subgoals** (the paper's planning setting, ``cells`` format only): ``hints`` marks cells of the path, at
irregular places, that the solver is given. The prompt lists them after ``via``, and the goal is always
given::

    prompt: maze 4x4 walls: ... start 1 goal 6 via 3 9 path:
    answer:  2 3 7 b 9 a 6        (hints 3 and 9 and the goal 6 are anchors)

A FlexMDM keeps the anchors in its sequence from the start and inserts only between them
(:meth:`MazeInstance.answer_pieces`), so every gap it sizes is the maze distance between two given cells.
An MDM must write the whole path on its canvas, each given cell at its absolute position.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The grid and its geometry live in maze.grid (below the text format); they stay importable here.
from flexretrofit.maze.grid import (
    ALL_WALLS,
    OPPOSITE,
    Maze,
    breadth_first,
    generate_maze,
    path_cells,
    render,
    shortest_path,
    trace_moves,
)
from flexretrofit.maze.text import answer_text, parse_answer, prompt_text

__all__ = [
    "ALL_WALLS",
    "DIFFICULTIES",
    "OPPOSITE",
    "SPLITS",
    "TOKENIZER_TEXT",
    "MazeDifficulty",
    "MazeInstance",
    "answer_lengths",
    "build_splits",
    "draw_hints",
    "generate_maze",
    "load_splits",
    "read_jsonl",
    "reference_length_distribution",
    "render",
    "sample_instance",
    "save_splits",
    "shortest_path",
    "write_jsonl",
]

SPLITS = ("train", "validation", "test")

# Text that covers every symbol of the format, to add to a tokenizer's training corpus so that each cell
# (" 0".." f") and each move (" U" " D" " L" " R") becomes one token.
TOKENIZER_TEXT = (
    "maze 7x7 walls: 0 1 2 3 4 5 6 7 8 9 a b c d e f start 0,0 goal 6,6 path: U D L R U D L R\n"
    "maze 5x5 walls: f e d c b a 9 8 7 6 5 4 3 2 1 0 start 4,4 goal 0,0 path: R L D U R L D U"
)


@dataclass(frozen=True)
class MazeDifficulty:
    """A difficulty level: the grid size and the range of path lengths (in moves, both ends included)."""

    name: str
    height: int
    width: int
    min_moves: int
    max_moves: int

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1 or self.height * self.width < 2:
            raise ValueError(
                f"difficulty {self.name!r}: the grid needs at least 2 cells, got {self.height}x{self.width}."
            )
        if self.height > 10 or self.width > 10:
            # Coordinates are written as single digits in the prompt.
            raise ValueError(
                f"difficulty {self.name!r}: grids are at most 10x10, got {self.height}x{self.width}."
            )
        if not 1 <= self.min_moves <= self.max_moves <= self.height * self.width - 1:
            raise ValueError(
                f"difficulty {self.name!r}: need 1 <= min_moves <= max_moves <= cells - 1 = "
                f"{self.height * self.width - 1}, got {self.min_moves}..{self.max_moves}."
            )


# Path-length ranges overlap a little and each spans a factor of 2.5 or more: the length is part of the task.
DIFFICULTIES: dict[str, MazeDifficulty] = {
    "easy": MazeDifficulty("easy", height=5, width=5, min_moves=2, max_moves=10),
    "medium": MazeDifficulty("medium", height=6, width=6, min_moves=6, max_moves=20),
    "hard": MazeDifficulty("hard", height=7, width=7, min_moves=12, max_moves=30),
}


class MazeInstance(Maze):
    """One task: a :class:`~flexretrofit.maze.grid.Maze` (grid, start, goal, reference path, answer format,
    hints; checked on construction) as the task's record: its answer pieces and its JSONL form."""

    def answer_pieces(self) -> list[dict[str, Any]]:
        """The answer as runs of cells, ``{"text": " 4 3", "anchor": bool}``: anchors (given cells, kept in
        place by an anchored infilling model) and the cells to generate between them, in path order."""
        if self.hints is None:
            raise ValueError(f"maze {self.id} has no subgoals; build it with a hint_rate to get anchors.")
        anchors = set(self.anchors)
        pieces: list[dict[str, Any]] = []
        for index, cell in enumerate(path_cells(self, self.path)):
            token = f" {cell[0] * self.width + cell[1]:x}"
            if pieces and pieces[-1]["anchor"] == (index in anchors):
                pieces[-1]["text"] += token
            else:
                pieces.append({"text": token, "anchor": index in anchors})
        return pieces

    def to_dict(self) -> dict:
        """The JSONL record: id, difficulty, prompt, answer, num_moves, and the maze for checking; subgoal
        tasks add ``hints``, ``plain_prompt`` (the prompt without them) and ``anchored_answer``
        (:meth:`answer_pieces`)."""
        record = {
            "id": self.id,
            "difficulty": self.difficulty,
            "answer_format": self.answer_format,
            "prompt": prompt_text(self),
            "answer": answer_text(self),
            "num_moves": self.num_moves,
            "maze": {
                "height": self.height,
                "width": self.width,
                "walls": list(self.walls),
                "start": list(self.start),
                "goal": list(self.goal),
            },
        }
        if self.hints is not None:
            record["hints"] = list(self.hints)
            record["plain_prompt"] = prompt_text(self, show_hints=False)
            record["anchored_answer"] = self.answer_pieces()
        return record

    @classmethod
    def from_dict(cls, record: Mapping) -> MazeInstance:
        """Inverse of :meth:`to_dict`; raises ValueError if the stored texts do not match the maze."""
        maze = record["maze"]
        answer_format = record.get("answer_format", "moves")
        shape = dict(
            difficulty=record["difficulty"],
            height=maze["height"],
            width=maze["width"],
            walls=maze["walls"],
            start=tuple(maze["start"]),
            goal=tuple(maze["goal"]),
        )
        path = parse_answer(
            record["answer"], answer_format, maze["height"], maze["width"], tuple(maze["start"])
        )
        hints = record.get("hints")
        instance = cls(**shape, path=path, answer_format=answer_format, hints=hints)
        if record.get("prompt") != prompt_text(instance) or record.get("id") != instance.id:
            raise ValueError(
                f"maze record {record.get('id')!r}: its prompt or id does not match its maze; it was written by "
                "another version of the format. Regenerate the file with build_splits and save_splits."
            )
        return instance


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def sample_instance(
    difficulty: str | MazeDifficulty,
    rng: random.Random,
    max_tries: int = 1000,
    answer_format: str = "moves",
    hint_rate: float | None = None,
    hint_stride: int | None = None,
) -> MazeInstance:
    """One instance; its path length is drawn uniformly from the difficulty's range first, then a maze and
    a start/goal pair at that distance are searched for, so the length distribution stays exactly uniform.

    ``hint_rate``: None for plain mazes; else each path cell before the goal becomes a subgoal with this
    chance, independently (:func:`draw_hints`), so the hints sit at irregular places."""
    spec = _difficulty(difficulty)
    target = rng.randint(spec.min_moves, spec.max_moves)
    cells = [(row, col) for row in range(spec.height) for col in range(spec.width)]
    for _ in range(max_tries):
        walls = generate_maze(spec.height, spec.width, rng)
        for start in rng.sample(cells, k=min(len(cells), 8)):
            distances, parents = breadth_first(spec.height, spec.width, walls, start)
            goals = [cell for index, cell in enumerate(cells) if distances[index] == target]
            if goals:
                goal = rng.choice(goals)
                path = trace_moves(parents, spec.width, goal)
                hints = None if hint_rate is None else draw_hints(len(path), hint_rate, rng, hint_stride)
                return MazeInstance(
                    spec.name, spec.height, spec.width, walls, start, goal, path, answer_format, hints
                )
    raise ValueError(
        f"found no {spec.height}x{spec.width} maze with a {target}-move path in {max_tries} tries; "
        f"lower max_moves of difficulty {spec.name!r}."
    )


def draw_hints(
    num_moves: int, hint_rate: float, rng: random.Random, stride: int | None = None
) -> tuple[int, ...]:
    """Subgoal indices into a path of ``num_moves`` cells: each cell before the goal with chance ``hint_rate``
    (irregular places), or with ``stride`` every ``stride``-th cell (regular places; the calibration's
    contrast). The same random numbers are drawn either way, so the mazes that follow do not change."""
    if not 0.0 <= hint_rate <= 1.0:
        raise ValueError(f"hint_rate must be in [0, 1], got {hint_rate}.")
    if stride is not None and stride < 1:
        raise ValueError(f"hint_stride must be >= 1, got {stride}.")
    draws = [rng.random() for _ in range(num_moves - 1)]
    if stride is not None:
        return tuple(range(stride - 1, num_moves - 1, stride))
    return tuple(index for index, draw in enumerate(draws) if draw < hint_rate)


def build_splits(
    num_train: int,
    num_val: int,
    num_test: int,
    seed: int = 0,
    difficulty_mix: Mapping[str, float] | None = None,
    difficulties: Mapping[str, MazeDifficulty] | None = None,
    answer_format: str = "moves",
    hint_rate: float | None = None,
    hint_stride: int | None = None,
) -> dict[str, list[MazeInstance]]:
    """Disjoint ``train`` / ``validation`` / ``test`` splits, reproducible from ``seed``.

    Each (split, difficulty) pair draws from its own random stream, so a split does not change when
    another split's size does. No instance appears twice (dedup by :attr:`MazeInstance.canonical_hash`);
    test is drawn first, then validation, then train, so train never holds an evaluation maze.

    Args:
        difficulty_mix: weight per difficulty name (default: equal weights over ``difficulties``); each
            split holds that many instances per difficulty (largest-remainder rounding), shuffled.
        difficulties: the difficulty specs by name (default :data:`DIFFICULTIES`).
        answer_format: ``moves`` or ``cells`` (:data:`ANSWER_FORMATS`); the mazes drawn do not depend on it.
        hint_rate: None for plain mazes, else the chance that a path cell is a given subgoal
            (:func:`sample_instance`; ``cells`` format only); ``hint_stride``: every k-th cell instead.
    """
    difficulties = dict(DIFFICULTIES if difficulties is None else difficulties)
    mix = dict(difficulty_mix) if difficulty_mix is not None else dict.fromkeys(difficulties, 1.0)
    unknown = sorted(set(mix) - set(difficulties))
    if unknown:
        raise ValueError(f"unknown difficulties {unknown} in difficulty_mix; known: {sorted(difficulties)}.")
    if not mix or any(weight < 0 for weight in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"difficulty_mix needs non-negative weights with a positive sum, got {mix}.")
    sizes = {"test": num_test, "validation": num_val, "train": num_train}
    if any(size < 0 for size in sizes.values()):
        raise ValueError(f"split sizes must be >= 0, got {sizes}.")

    seen: set[str] = set()
    splits: dict[str, list[MazeInstance]] = {}
    for split, size in sizes.items():
        instances = []
        for name, count in _apportion(size, mix).items():
            rng = random.Random(f"flexretrofit.maze/{seed}/{split}/{name}")
            instances.extend(
                _draw_unique(difficulties[name], count, rng, seen, answer_format, hint_rate, hint_stride)
            )
        random.Random(f"flexretrofit.maze/{seed}/{split}/order").shuffle(instances)
        splits[split] = instances
    return {split: splits[split] for split in SPLITS}


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def write_jsonl(instances: Iterable[MazeInstance], path: str | os.PathLike) -> Path:
    """One :meth:`MazeInstance.to_dict` record per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for instance in instances:
            handle.write(json.dumps(instance.to_dict()) + "\n")
    return path


def read_jsonl(path: str | os.PathLike) -> list[MazeInstance]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no maze file at {path}; write one with write_jsonl or save_splits.")
    with path.open(encoding="utf-8") as handle:
        return [MazeInstance.from_dict(json.loads(line)) for line in handle if line.strip()]


def save_splits(splits: Mapping[str, Sequence[MazeInstance]], folder: str | os.PathLike) -> dict[str, Path]:
    """Write ``<folder>/<split>.jsonl`` for each split."""
    return {
        split: write_jsonl(instances, Path(folder) / f"{split}.jsonl") for split, instances in splits.items()
    }


def load_splits(folder: str | os.PathLike) -> dict[str, list[MazeInstance]]:
    """Read every ``<split>.jsonl`` of ``folder`` (train, validation, test, or any other name)."""
    files = sorted(Path(folder).glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no *.jsonl files in {folder}; write the splits with save_splits first.")
    return {file.stem: read_jsonl(file) for file in files}


# ---------------------------------------------------------------------------------------------
# Length statistics
# ---------------------------------------------------------------------------------------------


def reference_length_distribution(difficulty: str | MazeDifficulty) -> dict[int, float]:
    """The exact distribution of answer lengths (moves) the generator draws from: uniform on the range."""
    spec = _difficulty(difficulty)
    count = spec.max_moves - spec.min_moves + 1
    return {length: 1.0 / count for length in range(spec.min_moves, spec.max_moves + 1)}


def answer_lengths(instances: Iterable[MazeInstance]) -> dict[str, list[int]]:
    """Reference answer lengths (moves) per difficulty, to compare with generated ones
    (e.g. ``evaluation.lengths.total_variation_distance``)."""
    lengths: dict[str, list[int]] = defaultdict(list)
    for instance in instances:
        lengths[instance.difficulty].append(instance.num_moves)
    return dict(lengths)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _difficulty(difficulty: str | MazeDifficulty) -> MazeDifficulty:
    if isinstance(difficulty, MazeDifficulty):
        return difficulty
    if difficulty not in DIFFICULTIES:
        raise ValueError(
            f"unknown difficulty {difficulty!r}; use one of {sorted(DIFFICULTIES)} or a MazeDifficulty."
        )
    return DIFFICULTIES[difficulty]


def _apportion(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Split ``total`` in proportion to ``weights`` (largest remainder; ties by name order)."""
    weight_sum = sum(weights.values())
    exact = {name: total * weight / weight_sum for name, weight in weights.items()}
    counts = {name: int(value) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda name: (counts[name] - exact[name], name))
    for name in by_remainder[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


def _draw_unique(
    spec: MazeDifficulty,
    count: int,
    rng: random.Random,
    seen: set[str],
    answer_format: str = "moves",
    hint_rate: float | None = None,
    hint_stride: int | None = None,
) -> list[MazeInstance]:
    instances = []
    duplicates = 0
    while len(instances) < count:
        instance = sample_instance(
            spec, rng, answer_format=answer_format, hint_rate=hint_rate, hint_stride=hint_stride
        )
        if instance.canonical_hash in seen:
            duplicates += 1
            if duplicates > 100 + count:
                raise ValueError(
                    f"difficulty {spec.name!r} keeps producing duplicates ({duplicates}); ask for fewer "
                    "instances or use a larger grid or a wider path-length range."
                )
            continue
        seen.add(instance.canonical_hash)
        instances.append(instance)
    return instances
