"""Where a decode step of the paged engine spends its time at small batches (GPU): the CUDA-graph
forward, the sampler (top-p as the server samples: T=0.6, top-p 0.95) and the host's work, at
1, 128 and 256 sequences of the random-init Qwen2.5-0.5B shape (bench/serve_load.py's model).

    python bench/decode_profile.py --out bench/results/decode_profile_gpu.json

`sampler_before` is the sampler as it was (top-p cut-offs from a top-256 prefilter, a full sort
of the rows whose nucleus reaches past it, one host sync to find them), `sampler_after` the
sort-free Triton threshold; both on the same logits. `step_ms` is the engine's steady-state
wall time per decode step with each, `tokens_per_s` the rows over it. `threshold_agreement`
compares the new cut-offs with the sort-based ones on those logits (kept-token counts).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import model_here  # noqa: E402

from r1kit.engine import SamplingParams, paged  # noqa: E402
from r1kit.engine.paged import PagedEngine  # noqa: E402
from r1kit.engine.sampler import (  # noqa: E402
    fused_thresholds,
    row_keys,
    sample,
    thresholds,
)
from r1kit.engine.triton_sample import triton_sample, triton_top_p  # noqa: E402


def sample_before(logits, rows):
    """The sampler before the sort-free threshold (sampler.sample at commit 9d66a2e)."""
    greedy = rows.temperature <= 0
    inv_t = torch.where(greedy, 1.0, 1.0 / rows.temperature.clamp(min=1e-6))
    noise = (~greedy).float()
    keys = row_keys(rows.seeds, rows.steps)
    th = torch.full_like(inv_t, float("-inf"))
    if rows.filtered:
        th = thresholds(logits.float() * inv_t[:, None], rows)
    return triton_sample(logits, inv_t, noise, th, keys)


def cuda_ms(fn, n: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / n


def running(eng: PagedEngine, n: int) -> None:
    """n requests admitted and prefilled, decoding (max_tokens far away)."""
    for i in range(n):
        sp = SamplingParams(temperature=0.6, top_p=0.95, max_tokens=4000, seed=i)
        eng.add_request([1 + (i * 7 + j) % 1000 for j in range(24)], sp)
    while eng.scheduler.waiting or any(not s.num_output for s in eng.scheduler.running):
        eng.step()


def steady(eng: PagedEngine, steps: int = 60) -> float:
    for _ in range(5):
        eng.step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        eng.step()
    eng.flush()
    return (time.perf_counter() - t0) / steps * 1e3


def profile_table(eng: PagedEngine, steps: int = 10) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            eng.step()
        eng.flush()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        rows.append(
            {
                "name": e.key[:60],
                "calls": e.count,
                "cpu_ms": round(e.self_cpu_time_total / 1e3 / steps, 3),
                "cuda_ms": round(getattr(e, "self_device_time_total", 0) / 1e3 / steps, 3),
            }
        )
    top_cuda = sorted(rows, key=lambda r: -r["cuda_ms"])[:14]
    top_cpu = sorted(rows, key=lambda r: -r["cpu_ms"])[:14]
    return {"per_step_top_cuda": top_cuda, "per_step_top_cpu": top_cpu}


def measure(eng: PagedEngine, n: int) -> dict:
    running(eng, n)
    eng.flush()
    seqs = list(eng.scheduler.running)
    r: dict = {"seqs": n}
    # the pieces, alone, on the device (no host in between)
    logits = eng.runner.decode(seqs)
    rows = eng._sampling_rows(seqs, decode=False, device=logits.device)
    r["forward_graph_ms"] = round(cuda_ms(lambda: eng.runner.decode(seqs)), 3)
    r["sampler_before_ms"] = round(cuda_ms(lambda: sample_before(logits, rows)), 3)
    r["sampler_after_ms"] = round(cuda_ms(lambda: sample(logits, rows)), 3)
    inv = 1.0 / rows.temperature
    r["top_p_kernel_ms"] = round(
        cuda_ms(lambda: triton_top_p(logits, inv, rows.top_p, rows.min_p)), 3
    )
    inv_t = 1.0 / rows.temperature
    x = logits.float() * inv_t[:, None]
    kept_new = (x >= fused_thresholds(logits, inv_t, rows)[:, None]).sum(-1)
    kept_ref = (x >= thresholds(x, rows)[:, None]).sum(-1)
    r["threshold_agreement"] = {
        "rows_equal": int((kept_new == kept_ref).sum()),
        "rows": n,
        "max_kept_diff": int((kept_new - kept_ref).abs().max()),
        "mean_kept": round(float(kept_ref.float().mean()), 1),
    }
    # the engine, stepping (pipelined decode, host bookkeeping included)
    paged.sample = sample_before
    r["step_ms_before"] = round(steady(eng), 3)
    paged.sample = sample
    r["step_ms_after"] = round(steady(eng), 3)
    r["tokens_per_s_before"] = round(n / r["step_ms_before"] * 1e3, 1)
    r["tokens_per_s_after"] = round(n / r["step_ms_after"] * 1e3, 1)
    r["profile_after"] = profile_table(eng)
    for rid in list(eng.requests):
        eng.abort(rid)
    eng.flush()
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent / "results/decode_profile_gpu.json"))
    ap.add_argument("--levels", default="1,128,256")
    a = ap.parse_args()
    model, _, name = model_here("0.5B", "cuda", decode_all=False)
    res = {
        "model": name,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "levels": [],
    }
    eng = PagedEngine(model)
    eng.warm_up()
    for n in [int(x) for x in a.levels.split(",")]:
        r = measure(eng, n)
        print(json.dumps({k: v for k, v in r.items() if k != "profile_after"}), flush=True)
        for k in ("per_step_top_cuda", "per_step_top_cpu"):
            for row in r["profile_after"][k][:8]:
                print("  ", k[9:], row, flush=True)
        res["levels"].append(r)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
