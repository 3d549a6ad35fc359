"""lm-evaluation-harness adapter: importing this package registers the ``flexmdm`` and ``llada_mdm`` models.

    pip install 'flexretrofit[lm-eval]'
    python -m flexretrofit.lm_eval --model flexmdm --model_args pretrained=PATH,mc_num=128 --tasks TASKS
    python -m flexretrofit.lm_eval --model llada_mdm --model_args pretrained=GSAI-ML/LLaDA-8B-Base --tasks TASKS

``python -m flexretrofit.lm_eval`` is lm-eval's own command line (every flag of ``lm_eval``) with our
models registered. From Python, ``import flexretrofit.lm_eval`` before ``lm_eval.simple_evaluate(model="flexmdm",
...)``. See :mod:`flexretrofit.lm_eval.models` for the model arguments and
:mod:`flexretrofit.lm_eval.likelihood` for the ELBOs behind ``loglikelihood``.
"""

try:
    import lm_eval.models  # noqa: F401  (lm-eval's own models stay available next to ours)
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "flexretrofit.lm_eval needs lm-evaluation-harness: pip install 'flexretrofit[lm-eval]'"
    ) from error

from flexretrofit.lm_eval.likelihood import flexmdm_elbo, mdm_elbo
from flexretrofit.lm_eval.models import FlexMDMLM, LLaDAMDMLM, LMEvalSetupError

__all__ = ["FlexMDMLM", "LLaDAMDMLM", "LMEvalSetupError", "flexmdm_elbo", "mdm_elbo"]
