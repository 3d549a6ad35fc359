"""FlexMDM: a LLaDA backbone retrofitted to insert and unmask tokens (flexible-length masked diffusion).

Data flow of one forward pass (``B`` rows, ``L`` positions, ``d`` model width)::

    input_ids [B, L], attention_mask [B, L]     right-padded x_t (clean tokens and MASKs)
      -> append one slot position after each row's last token          [B, L+1]
    t [B] -> sinusoidal embedding -> MLP -> temb [B, d]
      -> AdaLN modulation, one Linear per group of blocks              [B, n_layers, 4, d]
    backbone(ids, mask, modulation) -> hidden [B, L+1, d]
      -> LM head at real (or requested) positions  -> logits [B, L, V] or [N, V]
      -> insertion head at every slot position     -> expected_gaps [B, L+1]

Slot ``i`` sits just before token ``i``; slot ``len_b`` (the appended position) sits after the last
token. The appended position attends to the whole row, but real tokens do not attend to it, so the
token logits depend only on ``x_t``: at initialisation (zero AdaLN) they equal the backbone's exactly.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import ModelOutput

from flexretrofit.diffusion.schedules import Schedule, build_schedule
from flexretrofit.models.checkpoint import LLADA_ARCHITECTURE_FIELDS, CheckpointKind
from flexretrofit.models.diffusion_mixin import DiffusionModelMixin
from flexretrofit.models.llada import (
    LLaDAConfig,
    LLaDAModelLM,
    check_positive_fields,
    check_token_id_field,
)
from flexretrofit.sampling.config import FlexGenerationConfig
from flexretrofit.sampling.flex import generate_flex, infill
from flexretrofit.sampling.sequences import GenerationOutput, TokenRows

DEFAULT_INSERTION_SCHEDULE = {"name": "geometric", "min": 10.0, "max": 0.01}
DEFAULT_UNMASK_SCHEDULE = {"name": "linear"}
INSERTION_HEAD_INPUTS = ("slot", "both_sides")


class FlexMDMConfig(PreTrainedConfig):
    """Configuration of :class:`FlexMDMForMaskedDiffusion`.

    The schedules live here so that the loss weights, the forward process and the sampler all read
    the same ones. Token ids default to the backbone's.

    Args:
        backbone_config: the LLaDA backbone's config (dict or :class:`LLaDAConfig`).
        insertion_schedule / unmask_schedule: specs for :func:`flexretrofit.diffusion.build_schedule`
            (defaults: geometric(10, 0.01) insertion, linear unmasking, as in the published retrofit).
        modulation_group_size: consecutive blocks sharing one AdaLN modulation layer (published: 8).
        time_embedding_dim: width of the sinusoidal time features (default: d_model).
        insertion_head_scale: fixed factor after the softplus of the insertion head.
        insertion_head_init: the gap the insertion head predicts for every slot at initialisation.
        insertion_head_input: what the insertion head reads for slot ``i``: ``"slot"`` (published: the hidden
            state at position ``i``, the token after the slot) or ``"both_sides"`` (the hidden states on either
            side of the slot, positions ``i - 1`` and ``i``, concatenated): a gap is a relation between the
            tokens around it, which the head then reads directly.
        insertion_head_time_conditioning: modulate the head's input features by the time embedding (the
            published head is; off by default, which keeps earlier checkpoints loading as they were).
        max_length: cap on the total sequence length (default: the backbone's limit minus the slot position).
        end_slot_token_id: token id placed at the appended slot position (default: eos).
    """

    model_type = "flexmdm"
    sub_configs_defaults = {"backbone_config": SubConfigSpec(config_class=LLaDAConfig)}

    backbone_config: dict | LLaDAConfig | None = None
    insertion_schedule: dict | None = None
    unmask_schedule: dict | None = None
    modulation_group_size: int = 8
    time_embedding_dim: int | None = None
    insertion_head_scale: float = 64.0
    insertion_head_init: float = 1.0
    insertion_head_input: str = "slot"
    insertion_head_time_conditioning: bool = False
    max_length: int | None = None
    mask_token_id: int | None = None
    pad_token_id: int | None = None
    eos_token_id: int | None = None
    end_slot_token_id: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        backbone = self.backbone_config
        self.insertion_schedule = build_schedule(
            self.insertion_schedule or DEFAULT_INSERTION_SCHEDULE
        ).to_dict()
        self.unmask_schedule = build_schedule(self.unmask_schedule or DEFAULT_UNMASK_SCHEDULE).to_dict()
        for name in ("mask_token_id", "pad_token_id", "eos_token_id"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(backbone, name))
        if self.mask_token_id is None or self.pad_token_id is None:
            raise ValueError(
                "FlexMDMConfig needs mask_token_id and pad_token_id (set them in the backbone config)."
            )
        if self.end_slot_token_id is None:
            self.end_slot_token_id = self.eos_token_id if self.eos_token_id is not None else self.pad_token_id
        for name in ("mask_token_id", "pad_token_id", "eos_token_id", "end_slot_token_id"):
            check_token_id_field("FlexMDMConfig", name, getattr(self, name), backbone.vocab_size)
        if self.time_embedding_dim is None:
            self.time_embedding_dim = backbone.d_model
        if self.max_length is None:
            self.max_length = backbone.max_sequence_length - 1
        # The insertion head is softplus(.) * scale, initialised to predict insertion_head_init: both must be > 0.
        check_positive_fields(
            self,
            ("max_length", "modulation_group_size", "time_embedding_dim"),
            ("insertion_head_scale", "insertion_head_init"),
        )
        if self.max_length + 1 > backbone.max_sequence_length:
            raise ValueError(
                f"max_length={self.max_length} leaves no room for the slot position within the backbone's "
                f"max_sequence_length={backbone.max_sequence_length}; use max_length <= {backbone.max_sequence_length - 1}."
            )
        if self.insertion_head_input not in INSERTION_HEAD_INPUTS:
            raise ValueError(
                f"insertion_head_input must be one of {INSERTION_HEAD_INPUTS}, got {self.insertion_head_input!r}."
            )
        if self.time_embedding_dim % 2:
            raise ValueError(f"time_embedding_dim must be even, got {self.time_embedding_dim}")

    @property
    def num_modulation_groups(self) -> int:
        return math.ceil(self.backbone_config.n_layers / self.modulation_group_size)


@dataclass
class FlexMDMOutput(ModelOutput):
    """Output of :class:`FlexMDMForMaskedDiffusion`.

    logits: ``[B, L, V]`` token logits at every position, or ``[N, V]`` at the ``logits_positions`` only.
    expected_gaps: ``[B, L+1]`` predicted number of missing tokens per slot (>= 0; 0 at invalid slots).
    last_hidden_state: ``[B, L+1, d]`` backbone output including the appended slot position.
    """

    logits: torch.Tensor | None = None
    expected_gaps: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


def sinusoidal_time_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (scaled by 1000, as for integer diffusion steps). t ``[B]`` -> ``[B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat((angles.cos(), angles.sin()), dim=-1)


class TimeEmbedding(nn.Module):
    """t ``[B]`` -> sinusoidal features -> Linear(dim, 4d) -> SiLU -> Linear(4d, d) -> ``[B, d]``."""

    def __init__(self, feature_dim: int, d_model: int):
        super().__init__()
        self.feature_dim = feature_dim
        self.mlp = nn.Sequential(
            nn.Linear(feature_dim, 4 * d_model), nn.SiLU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = sinusoidal_time_features(t, self.feature_dim)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class ZeroLinear(nn.Linear):
    """A Linear layer the model initialises to zero (weights and bias)."""


class AdaLNModulation(nn.Module):
    """Per-group (scale, shift) pairs for both norms of every block, from the time embedding.

    temb ``[B, d]`` -> ``[B, n_layers, 4, d]`` (attn scale, attn shift, ff scale, ff shift). Zero-initialised
    by the model, so a fresh retrofit is exactly its backbone.
    """

    def __init__(self, d_model: int, n_layers: int, group_size: int):
        super().__init__()
        self.n_layers, self.group_size = n_layers, group_size
        self.groups = nn.ModuleList(
            ZeroLinear(d_model, 4 * d_model) for _ in range(math.ceil(n_layers / group_size))
        )

    def forward(self, temb: torch.Tensor) -> torch.Tensor:
        h = F.silu(temb)
        per_group = torch.stack(
            [layer(h).unflatten(-1, (4, -1)) for layer in self.groups], dim=1
        )  # [B, G, 4, d]
        return per_group.repeat_interleave(self.group_size, dim=1)[:, : self.n_layers]


class GapOutput(nn.Linear):
    """Last layer of the insertion head; the model initialises it so every slot starts at the same gap."""


class InsertionHead(nn.Module):
    """Hidden states ``[B, L+1, d]`` -> expected gap per slot ``[B, L+1]`` (LayerNorm, MLP, softplus, scale).

    ``input="slot"`` reads position ``i`` for slot ``i``; ``"both_sides"`` reads positions ``i - 1`` and ``i``
    (zeros before position 0), each through its own LayerNorm, concatenated ``[B, L+1, 2d]``.
    ``time_conditioned``: the normalised features get a (scale, shift) from the time embedding ``[B, d]``
    (zero-initialised, so the head starts as the unconditioned one): how many tokens are still missing
    depends on t as much as on the tokens around the slot.
    """

    def __init__(self, d_model: int, scale: float, input: str = "slot", time_conditioned: bool = False):
        super().__init__()
        self.scale, self.input = scale, input
        self.norm = nn.LayerNorm(d_model)
        width = d_model
        if input == "both_sides":
            self.left_norm = nn.LayerNorm(d_model)
            width = 2 * d_model
        self.modulation = ZeroLinear(d_model, 2 * width) if time_conditioned else None
        self.proj = nn.Linear(width, d_model)
        self.out = GapOutput(d_model, 1)

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        features = self.norm(hidden)
        if self.input == "both_sides":
            left = self.left_norm(hidden)
            left = torch.cat([torch.zeros_like(left[:, :1]), left[:, :-1]], dim=1)  # position i - 1
            features = torch.cat([left, features], dim=-1)
        if self.modulation is not None:
            scale, shift = self.modulation(F.silu(temb)).to(features.dtype)[:, None].chunk(2, dim=-1)
            features = torch.addcmul(shift, features, 1 + scale)
        h = self.out(F.gelu(self.proj(features))).squeeze(-1)
        return self.scale * F.softplus(h.float())


class FlexMDMPreTrainedModel(PreTrainedModel):
    config_class = FlexMDMConfig
    config: FlexMDMConfig
    base_model_prefix = "flexmdm"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDABlock"]
    _supports_sdpa = True
    _supports_attention_backend = True
    # forward takes no **kwargs-style loss arguments; keeps HF Trainer from rescaling the loss.
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        # Children are initialised before their parents and flagged done, so match the leaf layers.
        if isinstance(module, ZeroLinear):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, GapOutput):
            # out.weight = 0 and softplus(bias) * scale = insertion_head_init for every slot.
            target = self.config.insertion_head_init / self.config.insertion_head_scale
            init.zeros_(module.weight)
            init.constant_(module.bias, math.log(math.expm1(target)))
        else:
            super()._init_weights(module)


class FlexMDMForMaskedDiffusion(DiffusionModelMixin, FlexMDMPreTrainedModel):
    """A LLaDA backbone with time conditioning and an insertion head: predicts tokens at MASK positions
    and the number of missing tokens in every slot.

    ``from_llada`` builds a fresh retrofit of a LLaDA checkpoint; ``from_pretrained`` loads a saved FlexMDM
    (checked first, see :class:`~flexretrofit.models.diffusion_mixin.DiffusionModelMixin`).

    Example::

        model = FlexMDMForMaskedDiffusion.from_llada("GSAI-ML/LLaDA-8B-Base", dtype=torch.bfloat16)
        out = model(x_t, t, attention_mask)       # out.logits [B, L, V], out.expected_gaps [B, L+1]
        generated = model.generate(prompt_ids, steps=128)   # generated.sequences: prompt + response
    """

    generation_config_class = FlexGenerationConfig
    architecture_name = "FlexMDM"
    # The schedules and the modulation grouping change what the weights mean; none may fall back to a default.
    checkpoint_kind = CheckpointKind(
        "flexmdm",
        "FlexMDMForMaskedDiffusion",
        ("insertion_schedule", "unmask_schedule", "modulation_group_size"),
        {"backbone_config": LLADA_ARCHITECTURE_FIELDS},
    )

    def __init__(self, config: FlexMDMConfig, backbone: LLaDAModelLM | None = None):
        super().__init__(config)
        bc = config.backbone_config
        if backbone is not None and bc._attn_implementation is None:
            # Building the composite config resets the shared sub-config's attention choice; restore it.
            bc._attn_implementation = backbone.config._attn_implementation = config._attn_implementation
        self.backbone = backbone if backbone is not None else LLaDAModelLM(bc)
        self.time_embedding = TimeEmbedding(config.time_embedding_dim, bc.d_model)
        self.adaln = AdaLNModulation(bc.d_model, bc.n_layers, config.modulation_group_size)
        self.insertion_head = InsertionHead(
            bc.d_model,
            config.insertion_head_scale,
            config.insertion_head_input,
            config.insertion_head_time_conditioning,
        )
        self.post_init()

    @property
    def insertion_schedule(self) -> Schedule:
        return build_schedule(self.config.insertion_schedule)

    @property
    def unmask_schedule(self) -> Schedule:
        return build_schedule(self.config.unmask_schedule)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.backbone.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Linear:
        return self.backbone.get_output_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor,
        t: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        logits_positions: torch.Tensor | None = None,
    ) -> FlexMDMOutput:
        """Predict tokens and slot gaps for a right-padded batch of ``x_t``.

        Args:
            input_ids: ``[B, L]`` tokens of x_t (clean or MASK), right-padded.
            t: ``[B]`` diffusion time in [0, 1] (0 = prompt only, 1 = clean), or a float for all rows.
            attention_mask: ``[B, L]`` 1/True at real tokens (right padding only). None = all real.
            logits_positions: ``[B, L]`` bool; if given, logits are computed only there (``[N, V]``,
                row-major order as ``x[mask]``), which avoids the full ``[B, L, V]`` projection.

        Returns:
            :class:`FlexMDMOutput` with ``logits``, ``expected_gaps [B, L+1]`` and ``last_hidden_state [B, L+1, d]``.
        """
        batch, length = input_ids.shape
        device = input_ids.device
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.bool, device=device)
        attention_mask = attention_mask.bool()
        if length > 1 and bool((attention_mask[:, 1:] & ~attention_mask[:, :-1]).any()):
            raise ValueError(
                "attention_mask must be right-padded (real tokens first, then padding) in every row"
            )
        if not torch.is_tensor(t):
            t = torch.full((batch,), float(t), device=device)
        if t.shape != (batch,):
            raise ValueError(f"t must have shape [B]=({batch},), got {tuple(t.shape)}")

        lengths = attention_mask.sum(dim=1)  # [B]
        positions = torch.arange(length + 1, device=device)
        ext_ids = torch.cat([input_ids, input_ids.new_full((batch, 1), self.config.pad_token_id)], dim=1)
        ext_ids = ext_ids.scatter(1, lengths[:, None], self.config.end_slot_token_id)
        slot_valid = positions[None] <= lengths[:, None]  # [B, L+1]: slots 0..len_b
        # Every query sees the real tokens; the end slot (position len_b) is private: only its own query
        # sees it, so real tokens never attend to it and their logits depend on x_t alone. As a dense
        # per-query mask [B, L+1, L+1] this would cost SDPA its fast kernels; a key-padding mask plus
        # one private query per row does not (no mask at all when no row is padded).
        key_is_token = torch.cat([attention_mask, attention_mask.new_zeros(batch, 1)], dim=1)

        temb = self.time_embedding(t)
        modulation = self.adaln(temb).to(self.backbone.dtype)  # [B, n_layers, 4, d]
        out = self.backbone(
            ext_ids,
            attention_mask=key_is_token,
            block_modulation=modulation,
            compute_logits=False,
            private_positions=lengths,
        )
        hidden = out.last_hidden_state  # [B, L+1, d]

        head = self.get_output_embeddings()
        if logits_positions is None:
            logits = head(hidden[:, :length])
        else:
            if logits_positions.shape != (batch, length):
                raise ValueError(
                    f"logits_positions must be [B, L]={batch, length}, got {tuple(logits_positions.shape)}"
                )
            logits = head(hidden[:, :length][logits_positions.bool()])
        expected_gaps = self.insertion_head(hidden, temb) * slot_valid
        return FlexMDMOutput(logits=logits, expected_gaps=expected_gaps, last_hidden_state=hidden)

    @classmethod
    def from_llada(
        cls,
        name_or_path: str | os.PathLike | LLaDAModelLM,
        flex_config: dict | None = None,
        dtype: torch.dtype | None = None,
        **load_kwargs,
    ) -> FlexMDMForMaskedDiffusion:
        """Build a fresh retrofit around a LLaDA checkpoint (hub id, local folder, or a loaded model).

        New modules (time embedding, AdaLN, insertion head) are initialised so that token logits equal the
        backbone's; ``flex_config`` overrides :class:`FlexMDMConfig` fields (schedules, group size, ...).
        """
        if isinstance(name_or_path, LLaDAModelLM):
            backbone = name_or_path if dtype is None else name_or_path.to(dtype)
        else:
            backbone = LLaDAModelLM.from_pretrained(name_or_path, dtype=dtype, **load_kwargs)
        config = FlexMDMConfig(backbone_config=backbone.config, **(flex_config or {}))
        model = cls(config, backbone=backbone)
        return model.to(backbone.dtype)

    def generate(
        self,
        input_ids: TokenRows,
        attention_mask: torch.Tensor | None = None,
        generation_config: FlexGenerationConfig | None = None,
        **kwargs,
    ) -> GenerationOutput:
        """Flexible-length generation, :func:`flexretrofit.sampling.generate_flex` (= :meth:`generate_flex`).

        input_ids ``[B, L]`` (or a list of id lists, or a tokenizer's ``BatchEncoding``); attention_mask
        ``[B, L]``. Defaults come from ``self.generation_config`` (saved as generation_config.json);
        ``**kwargs`` override its fields for this call. Infilling is :meth:`infill`.
        """
        return generate_flex(self, input_ids, attention_mask, generation_config, **kwargs)

    generate_flex = generate  # the sampler's own name, as in the README

    def infill(
        self,
        prefix_ids: TokenRows | None = None,
        suffix_ids: TokenRows | None = None,
        generation_config: FlexGenerationConfig | None = None,
        *,
        segments: list[list[list[int] | torch.Tensor]] | None = None,
        **kwargs,
    ) -> GenerationOutput:
        """Anchored infilling: ``infill(prefix_ids, suffix_ids)`` generates one middle per row;
        ``infill(segments=rows)`` keeps every segment of ``rows[b] = [seg_0, ..., seg_k]`` in place and in
        order and generates a gap of its own length between each consecutive pair (``out.middles[b]`` is
        ``[gap_1, ..., gap_k]``). See :func:`flexretrofit.sampling.infill`."""
        return infill(self, prefix_ids, suffix_ids, generation_config, segments=segments, **kwargs)
