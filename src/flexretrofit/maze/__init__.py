"""The maze planning task, in one place: the task a FlexMDM is compared with its MDM on (``make demo``).

- :mod:`.grid`: moves, walls, the :class:`~.grid.Maze` itself and the geometry on it (the bottom layer);
- :mod:`.text`: the prompt and answer formats and the exact checker (imports :mod:`.grid`);
- :mod:`.instances`: task records, difficulties, subgoals (hints on the path), splits and files;
- :mod:`.evaluation`: solvers (anchored ``infill`` for a FlexMDM, ``generate_mdm`` for an MDM), resumable
  result rows and their summary;
- :mod:`.report`: the FlexMDM-vs-MDM report;
- :mod:`.demo`: the whole run (settings, pretraining the shipped MDM, the retrofit, the comparison).

Modules are imported by name (``from flexretrofit.maze.instances import MazeInstance``): the evaluation and
demo modules load the models and samplers, which the task files and the checker do not need.
"""
