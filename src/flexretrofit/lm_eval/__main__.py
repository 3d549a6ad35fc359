"""``python -m flexretrofit.lm_eval ...``: lm-eval's command line with the ``flexmdm`` and ``llada_mdm`` models.

Takes exactly the arguments of ``lm_eval`` (``--model``, ``--model_args``, ``--tasks``, ``--include_path``,
``--limit``, ``--output_path``, ...). A bad model argument or checkpoint stops with one line and exit code 2,
before lm-eval reads its task files.
"""

from __future__ import annotations

import sys


def check_our_model_first() -> None:
    """Run the constructor checks of a ``flexmdm`` / ``llada_mdm`` model (arguments, config.json, tokenizer)
    before lm-eval starts: it indexes its thousands of task files (~15 s on 2 cores) before it builds the
    model, and a mistake should be one line before any slow work.

    The arguments are read with lm-eval's own parser and config, as its ``run`` command reads them; anything
    else (another command or model, a ``--config`` file, which lm-eval prints as it reads it, or arguments
    it refuses) is left to lm-eval.
    """
    from lm_eval._cli.harness import HarnessCLI
    from lm_eval.config.evaluate_config import EvaluatorConfig

    from flexretrofit.lm_eval.models import LM_MODELS

    args = HarnessCLI().parse_args()  # inserts the implied "run" into sys.argv, as lm-eval's own call does
    model_class = LM_MODELS.get(getattr(args, "model", None))
    if getattr(args, "command", None) != "run" or model_class is None or getattr(args, "config", None):
        return
    try:
        config = EvaluatorConfig.from_cli(args)
    except Exception:  # noqa: BLE001 - lm-eval reports its own errors when it parses again
        return
    # What lm-eval's simple_evaluate adds to the model arguments.
    extra = {
        "batch_size": config.batch_size,
        "max_batch_size": config.max_batch_size,
        "device": config.device,
    }
    model_class.check_model_args(**config.model_args, **{k: v for k, v in extra.items() if v is not None})


def main() -> None:
    try:
        import flexretrofit.lm_eval  # noqa: F401  (registers our models)
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    from lm_eval.__main__ import cli_evaluate

    from flexretrofit.lm_eval.models import LMEvalSetupError

    try:
        check_our_model_first()
        cli_evaluate()
    except (LMEvalSetupError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
