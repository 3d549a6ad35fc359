"""``python -m flexretrofit.lm_eval ...``: lm-eval's command line with the ``flexmdm`` and ``llada_mdm`` models.

Takes exactly the arguments of ``lm_eval`` (``--model``, ``--model_args``, ``--tasks``, ``--include_path``,
``--limit``, ``--output_path``, ...). A bad model argument or checkpoint stops with one line and exit code 2.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        import flexretrofit.lm_eval  # noqa: F401  (registers our models)
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    from lm_eval.__main__ import cli_evaluate

    from flexretrofit.lm_eval.models import LMEvalSetupError

    try:
        cli_evaluate()
    except (LMEvalSetupError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
