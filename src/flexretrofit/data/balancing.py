"""Cost-balanced micro-batches: regroup a noised global batch so that every forward pass costs about the same.

A FlexMDM row runs on its ``x_t``, which is short at small ``t`` and close to the clean length at ``t`` near 1.
With a fixed row count per micro-batch, the micro-batch that holds the largest times is the widest, and in a
synchronous data-parallel step every GPU waits for it. Balancing keeps the noise exactly as the fixed layout
draws it (each slot's collator noises its rows as before) and only moves the noised rows:

1. :func:`split_rows` cuts every noised micro-batch into rows, each trimmed to its own ``x_t`` width;
2. :func:`balanced_groups` sorts the rows by width and cuts them into as many groups as there are micro-batch
   slots (processes x accumulation steps), contiguous in width order so a group pads little, with the
   largest group cost as small as possible and no group above a token cap; single rows then move off the
   costliest group where that lowers it;
3. :func:`assign_groups` gives each process the same number of groups, in rounds of similar cost;
4. :func:`collate_rows` pads a group back into a micro-batch of the collator's format.

The step's gradient does not change: the loss is a sum over rows divided by the global loss-token count, so
which rows share a forward pass does not matter (up to float rounding of different matmul shapes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from flexretrofit.utils import check_rank

# Fields of a noised micro-batch (FlexMDMCollator / MDMCollator) by how they are laid out.
_PER_ROW = ("t", "non_prompt_lengths")  # [B]
_PER_POSITION = {"xt": None, "xt_attention_mask": False, "logits_positions": False}  # [B, L], pad value
_PER_SLOT = {"slot_gaps": 0, "slot_valid": False}  # [B, L + 1], pad value
_PER_MASK = ("masked_targets", "masked_weights")  # [N], ordered like masked_row


def backbone_matmul_params(config) -> tuple[int, int]:
    """(matmul weights every token goes through in the blocks, LM-head weights) of a LLaDA config.

    Per block: q, k, v, attn_out (``d x d`` each, k/v ``d x kv``) and the SwiGLU MLP (``3 x d x mlp``).
    The embedding is a lookup (no FLOPs); norms and rotary are elementwise (not counted).
    """
    d, mlp, kv = config.d_model, config.mlp_hidden_size, config.n_kv_heads * config.head_dim
    per_block = 2 * d * d + 2 * d * kv + 3 * d * mlp
    return config.n_layers * per_block, config.embedding_size * d


@dataclass(frozen=True)
class MicroBatchCost:
    """Relative cost of a forward + backward over ``rows`` rows padded to ``width`` positions, ``masked`` of
    them MASKs that get logits: ``rows * width * (1 + width / attention_width) + masked * head_per_mask``.

    The linear layers cost ``4 P`` per position and attention ``12 n d W`` (``P`` block matmul weights,
    ``n`` layers, width ``d``; ``benchmarks/common.py`` has the full count), so attention matches the linear
    layers at ``attention_width = P / (3 n d)`` positions (about 16k for LLaDA-8B); the LM head, run at MASK
    positions only, costs ``head_per_mask = P_head / P`` of a position (about 0.08).
    """

    attention_width: float
    head_per_mask: float = 0.0

    def __call__(self, rows: int, width: int, masked: int = 0) -> float:
        return rows * width * (1.0 + width / self.attention_width) + masked * self.head_per_mask

    @classmethod
    def for_model(cls, config) -> MicroBatchCost:
        """The cost model of a LLaDA backbone's config (a FlexMDM's ``config.backbone_config`` or a LLaDA
        config)."""
        backbone = getattr(config, "backbone_config", None) or config
        blocks, head = backbone_matmul_params(backbone)
        return cls(
            attention_width=blocks / (3 * backbone.n_layers * backbone.d_model), head_per_mask=head / blocks
        )


def row_widths(batch: Mapping[str, Tensor]) -> list[int]:
    """Each row's ``x_t`` width (real positions of ``xt_attention_mask``), ``[B]`` as a list."""
    return batch["xt_attention_mask"].sum(dim=1).tolist()


def split_rows(batch: Mapping[str, Tensor]) -> list[dict[str, Tensor]]:
    """One dict per row of a noised micro-batch, trimmed to the row's own width ``w``: ``xt`` ``[w]``,
    ``slot_gaps`` ``[w + 1]``, ``t`` ``[]``, ``masked_targets`` ``[n]`` (the row's MASKs in position order)."""
    masked_row = batch["masked_row"]
    rows = []
    for b, width in enumerate(row_widths(batch)):
        row: dict[str, Tensor] = {}
        for name in _PER_ROW:
            row[name] = batch[name][b]
        for name in _PER_POSITION:
            row[name] = batch[name][b, :width]
        for name in _PER_SLOT:
            if name in batch:
                row[name] = batch[name][b, : width + 1]
        mine = masked_row == b
        for name in _PER_MASK:
            if name in batch:
                row[name] = batch[name][mine]
        rows.append(row)
    return rows


def collate_rows(rows: Sequence[Mapping[str, Tensor]], pad_token_id: int) -> dict[str, Tensor]:
    """Rows from :func:`split_rows` -> a micro-batch in the collator's format, padded to the widest row
    (at least 1 position, as the collator pads); ``masked_row`` renumbered, ``num_loss_tokens`` summed."""
    if not rows:
        raise ValueError("cannot collate an empty group of rows.")
    width = max(1, max(len(row["xt"]) for row in rows))
    batch: dict[str, Tensor] = {name: torch.stack([row[name] for row in rows]) for name in _PER_ROW}
    pads = {**_PER_POSITION, "xt": pad_token_id, **_PER_SLOT}
    for name, pad in pads.items():
        if name not in rows[0]:
            continue
        extra = 1 if name in _PER_SLOT else 0
        first = rows[0][name]
        out = torch.full((len(rows), width + extra), pad, dtype=first.dtype, device=first.device)
        for b, row in enumerate(rows):
            out[b, : len(row[name])] = row[name]
        batch[name] = out
    for name in _PER_MASK:
        if name in rows[0]:
            batch[name] = torch.cat([row[name] for row in rows])
    counts = torch.tensor([len(row["masked_targets"]) for row in rows])
    batch["masked_row"] = torch.repeat_interleave(torch.arange(len(rows)), counts).to(batch["xt"].device)
    batch["num_loss_tokens"] = batch["non_prompt_lengths"].sum()
    return batch


def balanced_groups(
    widths: Sequence[int],
    num_groups: int,
    cost: MicroBatchCost,
    max_tokens: int | None = None,
    masked: Sequence[int] | None = None,
) -> list[list[int]]:
    """Cut rows into ``num_groups`` non-empty groups of similar cost; returns row indices per group.

    Rows are sorted by width (widest first) and cut into contiguous runs, so rows of similar width share a
    forward pass. The largest group cost is minimised by bisection over a cost cap (the greedy cut is
    optimal for a given cap), then lowered further by moving single rows out of the costliest group;
    ``max_tokens`` caps ``rows x padded width`` of every group (peak memory).
    A row's forward width is its ``x_t`` width + 1 (the insertion slot after the last token); ``masked``
    gives each row's MASK count (logits positions), 0 if not given.

    Raises:
        ValueError: fewer rows than groups, a row wider than ``max_tokens``, or rows that need more than
            ``num_groups`` groups under ``max_tokens``.
    """
    if len(widths) < num_groups:
        raise ValueError(f"{len(widths)} rows cannot fill {num_groups} micro-batches; each needs one row.")
    order = sorted(range(len(widths)), key=lambda i: (-widths[i], i))
    forward = [widths[i] + 1 for i in order]
    masks = [0 if masked is None else masked[i] for i in order]
    if max_tokens is not None and forward[0] > max_tokens:
        raise ValueError(
            f"a row is {forward[0]} positions wide, above the micro-batch token cap of {max_tokens}; raise "
            "data.max_tokens_per_micro_batch to at least the longest sample + 1, or turn data.balance off."
        )

    def cut(cap: float) -> list[list[int]] | None:
        groups: list[list[int]] = []
        for position in range(len(forward)):
            group = groups[-1] if groups else None
            # Rows come widest first, so a group's padded width is that of its first row.
            if group is not None:
                rows, group_width = len(group) + 1, forward[group[0]]
                group_masks = sum(masks[p] for p in group) + masks[position]
                fits = cost(rows, group_width, group_masks) <= cap and (
                    max_tokens is None or rows * group_width <= max_tokens
                )
                if fits:
                    group.append(position)
                    continue
            if len(groups) == num_groups:
                return None
            groups.append([position])
        return groups

    def group_cost(group: list[int]) -> float:  # positions index the widest-first order
        return cost(len(group), forward[min(group)], sum(masks[p] for p in group))

    low = max(group_cost([p]) for p in range(len(forward)))  # no group is cheaper than its costliest row
    high = group_cost(list(range(len(forward))))  # one group: feasible unless the token cap forbids
    if cut(high) is None:
        raise ValueError(
            f"{len(forward)} rows do not fit into {num_groups} micro-batches of at most {max_tokens} tokens; "
            "raise data.max_tokens_per_micro_batch or turn data.balance off."
        )
    for _ in range(60):
        middle = (low + high) / 2
        if cut(middle) is None:
            low = middle
        else:
            high = middle
    groups = cut(high)
    assert groups is not None  # high is always feasible
    while len(groups) < num_groups:  # split the costliest group that has two rows (cheaper halves)
        splittable = [g for g in groups if len(g) > 1]
        largest = max(splittable, key=group_cost)
        index = groups.index(largest)
        half = len(largest) // 2
        groups[index : index + 1] = [largest[:half], largest[half:]]
    _move_rows_off_the_costliest(groups, group_cost, forward, max_tokens)
    return [[order[position] for position in sorted(group)] for group in groups]


def _move_rows_off_the_costliest(groups, group_cost, forward, max_tokens) -> None:
    """Local search after the contiguous cut: move one row at a time out of the costliest group into
    another group that stays below it (a short row often fits a wider group's slack), while that lowers
    the maximum. Contiguous cuts lose up to one row's cost to rounding; this wins most of it back."""
    for _ in range(4 * sum(map(len, groups))):
        costs = [group_cost(g) for g in groups]
        worst = max(range(len(groups)), key=costs.__getitem__)
        if len(groups[worst]) == 1:
            return
        best = None
        for row in groups[worst]:
            rest = [p for p in groups[worst] if p != row]
            for target, group in enumerate(groups):
                if target == worst:
                    continue
                grown = group + [row]
                if max_tokens is not None and len(grown) * forward[min(grown)] > max_tokens:
                    continue
                peak = max(group_cost(rest), group_cost(grown))
                if peak < costs[worst] and (best is None or peak < best[0]):
                    best = (peak, row, target)
        if best is None:
            return
        _, row, target = best
        groups[worst].remove(row)
        groups[target].append(row)


def balance_micro_batches(
    micro_batches: Sequence[Mapping[str, Tensor]],
    num_processes: int,
    rank: int,
    cost: MicroBatchCost,
    max_tokens: int | None,
    pad_token_id: int,
) -> tuple[list[dict[str, Tensor]], list[int]]:
    """The whole pipeline: every slot's noised micro-batch of a global batch (slot order) -> this process's
    ``len(micro_batches) / num_processes`` balanced micro-batches, and the global row indices they hold
    (row ``i`` is row ``i % B`` of slot ``i // B`` for slots of ``B`` rows)."""
    check_rank(rank, num_processes)
    rows = [row for batch in micro_batches for row in split_rows(batch)]
    widths = [len(row["xt"]) for row in rows]
    masked = [len(row["masked_targets"]) for row in rows]
    groups = balanced_groups(widths, len(micro_batches), cost, max_tokens, masked)
    costs = [cost(len(g), 1 + max(widths[i] for i in g), sum(masked[i] for i in g)) for g in groups]
    mine = [groups[g] for g in assign_groups(costs, num_processes)[rank]]
    return [collate_rows([rows[i] for i in group], pad_token_id) for group in mine], [
        i for g in mine for i in g
    ]


def assign_groups(group_costs: Sequence[float], num_processes: int) -> list[list[int]]:
    """Group indices per process, ``len(group_costs) / num_processes`` each, in rounds of similar cost.

    Groups are dealt costliest first, one per process per round, alternating direction every round
    (1..P, P..1, ...), so the processes' totals stay close (what a DDP step waits for) and each round's
    micro-batches are alike (what ZeRO-3, which gathers weights in every forward, waits for).
    """
    if len(group_costs) % num_processes:
        raise ValueError(f"{len(group_costs)} groups do not split evenly over {num_processes} processes.")
    order = sorted(range(len(group_costs)), key=lambda g: (-group_costs[g], g))
    per_process: list[list[int]] = [[] for _ in range(num_processes)]
    for start in range(0, len(order), num_processes):
        dealt = order[start : start + num_processes]
        if (start // num_processes) % 2:
            dealt = dealt[::-1]
        for process, group in enumerate(dealt):
            per_process[process].append(group)
    return per_process
