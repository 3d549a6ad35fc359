"""Old import path of the evaluation's model checks and loading: they are part of the command line,
:mod:`flexretrofit.evaluation.cli`."""

from flexretrofit.evaluation.cli import MODEL_TYPES, check_model, load_eval_tokenizer, load_model

__all__ = ["MODEL_TYPES", "check_model", "load_eval_tokenizer", "load_model"]
