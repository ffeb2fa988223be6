"""Rollout throughput on one GPU, r1kit's paged engine beside transformers, in one process.

Workloads (DESIGN.md section 6): random-init Qwen2.5-0.5B / 1.5B shapes in bf16, 64 prompts x 8
samples, 128-token prompts, temperature 1.0, no stop token:
  uniform  512 new tokens per sample (forced)
  ragged   per-prompt lengths spread evenly over 64..2048 (continuous batching matters)
Engines: r1kit (cold = first call incl. Triton compile and CUDA-graph capture; warm = second),
transformers generate() with the default cache, and with a static cache + torch.compile (warm,
as ../shared/anchors/hf_static_compile.py runs it). Also: the memory roofline of each r1kit run,
weight sync (1.5B) and KV sleep/wake times.

    python bench/rollout.py --shapes 0.5B,1.5B --parts r1kit,hf,static,ragged,sync
Results merge into bench/results/rollout.json (one key per measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, StoppingCriteria

from r1kit.engine import SamplingParams
from r1kit.engine.paged import PagedEngine

SHAPES = {
    "0.5B": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
    ),
    "1.5B": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
    ),
}
P, G, PLEN, GEN = 64, 8, 128, 512
HBM = 4.8e12  # H200 datasheet bytes/s
PEAK = 790e12  # bf16 matmul FLOP/s measured on this machine kind (device KINDS.md)
OUT = Path(os.environ.get("R1KIT_BENCH_OUT", Path(__file__).parent / "results" / "rollout.json"))


def log(res: dict, key: str, val) -> None:
    res[key] = val
    print(key, json.dumps(val), flush=True)
    old = json.loads(OUT.read_text()) if OUT.exists() else {}
    OUT.write_text(json.dumps({**old, **res}, indent=1))


def make_model(shape: str, dtype=torch.bfloat16) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=151936,
        max_position_embeddings=32768,
        rope_theta=1e6,
        tie_word_embeddings=True,
        **SHAPES[shape],
    )
    m = Qwen2ForCausalLM(cfg).to("cuda", dtype).eval()
    m.config._attn_implementation = "sdpa"
    return m


def roofline_s(m, lens: list[int], plen: int) -> float:
    """Lower bound on decode time: per step, the larger of (all weights + each live sequence's
    KV + logits, at HBM bandwidth) and (its FLOPs at the measured bf16 matmul peak)."""
    c = m.config
    n_params = sum(p.numel() for p in m.parameters())
    d = c.hidden_size // c.num_attention_heads
    kv_tok = 2 * c.num_hidden_layers * c.num_key_value_heads * d * 2
    total = 0.0
    for t in range(max(lens)):
        live = sum(1 for n in lens if n > t)
        ctx = plen + t
        byts = n_params * 2 + live * ctx * kv_tok + live * c.vocab_size * 4
        flops = live * (2 * n_params + 4 * ctx * c.num_attention_heads * d * c.num_hidden_layers)
        total += max(byts / HBM, flops / PEAK)
    return total


def time_it(fn) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


def run_r1kit(res, shape, m, prompts, lens, tag):
    eng = PagedEngine(m, max_num_seqs=P * G, kv_memory=0.6, seed=0)
    sps = [SamplingParams(n=G, temperature=1.0, max_tokens=n) for n in lens]
    tokens = G * sum(lens)

    def gen():
        eng.generate(prompts, sps)

    cold = time_it(gen)
    warm = time_it(gen)
    roof = roofline_s(m, [n for n in lens for _ in range(G)], PLEN)
    log(
        res,
        f"{shape}.{tag}.r1kit",
        {
            "tok_per_s": round(tokens / warm),
            "s": round(warm, 2),
            "cold_s": round(cold, 2),
            "roofline_tok_per_s": round(tokens / roof),
            "roofline_fraction": round(roof / warm, 3),
            "kv_cache_GB": round(eng.runner.kv_bytes / 1e9, 1),
            "graphs": len(eng.runner.graphs),
            "peak_mem_GB": round(torch.cuda.max_memory_allocated() / 1e9, 1),
        },
    )
    if tag == "uniform":  # GPU time of one full-batch decode step vs the whole step
        graph, _ = eng.runner.graphs[P * G]
        n = 20
        gpu = time_it(lambda: [graph.replay() for _ in range(n)]) / n
        log(
            res,
            f"{shape}.{tag}.r1kit.decode_step_ms",
            {
                "graph_replay_ms": round(gpu * 1e3, 2),
                "whole_step_ms": round(warm / GEN * 1e3, 2),
            },
        )
    t0 = time.perf_counter()
    eng.sleep()
    t1 = time.perf_counter()
    eng.wake()
    t2 = time.perf_counter()
    log(res, f"{shape}.r1kit.sleep_wake_s", {"sleep": round(t1 - t0, 3), "wake": round(t2 - t1, 3)})
    eng.sleep()  # the caller's empty_cache() then returns the KV memory


class PerRowStop(StoppingCriteria):
    """Row i of the expanded batch is done after lens[i // G] new tokens (HF keeps computing
    finished rows until the longest one ends, which is the cost being measured)."""

    def __init__(self, lens: list[int], plen: int) -> None:
        self.lens = torch.tensor([n for n in lens for _ in range(G)], device="cuda")
        self.plen = plen

    def __call__(self, input_ids, scores, **kw):
        return (input_ids.shape[1] - self.plen) >= self.lens


def run_hf(res, shape, m, ids, lens, tag, static: bool):
    kw = dict(
        do_sample=True,
        temperature=1.0,
        num_return_sequences=G,
        pad_token_id=0,
        eos_token_id=None,
        max_new_tokens=max(lens),
    )
    if tag == "uniform":
        kw["min_new_tokens"] = GEN
    else:
        kw["stopping_criteria"] = [PerRowStop(lens, PLEN)]
    if static:
        kw["cache_implementation"] = "static"
    tokens = G * sum(lens)
    att = torch.ones_like(ids)
    gen = lambda: m.generate(input_ids=ids, attention_mask=att, **kw)  # noqa: E731
    with torch.no_grad():
        if static and tag == "ragged":  # compile on a short run with the same cache shape
            short = [PerRowStop([16] * len(lens), PLEN)]
            first = time_it(
                lambda: m.generate(
                    input_ids=ids, attention_mask=att, **{**kw, "stopping_criteria": short}
                )
            )
            warm = time_it(gen)
        else:
            first = time_it(gen)
            warm = time_it(gen) if static else first
    name = "hf_static_compile" if static else "hf_generate"
    log(
        res,
        f"{shape}.{tag}.{name}",
        {
            "tok_per_s": round(tokens / warm),
            "s": round(warm, 2),
            "first_s": round(first, 2),
        },
    )


def run_sync(res, shape):
    """Weight sync when the trainer keeps fp32 weights and the engine bf16 copies (the copy
    path), and when both share bf16 tensors (nothing to copy)."""
    m = make_model(shape, dtype=torch.float32)
    eng = PagedEngine(m, dtype=torch.bfloat16, kv_memory=1 << 30)
    eng.sync_weights()
    times = [time_it(eng.sync_weights) for _ in range(5)]
    n = sum(o.numel() for o, _ in eng.model._own.values())
    log(
        res,
        f"{shape}.weight_sync",
        {
            "copy_path_s": round(min(times), 4),
            "tensors": len(eng.model._own),
            "params_copied": n,
            "shared_path_tensors_copied": 0,
        },
    )
    del eng, m
    torch.cuda.empty_cache()


def profile_decode(m, prompts) -> None:
    """Kernel time split of one eager (graph-free) decode step at batch 512."""
    eng = PagedEngine(m, max_num_seqs=P * G, kv_memory=0.3, cuda_graphs=False, seed=0)
    sp = SamplingParams(n=G, temperature=1.0, max_tokens=64)
    for p in prompts:
        eng.add_request(p, sp)
    for _ in range(8):
        eng.step()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            eng.step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18), flush=True)
    while eng.has_work:
        eng.step()
    # Python-side cost of a graph-mode step (the GPU waits for it between replays)
    import cProfile
    import pstats

    eng = PagedEngine(m, max_num_seqs=P * G, kv_memory=0.3, seed=0)
    eng.generate(prompts, sp)
    for p in prompts:
        eng.add_request(p, sp)
    for _ in range(4):
        eng.step()
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(30):
        eng.step()
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(22)
    while eng.has_work:
        eng.step()


def main() -> None:
    global P
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="0.5B,1.5B")
    ap.add_argument("--parts", default="r1kit,hf,static,ragged,sync")
    ap.add_argument("--prompts", type=int, default=P, help="prompts per batch (x 8 samples)")
    a = ap.parse_args()
    P = a.prompts
    parts = a.parts.split(",")
    res: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "prompts": P}
    import transformers

    res["transformers"] = transformers.__version__
    rng = random.Random(0)
    ragged = [64 + round(i * (2048 - 64) / (P - 1)) for i in range(P)]
    rng.shuffle(ragged)
    for shape in a.shapes.split(","):
        m = make_model(shape)
        g = torch.Generator(device="cuda").manual_seed(1)
        ids = torch.randint(100, 150000, (P, PLEN), device="cuda", generator=g)
        prompts = ids.tolist()
        if "r1kit" in parts:
            run_r1kit(res, shape, m, prompts, [GEN] * P, "uniform")
            torch.cuda.empty_cache()
        if "profile" in parts:
            profile_decode(m, prompts)
        if "ragged" in parts:
            run_r1kit(res, shape, m, prompts, ragged, "ragged")
            torch.cuda.empty_cache()
        if "hf" in parts:
            run_hf(res, shape, m, ids, [GEN] * P, "uniform", static=False)
        if "static" in parts:
            run_hf(res, shape, m, ids, [GEN] * P, "uniform", static=True)
        if "ragged_static" in parts:
            run_hf(res, shape, m, ids, ragged, "ragged", static=True)
        if "ragged_hf" in parts:
            run_hf(res, shape, m, ids, ragged, "ragged", static=False)
        del m
        torch.cuda.empty_cache()
        if "sync" in parts and shape == "1.5B":
            run_sync(res, shape)


if __name__ == "__main__":
    main()
