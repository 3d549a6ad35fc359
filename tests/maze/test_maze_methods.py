"""The maze task per method (flexretrofit.maze.methods): one solver looked up by method, the table's rows, and
the layering of the maze modules (grid below text below instances; old import paths kept)."""

import ast
from pathlib import Path

import pytest

import flexretrofit.maze
from flexretrofit.maze import evaluation, grid, instances, methods, text
from flexretrofit.maze.demo import shipped_mdm_path
from flexretrofit.maze.instances import MazeDifficulty, build_splits
from flexretrofit.maze.methods import MAZE_METHODS, data_suffix, load_model, maze_method, solver
from flexretrofit.maze.settings import load_settings
from flexretrofit.methods import METHODS
from flexretrofit.models import FlexMDMForMaskedDiffusion, LLaDAModelLM, load_tokenizer

MAZE_DIR = Path(flexretrofit.maze.__file__).parent


def maze_imports(module: str) -> set[str]:
    """The flexretrofit.maze modules a maze module imports (any import statement, TYPE_CHECKING included)."""
    tree = ast.parse((MAZE_DIR / f"{module}.py").read_text())
    names = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    return {name.rsplit(".", 1)[1] for name in names if name.startswith("flexretrofit.maze.")}


def test_grid_is_below_text_which_is_below_instances():
    assert maze_imports("grid") == set()
    assert maze_imports("text") == {"grid"}
    assert maze_imports("instances") == {"grid", "text"}


def test_moved_names_keep_their_old_import_paths():
    for name in ("MOVES", "WALL_BITS", "ANSWER_FORMATS", "MAX_CELLS_FOR_CELL_IDS", "walk", "path_cells"):
        assert getattr(text, name) is getattr(grid, name)
    for name in ("OPPOSITE", "ALL_WALLS", "generate_maze", "shortest_path", "render"):
        assert getattr(instances, name) is getattr(grid, name)
    for name in ("Solver", "row_seed", "maze_prompt_ids", "anchored_segments", "true_length_solver"):
        assert getattr(evaluation, name) is getattr(methods, name)
    assert evaluation.flex_solver.args == ("flexmdm",) and evaluation.mdm_solver.args == ("mdm",)
    assert issubclass(instances.MazeInstance, grid.Maze)


def test_the_table_has_one_row_per_method_and_reads_old_spellings():
    assert tuple(MAZE_METHODS) == METHODS
    assert maze_method("flex") is MAZE_METHODS["flexmdm"]
    with pytest.raises(ValueError, match="method='llada' is not a method"):
        maze_method("llada")
    settings = load_settings()
    for name, row in MAZE_METHODS.items():
        assert row.name == name
        assert isinstance(getattr(settings.evaluation, row.name), dict)
        assert hasattr(settings.compare, row.config_key)
    assert MAZE_METHODS["flexmdm"].forward_passes({"steps": 32}) == 32
    assert MAZE_METHODS["mdm"].forward_passes({}) == "canvas - prompt"


def test_only_the_mdm_trains_on_two_prompt_files_and_only_on_subgoal_mazes():
    assert data_suffix("mdm", 0.75) == "_mdm"
    assert data_suffix("mdm", None) == ""
    assert data_suffix("flexmdm", 0.75) == data_suffix("flexmdm", None) == ""


def test_load_model_picks_the_methods_class_and_refuses_the_other_kind():
    mdm = load_model("mdm", shipped_mdm_path())
    assert type(mdm) is LLaDAModelLM and not mdm.training
    with pytest.raises(ValueError, match="holds a LLaDA model"):
        load_model("flexmdm", shipped_mdm_path())  # a LLaDA checkpoint is not a FlexMDM


def test_solver_by_name_answers_as_the_old_per_method_solvers():
    tokenizer = load_tokenizer(shipped_mdm_path())
    easy = {"easy": MazeDifficulty("easy", 4, 4, 4, 8)}
    mazes = build_splits(0, 0, 4, seed=2, difficulties=easy, answer_format="cells", hint_rate=0.5)["test"]
    backbone = LLaDAModelLM.from_pretrained(shipped_mdm_path()).eval()
    flex = FlexMDMForMaskedDiffusion.from_llada(backbone, flex_config={"insertion_head_init": 1.0}).eval()
    options = {"steps": 4}
    assert solver("flexmdm", flex, tokenizer, 120, options)(mazes) == methods.flex_solver(
        flex, tokenizer, 120, options
    )(mazes)
    assert solver("flex", flex, tokenizer, 120, options)(mazes) == solver(
        "flexmdm", flex, tokenizer, 120, options
    )(mazes)
    without = solver("mdm", backbone, tokenizer, 80, {}, show_hints=False)(mazes)
    assert without == methods.mdm_solver(backbone, tokenizer, 80, {}, False)(mazes)
    assert all(isinstance(ids, list) for ids in without) and len(without) == len(mazes)
