"""Old import path of the evaluation's process layout: it is part of the command line,
:mod:`flexretrofit.evaluation.cli`."""

from flexretrofit.evaluation.cli import ProcessLayout, environment_info, process_layout

__all__ = ["ProcessLayout", "environment_info", "process_layout"]
