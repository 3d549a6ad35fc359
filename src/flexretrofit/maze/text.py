"""Maze answers as text: the prompt and answer formats, parsing, and the exact checker.

Two answer formats (:data:`ANSWER_FORMATS`) over the same mazes (see :mod:`flexretrofit.maze.instances`):
``moves`` (``" D L L D R"``) and ``cells`` (the hex ids of the cells the path visits, ``" 3 4 5 8"``). Both
parse to moves (:func:`parse_answer`); :func:`check_answer` walks them through the maze. Functions take a
:class:`~flexretrofit.maze.instances.MazeInstance`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flexretrofit.maze.instances import MazeInstance

# Row and column step of each move; the wall bit that blocks it.
MOVES: dict[str, tuple[int, int]] = {"U": (-1, 0), "R": (0, 1), "D": (1, 0), "L": (0, -1)}
WALL_BITS: dict[str, int] = {"U": 1, "R": 2, "D": 4, "L": 8}

ANSWER_FORMATS = ("moves", "cells")
MAX_CELLS_FOR_CELL_IDS = 16  # cell ids are written as one hex digit


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


def prompt_text(instance: MazeInstance, show_hints: bool = True) -> str:
    """``maze HxW walls: <one hex digit per cell> start r,c goal r,c path:`` (``cells`` format: ``start i
    goal j`` with hex cell ids). A subgoal task lists its hints, ``... goal j via h1 h2 path:``, unless
    ``show_hints`` is False (the same maze as a plain one)."""
    cells = " ".join(f"{mask:x}" for mask in instance.walls)
    if instance.answer_format == "cells":
        start, goal = _cell_id(instance, instance.start), _cell_id(instance, instance.goal)
    else:
        start, goal = _cell(instance.start), _cell(instance.goal)
    via = ""
    if show_hints and instance.hints is not None:
        visited = path_cells(instance, instance.path)
        via = " via" + "".join(f" {_cell_id(instance, visited[index])}" for index in instance.hints)
    return f"maze {instance.height}x{instance.width} walls: {cells} start {start} goal {goal}{via} path:"


def answer_text(instance: MazeInstance) -> str:
    """The reference answer, each token preceded by a space: the moves (``" D L L D R"``), or for the
    ``cells`` format the hex ids of the cells the path visits after the start (``" 3 4 5 8"``)."""
    if instance.answer_format == "cells":
        return "".join(f" {_cell_id(instance, cell)}" for cell in path_cells(instance, instance.path))
    return "".join(f" {move}" for move in instance.path)


def path_cells(instance: MazeInstance, moves: Sequence[str]) -> list[tuple[int, int]]:
    """The cells visited after each move from the start (walls are not checked here)."""
    row, col = instance.start
    cells = []
    for move in moves:
        d_row, d_col = MOVES[move]
        row, col = row + d_row, col + d_col
        cells.append((row, col))
    return cells


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


def walk(instance: MazeInstance, moves: Iterable[str]) -> tuple[tuple[int, int], tuple[str, str] | None]:
    """Follow ``moves`` from the start. Returns ``(cell reached, None)``, or ``(cell before the bad move,
    (reason, detail))`` at the first move that leaves the grid or crosses a wall."""
    row, col = instance.start
    for index, move in enumerate(moves):
        d_row, d_col = MOVES[move]
        next_row, next_col = row + d_row, col + d_col
        if not (0 <= next_row < instance.height and 0 <= next_col < instance.width):
            return (row, col), ("off_grid", f"move {index} ({move}) from {row},{col} leaves the grid")
        if instance.walls[row * instance.width + col] & WALL_BITS[move]:
            return (row, col), ("wall", f"move {index} ({move}) from {row},{col} goes through a wall")
        row, col = next_row, next_col
    return (row, col), None


def check_answer(instance: MazeInstance, generated_text: str) -> CheckResult:
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
        return CheckResult(False, "not_at_goal", f"ends at {_cell(end)}, the goal is {_cell(instance.goal)}")
    missed = _first_missed_subgoal(instance, moves)
    if missed is not None:
        return CheckResult(False, "missed_subgoal", f"never passes subgoal {_cell(missed)} in its turn")
    if len(moves) != instance.num_moves:
        return CheckResult(
            False, "not_shortest", f"{len(moves)} moves; the shortest path has {instance.num_moves}"
        )
    return CheckResult(True, "ok")


def success_rates(instances: Sequence[MazeInstance], generated_texts: Sequence[str]) -> dict[str, float]:
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


def _first_missed_subgoal(instance: MazeInstance, moves: Sequence[str]) -> tuple[int, int] | None:
    """The first subgoal the walk does not reach after the previous one (None when all are passed in order)."""
    if not instance.hints:
        return None
    reference = path_cells(instance, instance.path)
    walked = iter(path_cells(instance, moves))
    for index in instance.hints:
        if reference[index] not in walked:  # consumes the walk up to the subgoal: order is enforced
            return reference[index]
    return None


def _cell(cell: tuple[int, int]) -> str:
    return f"{cell[0]},{cell[1]}"


def _cell_id(instance: MazeInstance, cell: tuple[int, int]) -> str:
    return f"{cell[0] * instance.width + cell[1]:x}"
