"""The maze grid: moves, wall bits and cells, the :class:`Maze` itself, and the geometry on it (carving,
shortest paths, walking a path, drawing).

This is the bottom of the maze package: the text format and checker (:mod:`.text`) and the task records
(:mod:`.instances`) import from here, and this module imports neither. Cells are ``(row, column)``,
zero-based, row 0 at the top; a maze is one 4-bit wall mask per cell, row-major: bit 1 = wall above (U),
2 = right (R), 4 = below (D), 8 = left (L). The grid border is always walled.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Row and column step of each move; the wall bit that blocks it; the move that undoes it.
MOVES: dict[str, tuple[int, int]] = {"U": (-1, 0), "R": (0, 1), "D": (1, 0), "L": (0, -1)}
WALL_BITS: dict[str, int] = {"U": 1, "R": 2, "D": 4, "L": 8}
OPPOSITE: dict[str, str] = {"U": "D", "D": "U", "L": "R", "R": "L"}
ALL_WALLS = 15

# The two ways of writing an answer (moves, or the cells visited; see maze.text), checked by Maze.
ANSWER_FORMATS = ("moves", "cells")
MAX_CELLS_FOR_CELL_IDS = 16  # cell ids are written as one hex digit


@dataclass(frozen=True)
class Maze:
    """A maze, a start and a goal cell, and the reference (unique shortest) path: the puzzle itself.

    ``walls`` holds one 4-bit wall mask per cell, row-major (see the module docstring). The constructor
    checks that the maze is consistent and that ``path`` is a shortest path from ``start`` to ``goal``.
    :class:`~flexretrofit.maze.instances.MazeInstance` adds the task record (answer pieces, JSONL).
    """

    difficulty: str
    height: int
    width: int
    walls: tuple[int, ...]
    start: tuple[int, int]
    goal: tuple[int, int]
    path: tuple[str, ...]
    answer_format: str = "moves"
    hints: tuple[int, ...] | None = None
    canonical_hash: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("walls", "start", "goal", "path"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.hints is not None:
            object.__setattr__(self, "hints", tuple(int(i) for i in self.hints))
            _validate_hints(self)
        _validate_walls(self.height, self.width, self.walls)
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {self.answer_format!r}.")
        if self.answer_format == "cells" and self.height * self.width > MAX_CELLS_FOR_CELL_IDS:
            raise ValueError(
                f"the cells answer format writes each cell as one hex digit, so grids have at most "
                f"{MAX_CELLS_FOR_CELL_IDS} cells; got {self.height}x{self.width}. Use answer_format='moves'."
            )
        for name in ("start", "goal"):
            row, col = getattr(self, name)
            if not (0 <= row < self.height and 0 <= col < self.width):
                raise ValueError(f"{name} {row},{col} is outside the {self.height}x{self.width} grid.")
        if self.start == self.goal:
            raise ValueError(f"start and goal are the same cell {self.start}; the path would be empty.")
        end, error = walk(self, self.path)
        if error is not None or end != self.goal:
            raise ValueError(f"path {''.join(self.path)!r} does not lead from start to goal: {error or end}.")
        shortest = shortest_path(self.height, self.width, self.walls, self.start, self.goal)
        if len(self.path) != len(shortest):
            raise ValueError(f"path has {len(self.path)} moves; the shortest has {len(shortest)}.")
        ends = f"{cell_text(self.start)}:{cell_text(self.goal)}"
        key = f"{self.height}x{self.width}:{_hex_walls(self.walls)}:{ends}"
        object.__setattr__(self, "canonical_hash", hashlib.sha256(key.encode()).hexdigest())

    @property
    def id(self) -> str:
        """Stable id from the maze content (not from the split or the generation order)."""
        return f"maze-{self.canonical_hash[:16]}"

    @property
    def num_moves(self) -> int:
        return len(self.path)

    @property
    def anchors(self) -> tuple[int, ...]:
        """Indices (into the path's cells) a solver is given: the hints and the goal (subgoal tasks only)."""
        return () if self.hints is None else (*self.hints, self.num_moves - 1)


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


def generate_maze(height: int, width: int, rng: random.Random) -> tuple[int, ...]:
    """A perfect maze carved by randomized depth-first search; one wall mask per cell, row-major."""
    walls = [ALL_WALLS] * (height * width)
    visited = [False] * (height * width)
    stack = [(rng.randrange(height), rng.randrange(width))]
    visited[stack[0][0] * width + stack[0][1]] = True
    while stack:
        row, col = stack[-1]
        options = [
            (move, row + d_row, col + d_col)
            for move, (d_row, d_col) in MOVES.items()
            if 0 <= row + d_row < height
            and 0 <= col + d_col < width
            and not visited[(row + d_row) * width + col + d_col]
        ]
        if not options:
            stack.pop()
            continue
        move, next_row, next_col = rng.choice(options)
        walls[row * width + col] &= ~WALL_BITS[move]
        walls[next_row * width + next_col] &= ~WALL_BITS[OPPOSITE[move]]
        visited[next_row * width + next_col] = True
        stack.append((next_row, next_col))
    return tuple(walls)


def shortest_path(
    height: int, width: int, walls: Sequence[int], start: tuple[int, int], goal: tuple[int, int]
) -> tuple[str, ...]:
    """The moves of a shortest path (breadth-first search); ValueError if the goal is unreachable."""
    distances, parents = breadth_first(height, width, walls, start)
    if distances[goal[0] * width + goal[1]] < 0:
        raise ValueError(f"goal {cell_text(goal)} cannot be reached from start {cell_text(start)}.")
    return trace_moves(parents, width, goal)


def breadth_first(
    height: int, width: int, walls: Sequence[int], start: tuple[int, int]
) -> tuple[list[int], list[tuple[int, str] | None]]:
    """Breadth-first search from ``start``: distance per cell (-1 if unreachable) and (parent index, move)."""
    distances = [-1] * (height * width)
    parents: list[tuple[int, str] | None] = [None] * (height * width)
    origin = start[0] * width + start[1]
    distances[origin] = 0
    queue = deque([origin])
    while queue:
        index = queue.popleft()
        row, col = divmod(index, width)
        for move, (d_row, d_col) in MOVES.items():
            if walls[index] & WALL_BITS[move]:
                continue
            neighbour = (row + d_row) * width + col + d_col
            if distances[neighbour] < 0:
                distances[neighbour] = distances[index] + 1
                parents[neighbour] = (index, move)
                queue.append(neighbour)
    return distances, parents


def trace_moves(
    parents: Sequence[tuple[int, str] | None], width: int, goal: tuple[int, int]
) -> tuple[str, ...]:
    """The moves from the search's start to ``goal``, read back through :func:`breadth_first`'s parents."""
    moves = []
    step = parents[goal[0] * width + goal[1]]
    while step is not None:
        index, move = step
        moves.append(move)
        step = parents[index]
    return tuple(reversed(moves))


def cell_text(cell: tuple[int, int]) -> str:
    """``row,column``, as prompts and messages write a cell."""
    return f"{cell[0]},{cell[1]}"


def path_cells(maze: Maze, moves: Sequence[str]) -> list[tuple[int, int]]:
    """The cells visited after each move from the start (walls are not checked here)."""
    row, col = maze.start
    cells = []
    for move in moves:
        d_row, d_col = MOVES[move]
        row, col = row + d_row, col + d_col
        cells.append((row, col))
    return cells


def walk(maze: Maze, moves: Iterable[str]) -> tuple[tuple[int, int], tuple[str, str] | None]:
    """Follow ``moves`` from the start. Returns ``(cell reached, None)``, or ``(cell before the bad move,
    (reason, detail))`` at the first move that leaves the grid or crosses a wall."""
    row, col = maze.start
    for index, move in enumerate(moves):
        d_row, d_col = MOVES[move]
        next_row, next_col = row + d_row, col + d_col
        if not (0 <= next_row < maze.height and 0 <= next_col < maze.width):
            return (row, col), ("off_grid", f"move {index} ({move}) from {row},{col} leaves the grid")
        if maze.walls[row * maze.width + col] & WALL_BITS[move]:
            return (row, col), ("wall", f"move {index} ({move}) from {row},{col} goes through a wall")
        row, col = next_row, next_col
    return (row, col), None


def render(maze: Maze, moves: Sequence[str] | None = None) -> str:
    """ASCII picture of the maze: ``S`` start, ``G`` goal, ``*`` the cells visited by ``moves``
    (default: the reference path) until the first illegal move."""
    moves = maze.path if moves is None else moves
    visited = set()
    row, col = maze.start
    for move in moves:
        d_row, d_col = MOVES[move]
        if not (0 <= row + d_row < maze.height and 0 <= col + d_col < maze.width):
            break
        if maze.walls[row * maze.width + col] & WALL_BITS[move]:
            break
        row, col = row + d_row, col + d_col
        visited.add((row, col))
    lines = ["+" + "---+" * maze.width]
    for row in range(maze.height):
        cells, floor = "|", "+"
        for col in range(maze.width):
            mask = maze.walls[row * maze.width + col]
            mark = "S" if (row, col) == maze.start else "G" if (row, col) == maze.goal else " "
            if mark == " " and (row, col) in visited:
                mark = "*"
            cells += f" {mark} " + ("|" if mask & WALL_BITS["R"] else " ")
            floor += ("---" if mask & WALL_BITS["D"] else "   ") + "+"
        lines += [cells, floor]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _hex_walls(walls: Sequence[int]) -> str:
    return "".join(f"{mask:x}" for mask in walls)


def _validate_hints(maze: Maze) -> None:
    if maze.answer_format != "cells":
        raise ValueError(
            "subgoals (hints) need answer_format='cells': a given cell id says where on the path it lies."
        )
    hints = maze.hints
    if any(not 0 <= i < maze.num_moves - 1 for i in hints) or list(hints) != sorted(set(hints)):
        raise ValueError(
            f"hints must be increasing path-cell indices in 0..{maze.num_moves - 2} (the goal is always "
            f"given), got {list(hints)}."
        )


def _validate_walls(height: int, width: int, walls: Sequence[int]) -> None:
    if len(walls) != height * width:
        raise ValueError(f"a {height}x{width} maze needs {height * width} wall masks, got {len(walls)}.")
    for index, mask in enumerate(walls):
        if not 0 <= mask <= ALL_WALLS:
            raise ValueError(f"wall mask {mask} of cell {index} is not in 0..15.")
        row, col = divmod(index, width)
        for move, (d_row, d_col) in MOVES.items():
            next_row, next_col = row + d_row, col + d_col
            blocked = bool(mask & WALL_BITS[move])
            if not (0 <= next_row < height and 0 <= next_col < width):
                if not blocked:
                    raise ValueError(f"cell {row},{col} has no wall on the grid border ({move}).")
            elif blocked != bool(walls[next_row * width + next_col] & WALL_BITS[OPPOSITE[move]]):
                raise ValueError(
                    f"cells {row},{col} and {next_row},{next_col} disagree about the wall between them."
                )
