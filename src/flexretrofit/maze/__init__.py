"""The maze planning task, in one place: the task a FlexMDM is compared with its MDM on (``make demo``).

- :mod:`.grid`: moves, walls, the :class:`~.grid.Maze` itself and the geometry on it (the bottom layer);
- :mod:`.text`: the prompt and answer formats and the exact checker (imports :mod:`.grid`);
- :mod:`.instances`: task records, difficulties, subgoals (hints on the path), splits and files;
- :mod:`.methods`: the task per method: one solver (anchored ``infill`` for a FlexMDM, ``generate_mdm`` on
  a canvas for an MDM) and the table :data:`~.methods.MAZE_METHODS` the demo looks the method up in;
- :mod:`.evaluation`: resumable result rows and their summary;
- :mod:`.report`: the FlexMDM-vs-MDM report;
- :mod:`.demo`: the whole run (settings, pretraining the shipped MDM, the retrofit, the comparison).

Modules are imported by name (``from flexretrofit.maze.instances import MazeInstance``): the evaluation and
demo modules load the models and samplers, which the task files and the checker do not need.
"""
