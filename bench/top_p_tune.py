"""Launch shapes of the top-p threshold kernel (engine/triton_sample.py `triton_top_p`) at
128, 256 and 512 rows of near-flat logits (a random-init model's: top-p 0.95 keeps ~95% of
the 151,936 tokens), timed on the GPU, each checked against the default shape's thresholds.

    python bench/top_p_tune.py bench/results/top_p_tune_gpu.json

`programs`: programs per pass over the batch (rows x chunks of a row), `block`: entries a
program reads per iteration, `warps`: its warps. Prints the default and the five fastest per
batch; writes every row.
"""

from __future__ import annotations

import json
import sys

import torch

from r1kit.engine.triton_sample import triton_top_p

V = 151936


def timed(args: tuple, shape: tuple, reps: int = 20) -> float:
    """Mean ms of `triton_top_p(*args, *shape)` after one call (which compiles)."""
    triton_top_p(*args, *shape)
    torch.cuda.synchronize()
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
    ev[0].record()
    for _ in range(reps):
        triton_top_p(*args, *shape)
    ev[1].record()
    torch.cuda.synchronize()
    return ev[0].elapsed_time(ev[1]) / reps


def main() -> None:
    torch.manual_seed(0)
    res = []
    for B in (128, 256, 512):
        logits = (torch.randn(B, V, device="cuda") * 0.5).to(torch.bfloat16)
        inv_t = torch.full((B,), 1 / 0.6, device="cuda")
        tp = torch.full((B,), 0.95, device="cuda")
        mp = torch.zeros(B, device="cuda")
        args = (logits, inv_t, tp, mp)
        ref, _ = triton_top_p(*args, 1024, 256, 4)
        for programs in (1024, 2048, 4096, 8192):
            for block in (128, 256, 512, 1024):
                for warps in (2, 4, 8):
                    shape = (programs, block, warps)
                    th, _ = triton_top_p(*args, *shape)
                    ms = timed(args, shape)
                    same = bool((th == ref).all())
                    res.append(
                        dict(B=B, programs=programs, block=block, warps=warps, ms=ms, same=same)
                    )
        mine = [r for r in res if r["B"] == B]
        best = sorted(mine, key=lambda r: r["ms"])[:5]
        dflt = [r for r in mine if (r["programs"], r["block"], r["warps"]) == (1024, 256, 4)]
        print("B", B, "default", dflt, "best", best, flush=True)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
