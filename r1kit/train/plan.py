"""One micro-batch plan for every trainer: which rows of an optimizer batch this rank runs in
each forward/backward pass, and with what loss weight.

One process: consecutive `micro_batch` rows of the length order (each micro-batch pads only to
its own longest row), weight 1. W ranks (torchrun): rank r takes every W-th row of the length
order (similar token counts per rank), split into dist.passes() micro-batches, weight W because
FSDP averages gradients over ranks (the summed gradient is then the single-process one); a rank
short of rows pads with passes over one row at weight 0, so every rank runs the same number of
passes and FSDP's collectives line up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

from r1kit import dist

T = TypeVar("T")


def micro_batches(
    rows: Sequence[T], micro_batch: int, length: Callable[[T], int]
) -> list[tuple[list[T], float]]:
    """(rows, loss weight) for each forward/backward this rank runs on one optimizer batch."""
    order = sorted(rows, key=length)
    W = dist.world()
    if W == 1:
        return [(order[i : i + micro_batch], 1.0) for i in range(0, len(order), micro_batch)]
    mine = order[dist.rank() :: W]
    n = dist.passes(len(order), micro_batch)
    size = max(1, math.ceil(len(mine) / n))
    out = [(mine[i : i + size], float(W)) for i in range(0, len(mine), size)]
    return out + [(order[:1], 0.0)] * (n - len(out))
