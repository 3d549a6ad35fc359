"""Maze answers as text: the prompt and answer formats, parsing, and the exact checker.

Two answer formats (:data:`ANSWER_FORMATS`) over the same mazes (see :mod:`flexretrofit.maze.instances`):
``moves`` (``" D L L D R"``) and ``cells`` (the hex ids of the cells the path visits, ``" 3 4 5 8"``). Both
parse to moves (:func:`parse_answer`); :func:`check_answer` walks them through the maze. Functions take a
:class:`~flexretrofit.maze.grid.Maze` (a
:class:`~flexretrofit.maze.instances.MazeInstance` is one).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

# MOVES, WALL_BITS, ANSWER_FORMATS, walk and path_cells live with the grid (maze.grid); still importable here.
from flexretrofit.maze.grid import (
    ANSWER_FORMATS,
    MAX_CELLS_FOR_CELL_IDS,
    MOVES,
    WALL_BITS,
    Maze,
    cell_text,
    path_cells,
    walk,
)

__all__ = [
    "ANSWER_FORMATS",
    "MAX_CELLS_FOR_CELL_IDS",
    "MOVES",
    "WALL_BITS",
    "CheckResult",
    "answer_text",
    "cells_to_moves",
    "check_answer",
    "parse_answer",
    "parse_cells",
    "parse_moves",
    "path_cells",
    "prompt_text",
    "success_rates",
    "walk",
]


@dataclass(frozen=True)
class CheckResult:
    """Verdict of :func:`check_answer`. ``reason`` is one of ``ok``, ``empty``, ``garbage``, ``off_grid``,
    ``wall``, ``not_at_goal``, ``missed_subgoal``, ``not_shortest``; ``detail`` says where it went wrong."""

    valid: bool
    reason: str
    detail: str = ""

    def __bool__(self) -> bool:
        return self.valid


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


def prompt_text(instance: Maze, show_hints: bool = True) -> str:
    """``maze HxW walls: <one hex digit per cell> start r,c goal r,c path:`` (``cells`` format: ``start i
    goal j`` with hex cell ids). A subgoal task lists its hints, ``... goal j via h1 h2 path:``, unless
    ``show_hints`` is False (the same maze as a plain one)."""
    cells = " ".join(f"{mask:x}" for mask in instance.walls)
    if instance.answer_format == "cells":
        start, goal = _cell_id(instance, instance.start), _cell_id(instance, instance.goal)
    else:
        start, goal = cell_text(instance.start), cell_text(instance.goal)
    via = ""
    if show_hints and instance.hints is not None:
        visited = path_cells(instance, instance.path)
        via = " via" + "".join(f" {_cell_id(instance, visited[index])}" for index in instance.hints)
    return f"maze {instance.height}x{instance.width} walls: {cells} start {start} goal {goal}{via} path:"


def answer_text(instance: Maze) -> str:
    """The reference answer, each token preceded by a space: the moves (``" D L L D R"``), or for the
    ``cells`` format the hex ids of the cells the path visits after the start (``" 3 4 5 8"``)."""
    if instance.answer_format == "cells":
        return "".join(f" {_cell_id(instance, cell)}" for cell in path_cells(instance, instance.path))
    return "".join(f" {move}" for move in instance.path)


def parse_cells(text: str) -> tuple[int, ...]:
    """Hex cell ids in generated ``cells`` answer text; whitespace is ignored, anything else raises ValueError."""
    cells = []
    for position, char in enumerate(text):
        if char in "0123456789abcdef":
            cells.append(int(char, 16))
        elif not char.isspace():
            raise ValueError(f"unexpected character {char!r} at position {position}; cells are hex digits.")
    return tuple(cells)


def cells_to_moves(
    cell_ids: Sequence[int], height: int, width: int, start: tuple[int, int]
) -> tuple[str, ...]:
    """The moves that walk from ``start`` through ``cell_ids`` on a ``height x width`` grid; ValueError if a
    cell is off the grid or is not a neighbour of the one before it (walls are left to :func:`walk`)."""
    moves = []
    row, col = start
    by_step = {step: move for move, step in MOVES.items()}
    for index, cell_id in enumerate(cell_ids):
        if cell_id >= height * width:
            raise ValueError(f"cell {index} ({cell_id:x}) is outside the {height}x{width} grid")
        next_row, next_col = divmod(cell_id, width)
        move = by_step.get((next_row - row, next_col - col))
        if move is None:
            raise ValueError(f"cell {index} ({cell_id:x}) is not next to {row},{col}")
        moves.append(move)
        row, col = next_row, next_col
    return tuple(moves)


def parse_answer(
    text: str, answer_format: str, height: int, width: int, start: tuple[int, int]
) -> tuple[str, ...]:
    """The moves an answer in ``answer_format`` stands for; ValueError if it is not well formed."""
    if answer_format == "cells":
        return cells_to_moves(parse_cells(text), height, width, start)
    return parse_moves(text)


def parse_moves(text: str) -> tuple[str, ...]:
    """The moves in generated answer text (special tokens already removed when decoding).

    Whitespace anywhere is ignored (``" R R D"``, ``"RRD"``); any other character than ``U D L R``
    raises ValueError.
    """
    moves = []
    for position, char in enumerate(text):
        if char in MOVES:
            moves.append(char)
        elif not char.isspace():
            raise ValueError(f"unexpected character {char!r} at position {position}; moves are U, D, L, R.")
    return tuple(moves)


# ---------------------------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------------------------


def check_answer(instance: Maze, generated_text: str) -> CheckResult:
    """Exact check of a generated answer (in the instance's answer format): legal moves only, ends at the
    goal, passes every subgoal in order, and shortest length. A ``cells`` answer that jumps to a
    non-neighbouring cell is ``garbage``."""
    try:
        moves = parse_answer(
            generated_text, instance.answer_format, instance.height, instance.width, instance.start
        )
    except ValueError as error:
        return CheckResult(False, "garbage", str(error))
    if not moves:
        return CheckResult(False, "empty", "no moves")
    end, error = walk(instance, moves)
    if error is not None:
        return CheckResult(False, *error)
    if end != instance.goal:
        return CheckResult(
            False, "not_at_goal", f"ends at {cell_text(end)}, the goal is {cell_text(instance.goal)}"
        )
    missed = _first_missed_subgoal(instance, moves)
    if missed is not None:
        return CheckResult(False, "missed_subgoal", f"never passes subgoal {cell_text(missed)} in its turn")
    if len(moves) != instance.num_moves:
        return CheckResult(
            False, "not_shortest", f"{len(moves)} moves; the shortest path has {instance.num_moves}"
        )
    return CheckResult(True, "ok")


def success_rates(instances: Sequence[Maze], generated_texts: Sequence[str]) -> dict[str, float]:
    """Fraction of valid answers per difficulty, plus ``"all"``."""
    if len(instances) != len(generated_texts):
        raise ValueError(f"got {len(instances)} instances but {len(generated_texts)} generated texts.")
    if not instances:
        raise ValueError("no instances to score.")
    outcomes: dict[str, list[bool]] = defaultdict(list)
    for instance, text in zip(instances, generated_texts):
        valid = check_answer(instance, text).valid
        outcomes[instance.difficulty].append(valid)
        outcomes["all"].append(valid)
    return {name: sum(values) / len(values) for name, values in outcomes.items()}


def _first_missed_subgoal(instance: Maze, moves: Sequence[str]) -> tuple[int, int] | None:
    """The first subgoal the walk does not reach after the previous one (None when all are passed in order)."""
    if not instance.hints:
        return None
    reference = path_cells(instance, instance.path)
    walked = iter(path_cells(instance, moves))
    for index in instance.hints:
        if reference[index] not in walked:  # consumes the walk up to the subgoal: order is enforced
            return reference[index]
    return None


def _cell_id(instance: Maze, cell: tuple[int, int]) -> str:
    return f"{cell[0] * instance.width + cell[1]:x}"
