"""Native LLaDA backbone: loads the published ``GSAI-ML/LLaDA-8B-*`` weights without remote code.

LLaDA is a bidirectional Llama-3-style transformer trained as a masked diffusion model. The
module tree below reproduces the published state-dict keys exactly
(``model.transformer.wte.weight``, ``model.transformer.blocks.{i}.q_proj.weight``, ...,
``model.transformer.ff_out.weight``), so published checkpoints load with no renaming.

Additions over the published model, all off by default so the model *is* LLaDA:
- an optional boolean key-padding mask (``attention_mask``), so padded batches equal rows run alone;
- an optional per-block AdaLN modulation (``block_modulation``) applied to the outputs of
  ``attn_norm`` and ``ff_norm``, passed as an argument (no forward hooks) so it survives activation
  checkpointing. FlexMDM uses it for time conditioning;
- optional private positions (``private_positions``, one per row) whose key only their own query sees:
  FlexMDM's appended slot, computed as a separate one-query attention so the other queries keep a
  key-padding mask (or none) instead of a dense per-query mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from flexretrofit.models.checkpoint import (  # noqa: F401  (check_checkpoint_folder: public here too)
    LLADA_ARCHITECTURE_FIELDS,
    CheckpointKind,
    check_checkpoint_folder,
    raise_on_key_mismatch,
)
from flexretrofit.models.diffusion_mixin import DiffusionModelMixin
from flexretrofit.sampling.config import MDMGenerationConfig
from flexretrofit.sampling.mdm import generate_mdm
from flexretrofit.sampling.sequences import GenerationOutput, TokenRows

SUPPORTED_BLOCK_TYPES = ("llama",)
SUPPORTED_ACTIVATIONS = ("silu",)
SUPPORTED_NORMS = ("rms",)
# Published-config switches this implementation does not implement; each must hold the value shown.
_UNSUPPORTED_FEATURES = {
    "alibi": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "weight_tying": False,
    "scale_logits": False,
    "attention_layer_norm": False,
    "input_emb_norm": False,
    "multi_query_attention": None,
}
# Sizes that shape the weights; zero, negative or fractional ones only fail later, deep in torch.
_POSITIVE_SIZES = (
    "d_model",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "mlp_hidden_size",
    "vocab_size",
    "embedding_size",
    "max_sequence_length",
)
_SPECIAL_TOKEN_IDS = ("mask_token_id", "pad_token_id", "eos_token_id", "bos_token_id")


def check_positive_fields(config: object, integers: tuple[str, ...], numbers: tuple[str, ...] = ()) -> None:
    """Raise unless each field of ``integers`` is an int >= 1 and each of ``numbers`` a finite number > 0.

    The message names the config class and the field, and says where to fix it.
    """
    owner = type(config).__name__
    for name in integers:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"{owner}.{name}={value!r} must be a positive integer; fix it in config.json (or the argument)."
            )
    for name in numbers:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise ValueError(
                f"{owner}.{name}={value!r} must be a positive number; fix it in config.json (or the argument)."
            )


def check_token_id_field(owner: str, name: str, value: object, vocab_size: int) -> None:
    """Raise unless ``value`` (None, an id or a list of ids) lies in ``[0, vocab_size)``.

    transformers only logs a warning here; an id outside the vocabulary would end in an IndexError
    (or a silently wrong token) at the first forward pass, far from its cause.
    """
    values = value if isinstance(value, (list, tuple)) else [value]
    for token in values:
        if token is None:
            continue
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab_size:
            raise ValueError(
                f"{owner}.{name}={value!r} is not a token id of the vocabulary [0, {vocab_size}); set it to "
                "the id the model's tokenizer gives that token."
            )


class LLaDAConfig(PreTrainedConfig):
    """Configuration of a LLaDA backbone, with the field names of the published ``config.json``.

    The original config class defaults dropouts to 0.1; here they default to 0.0 as in the released
    checkpoints. Unknown published fields (``init_fn``, ``precision``, ...) are kept as attributes.
    """

    model_type = "llada"
    attribute_map = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layers",
        "num_attention_heads": "n_heads",
        "num_key_value_heads": "n_kv_heads",
        "intermediate_size": "mlp_hidden_size",
        "max_position_embeddings": "max_sequence_length",
    }

    d_model: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None
    mlp_hidden_size: int | None = 12288
    mlp_ratio: int | float = 4
    vocab_size: int = 126464
    embedding_size: int | None = 126464
    max_sequence_length: int = 4096
    rope: bool = True
    rope_theta: int | float = 500000.0
    block_type: str = "llama"
    activation_type: str = "silu"
    layer_norm_type: str = "rms"
    rms_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    residual_dropout: float = 0.0
    embedding_dropout: float = 0.0
    init_std: float = 0.02
    mask_token_id: int | None = 126336
    pad_token_id: int | None = 126081
    eos_token_id: int | None = 126081
    bos_token_id: int | None = None
    use_cache: bool = False
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.mlp_hidden_size is None:
            self.mlp_hidden_size = int(self.mlp_ratio * self.d_model)
        if self.embedding_size is None:
            self.embedding_size = self.vocab_size
        super().__post_init__(**kwargs)
        self._check_supported()

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def _check_supported(self) -> None:
        check_positive_fields(self, _POSITIVE_SIZES, ("rope_theta", "rms_norm_eps"))
        for name in _SPECIAL_TOKEN_IDS:
            check_token_id_field("LLaDAConfig", name, getattr(self, name), self.vocab_size)
        if self.block_type not in SUPPORTED_BLOCK_TYPES:
            raise ValueError(
                f"LLaDAConfig.block_type={self.block_type!r} is not supported; only {SUPPORTED_BLOCK_TYPES} "
                "(the block of the released LLaDA-8B checkpoints) is implemented."
            )
        if self.activation_type not in SUPPORTED_ACTIVATIONS:
            raise ValueError(
                f"LLaDAConfig.activation_type={self.activation_type!r} is not supported; use one of "
                f"{SUPPORTED_ACTIVATIONS} (SwiGLU with ff_proj as the gate)."
            )
        if self.layer_norm_type not in SUPPORTED_NORMS:
            raise ValueError(
                f"LLaDAConfig.layer_norm_type={self.layer_norm_type!r} is not supported; use {SUPPORTED_NORMS}."
            )
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; pick n_heads that divides it."
            )
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}.")
        if self.head_dim % 2 != 0:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings.")
        if not self.rope:
            raise ValueError(
                "LLaDAConfig.rope=False is not supported: LLaDA uses rotary position embeddings."
            )
        if self.embedding_size < self.vocab_size:
            raise ValueError(f"embedding_size={self.embedding_size} must be >= vocab_size={self.vocab_size}.")
        for name, required in _UNSUPPORTED_FEATURES.items():
            value = getattr(self, name, required)
            if value not in (required, None) or (required is False and value):
                raise ValueError(
                    f"LLaDAConfig.{name}={value!r} is not supported by this implementation (expected {required!r})."
                )


@dataclass
class LLaDAOutput(ModelOutput):
    """Output of :class:`LLaDAModelLM`.

    logits: ``[B, L, V]`` token logits, or ``None`` when ``compute_logits=False``.
    last_hidden_state: ``[B, L, d]`` final hidden state after ``ln_f``.
    """

    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


class LLaDARMSNorm(nn.Module):
    """RMSNorm computed in fp32, cast back to the input dtype, then scaled (weight only, no bias)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(
        self, x: torch.Tensor, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x ``[B, L, d]``; optional AdaLN ``scale`` / ``shift`` ``[B, 1, d]``: ``norm(x) * (1 + scale) + shift``."""
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        if scale is None:
            return self.weight * x.to(dtype)
        # The modulation folded into the weight ([B, 1, d]): one pass over [B, L, d] instead of three.
        return torch.addcmul(shift, x.to(dtype), self.weight * (1 + scale))


def rotary_cos_sin(
    seq_len: int, head_dim: int, theta: float, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """fp32 rotary tables, rotate-half layout. Returns cos, sin: ``[L, head_dim]``."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    positions = torch.arange(seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(positions, inv_freq)
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[B, H, L, hd]`` in fp32 and cast back to its dtype."""
    x32 = x.float()
    half = x32.shape[-1] // 2
    rotated = torch.cat((-x32[..., half:], x32[..., :half]), dim=-1)
    return (x32 * cos + rotated * sin).to(x.dtype)


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention. q: ``[B, H, L, hd]``, k/v: ``[B, Hkv, L, hd]``, boolean mask ``[B, 1, 1|L, L]``.

    Returns the output ``[B, L, H, hd]`` and the weights ``[B, H, L, L]``.
    """
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)
    value = value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        # finfo.min, not -inf: a fully masked row stays finite instead of NaN.
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


@dataclass(frozen=True)
class AttentionPattern:
    """Which keys each query attends to, in the form the attention kernels run fastest.

    Built by :func:`attention_pattern`. ``mask``: boolean ``[B, 1, 1|L, L]`` for every query, or None (all
    keys: SDPA's unmasked fast path). ``private``: ``[B]`` one private position per row, or None; no other
    query sees its key, and its own query sees ``private_mask`` ``[B, 1, 1, L]`` (the row's keys and itself).
    ``private_is_last``: every private position is the last one and no other key is masked, so the other
    queries run on the first ``L - 1`` positions with no mask and the private query alone on all ``L``.
    """

    mask: torch.Tensor | None = None
    private: torch.Tensor | None = None
    private_mask: torch.Tensor | None = None
    private_is_last: bool = False


def attention_pattern(
    attention_mask: torch.Tensor | None, private_positions: torch.Tensor | None, length: int
) -> AttentionPattern:
    """The cheapest :class:`AttentionPattern` equal to the dense per-query mask the arguments describe.

    attention_mask: ``[B, L]`` key padding (True = real), ``[B, L, L]`` per query, or None (all real);
    private_positions: ``[B]`` (with a key-padding mask or None only). The dense equivalent is
    ``keys[b, k] & (k != p_b) | (q == k == p_b)``. One host sync decides the fast paths.
    """
    if attention_mask is not None and attention_mask.dim() == 3:
        if private_positions is not None:
            raise ValueError(
                "private_positions needs a [B, L] key-padding attention_mask (or None), not [B, L, L]"
            )
        return AttentionPattern(mask=attention_mask.bool()[:, None])
    keys = None if attention_mask is None else attention_mask.bool()
    if private_positions is None:
        if keys is None or bool(keys.all()):
            return AttentionPattern()
        return AttentionPattern(mask=keys[:, None, None, :])
    private = private_positions.long()
    is_private = torch.arange(length, device=private.device)[None] == private[:, None]  # [B, L]
    others = ~is_private if keys is None else keys & ~is_private
    out_of_range, last, unpadded = torch.stack(
        [((private < 0) | (private >= length)).any(), (private == length - 1).all(), others[:, :-1].all()]
    ).tolist()
    if out_of_range:
        raise ValueError(f"private_positions must lie in [0, {length}), got {private.tolist()}")
    if last and unpadded:
        return AttentionPattern(private=private, private_is_last=True)
    return AttentionPattern(
        mask=others[:, None, None, :], private=private, private_mask=(others | is_private)[:, None, None, :]
    )


class LLaDABlock(GradientCheckpointingLayer):
    """One pre-norm LLaDA block; attribute names match the published keys (``blocks.{i}.q_proj`` ...)."""

    is_causal = False

    def __init__(self, config: LLaDAConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.n_heads // config.n_kv_heads
        self.scaling = self.head_dim**-0.5
        d, kv = config.d_model, config.n_kv_heads * config.head_dim
        self.attn_norm = LLaDARMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, kv, bias=False)
        self.v_proj = nn.Linear(d, kv, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_norm = LLaDARMSNorm(d, config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)  # gate (SiLU branch)
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=False)  # down projection
        self.residual_dropout = nn.Dropout(config.residual_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        attention: AttentionPattern | torch.Tensor | None = None,
        modulation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """hidden_states ``[B, L, d]``; attention an :class:`AttentionPattern` or a boolean mask ``[B, 1, 1|L, L]``;
        modulation ``[B, 4, d]`` = (attn scale, attn shift, ff scale, ff shift). Returns ``[B, L, d]``."""
        batch, length, _ = hidden_states.shape
        attn_mod = (None, None) if modulation is None else (modulation[:, 0, None], modulation[:, 1, None])
        h = self.attn_norm(hidden_states, *attn_mod)
        q = self.q_proj(h).view(batch, length, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(batch, length, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(batch, length, -1, self.head_dim).transpose(1, 2)
        cos, sin = rotary
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if not isinstance(attention, AttentionPattern):
            attention = AttentionPattern(mask=attention)
        attn = self._attend(q, k, v, attention)
        hidden_states = hidden_states + self.residual_dropout(self.attn_out(attn.reshape(batch, length, -1)))

        ff_mod = (None, None) if modulation is None else (modulation[:, 2, None], modulation[:, 3, None])
        h = self.ff_norm(hidden_states, *ff_mod)
        mlp = self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))
        return hidden_states + self.residual_dropout(mlp)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: AttentionPattern
    ) -> torch.Tensor:
        """q ``[B, H, L, hd]``, k/v ``[B, Hkv, L, hd]`` -> ``[B, L, H, hd]`` under ``pattern``.

        A private position costs one extra one-query call; every other query keeps the kernel a key-padding
        mask (or no mask) allows, instead of the slower path a dense per-query mask forces.
        """
        function: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention
        )
        options = dict(
            dropout=self.config.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            is_causal=False,
        )
        if pattern.private is None:
            return function(self, q, k, v, pattern.mask, **options)[0]
        if pattern.private_is_last:
            n = q.shape[2] - 1
            others = function(self, q[:, :, :n], k[:, :, :n], v[:, :, :n], None, **options)[0]
            private = function(self, q[:, :, n:], k, v, None, **options)[0]
            return torch.cat([others, private], dim=1)
        out = function(self, q, k, v, pattern.mask, **options)[0]  # private rows are replaced below
        batch, heads, _, head_dim = q.shape
        index = pattern.private.view(batch, 1, 1, 1)
        private_q = q.gather(2, index.expand(batch, heads, 1, head_dim))
        private = function(self, private_q, k, v, pattern.private_mask, **options)[0]  # [B, 1, H, hd]
        return out.scatter(1, index.expand(batch, 1, heads, head_dim), private)


class LLaDAModel(nn.Module):
    """The ``model`` submodule: holds ``transformer`` = {wte, blocks, ln_f, ff_out} as published.

    ``transformer.ff_out`` is the LM head; it lives here (as in the published layout) but is applied
    by :class:`LLaDAModelLM`, so callers can project only the positions they need.
    """

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.embedding_size, config.d_model),
                "blocks": nn.ModuleList(LLaDABlock(config, i) for i in range(config.n_layers)),
                "ln_f": LLaDARMSNorm(config.d_model, config.rms_norm_eps),
                "ff_out": nn.Linear(config.d_model, config.embedding_size, bias=False),
            }
        )
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        block_modulation: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        private_positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids ``[B, L]``; attention_mask ``[B, L]`` (1/True = real token) or a per-query boolean
        ``[B, L, L]``; block_modulation ``[B, n_layers, 4, d]``; private_positions ``[B]``: one position per
        row whose key only its own query sees (see :func:`attention_pattern`).
        Returns the final normed hidden state ``[B, L, d]``."""
        x = self.transformer.wte(input_ids) if inputs_embeds is None else inputs_embeds
        x = self.embedding_dropout(x)
        length = x.shape[1]
        if length > self.config.max_sequence_length:
            raise ValueError(
                f"sequence length {length} exceeds max_sequence_length={self.config.max_sequence_length}; "
                "shorten the input or raise the limit in the config."
            )
        rotary = rotary_cos_sin(length, self.config.head_dim, self.config.rope_theta, x.device)
        if attention_mask is not None:
            if attention_mask.shape[:2] != x.shape[:2] or attention_mask.dim() not in (2, 3):
                raise ValueError(
                    f"attention_mask must be [B, L] (key padding) or [B, L, L] (per query) for input "
                    f"{tuple(x.shape[:2])}, got {tuple(attention_mask.shape)}"
                )
        if private_positions is not None and private_positions.shape != x.shape[:1]:
            raise ValueError(
                f"private_positions must be [B]=({x.shape[0]},), got {tuple(private_positions.shape)}"
            )
        # Boolean masks, True = attend; never additive -inf (fully masked rows would turn NaN). No mask
        # at all when nothing is masked, so SDPA keeps its fastest kernel.
        pattern = attention_pattern(attention_mask, private_positions, length)
        if block_modulation is not None and block_modulation.shape[1] != self.config.n_layers:
            raise ValueError(
                f"block_modulation has {block_modulation.shape[1]} layers, the model has {self.config.n_layers}"
            )
        for i, block in enumerate(self.transformer.blocks):
            modulation = None if block_modulation is None else block_modulation[:, i]
            x = block(x, rotary, pattern, modulation)
        return self.transformer.ln_f(x)


class LLaDAPreTrainedModel(PreTrainedModel):
    config_class = LLaDAConfig
    config: LLaDAConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDABlock"]
    _supports_sdpa = True
    _supports_attention_backend = True


class LLaDAModelLM(DiffusionModelMixin, LLaDAPreTrainedModel):
    """LLaDA masked-diffusion language model (published class name, native implementation).

    ``from_pretrained`` accepts a hub id or a local folder with ``config.json`` and ``model.safetensors``
    (or shards plus ``model.safetensors.index.json``), checks it before loading and raises if any key is
    missing or unexpected (see :class:`~flexretrofit.models.diffusion_mixin.DiffusionModelMixin`).

    Example::

        model = LLaDAModelLM.from_pretrained("GSAI-ML/LLaDA-8B-Base", dtype=torch.bfloat16)
        logits = model(input_ids).logits              # [B, L, V]
        out = model.generate(input_ids, gen_length=64, steps=64)   # out.sequences: prompt + response
    """

    generation_config_class = MDMGenerationConfig
    architecture_name = "LLaDA"
    checkpoint_kind = CheckpointKind("llada", "LLaDAModelLM", LLADA_ARCHITECTURE_FIELDS)

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.model.transformer.ff_out

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.model.transformer.ff_out = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        block_modulation: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        compute_logits: bool = True,
        logits_positions: torch.Tensor | None = None,
        private_positions: torch.Tensor | None = None,
        **kwargs,
    ) -> LLaDAOutput:
        """input_ids ``[B, L]``; attention_mask ``[B, L]`` key-padding mask (None = all real, as published);
        block_modulation ``[B, n_layers, 4, d]`` (None = plain LLaDA); logits_positions ``[B, L]`` bool:
        project to the vocabulary only there (logits ``[N, V]`` in row-major order, as ``x[mask]``);
        private_positions ``[B]``: see :func:`attention_pattern` (None = none, as published).

        Returns :class:`LLaDAOutput` with logits ``[B, L, V]`` (or ``[N, V]``) and last_hidden_state ``[B, L, d]``.
        """
        if input_ids is None and inputs_embeds is None:
            raise ValueError("pass input_ids [B, L] (or inputs_embeds [B, L, d])")
        hidden = self.model(input_ids, attention_mask, block_modulation, inputs_embeds, private_positions)
        logits = None
        if logits_positions is not None:
            logits = self.get_output_embeddings()(hidden[logits_positions.bool()])
        elif compute_logits:
            logits = self.get_output_embeddings()(hidden)
        return LLaDAOutput(logits=logits, last_hidden_state=hidden)

    def generate(
        self,
        input_ids: TokenRows,
        attention_mask: torch.Tensor | None = None,
        generation_config: MDMGenerationConfig | None = None,
        **kwargs,
    ) -> GenerationOutput:
        """Fixed-length generation with LLaDA's sampler, :func:`flexretrofit.sampling.generate_mdm`.

        input_ids ``[B, L]`` (or a list of id lists, or a tokenizer's ``BatchEncoding``); attention_mask
        ``[B, L]``. Defaults come from ``self.generation_config`` (saved as generation_config.json);
        ``**kwargs`` override its fields for this call. Infilling: :func:`flexretrofit.sampling.infill_mdm`.
        """
        return generate_mdm(self, input_ids, attention_mask, generation_config, **kwargs)
