"""Data-parallel SFT under torchrun (r1kit/dist.py): the sharded model and each rank's rows.

Every rank reads the same data and draws the same optimizer batches (same seed); each trains
on its share of a batch's rows: every W-th row of the length order, so ranks get similar token
counts. The loss is divided by the batch's assistant-token count over all ranks (every rank
holds the whole batch, so it needs no collective) and scaled by W before backward, because FSDP
averages gradients over ranks: the summed gradient is then the single-process one. In one
process all of this reduces to the plain loop over micro-batches of the length order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from r1kit import dist
from r1kit.modeling import load_model
from r1kit.rl.dp import _token_logprobs
from r1kit.sft.data import Encoded


def prepare(model):
    """Shard `model` in place under torchrun (FSDP2; bf16 compute on GPU); the decoder + LM-head
    call of rl.batch.token_logprobs becomes a method run under the root's FSDP hooks. A no-op in
    one process."""
    if dist.world() > 1:
        dist.shard(model, {"token_logprobs": _token_logprobs})
    return model


def unshard(model, spec: str | None, device: str):
    """A plain model with the sharded `model`'s weights on every rank (all ranks call this):
    the architecture loaded from `spec` (the run's starting model), then filled from the shards
    one all-gather per parameter."""
    full = load_model(spec, device=device).eval()
    dist.gather_weights(model, full)
    return full


def micro_batches(examples: Sequence[Encoded], micro_batch: int) -> list[tuple[list, float]]:
    """(rows, loss weight) for each forward/backward this rank runs on one optimizer batch.

    One process: consecutive `micro_batch` rows of the length order, weight 1 (as before).
    W ranks: this rank's rows split into dist.passes() micro-batches, weight W; a rank short of
    rows (a small last batch, or fewer rows than ranks) pads with passes of one row at weight 0,
    so every rank runs the same number of passes and FSDP's collectives line up."""
    order = sorted(examples, key=lambda e: len(e.prompt_ids) + len(e.completion_ids))
    W = dist.world()
    if W == 1:
        return [(order[i : i + micro_batch], 1.0) for i in range(0, len(order), micro_batch)]
    mine = order[dist.rank() :: W]
    n = dist.passes(len(order), micro_batch)
    size = max(1, math.ceil(len(mine) / n))
    out = [(mine[i : i + size], float(W)) for i in range(0, len(mine), size)]
    return out + [(order[:1], 0.0)] * (n - len(out))
