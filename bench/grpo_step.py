"""One GRPO step on one GPU: r1kit beside TRL's GRPOTrainer, in one run, plus memory fits.

Workload (issue 4, DESIGN.md section 6): random-init Qwen2.5-0.5B shape in bf16, 64 prompts x
8 completions, 128-token prompts, 512 completion tokens forced (no stop token), β = 0, token-level
loss, one optimizer step per generation batch. TRL runs ../shared/anchors/trl_grpo_step.py
(copied to bench/anchors/) in a child process on the same GPU, so neither side holds the other's
memory. The r1kit step is the product's path: engine.generate -> rewards -> GRPOTrainer.update
(engine asleep) -> sync -> wake, as `r1kit zero` runs it.

    python bench/grpo_step.py --parts r1kit,trl,fit15,lora7

Parts:
  r1kit   0.5B step time by phase, update MFU (useful FLOPs / 989 TFLOP/s), peak memory, for the
          micro-batch / checkpointing / compile variants in --variants: "mb64" is the default
          (compiled update on CUDA), "+eager" turns compilation off (--no-compile-update),
          "+ckpt" adds activation checkpointing; eager variants run first (the compiled
          variants compile the shared model's layers in place)
  trl     TRL 1.16 GRPOTrainer on the same step (3 steps, HF generate, no vLLM)
  fit15   full-parameter update of the 1.5B shape on 512 completions of 4,096 tokens (+ 128
          prompt), activation checkpointing on, engine asleep beside it: time and peak memory
  lora7   LoRA (rank 64, all linear layers) GRPO step of the Qwen2.5-7B shape on the 0.5B
          workload: real rollout with the adapters merged into the engine, update, sync
Results merge into bench/results/grpo_step.json (R1KIT_BENCH_OUT overrides the file).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch
from shapes import SHAPES  # bench/shapes.py, beside this script
from transformers import Qwen2Config, Qwen2ForCausalLM

from r1kit.config import ZeroConfig
from r1kit.engine import SamplingParams
from r1kit.engine.paged import PagedEngine
from r1kit.rl.trainer import GRPOTrainer
from r1kit.sampling.rollout import Rollout
from r1kit.train import batch as batch_mod

P, G, PLEN, GEN = 64, 8, 128, 512
PEAK = 989e12  # H200 dense bf16 FLOP/s (datasheet), the MFU denominator DESIGN.md uses
OUT = Path(os.environ.get("R1KIT_BENCH_OUT", Path(__file__).parent / "results" / "grpo_step.json"))


def log(res: dict, key: str, val) -> None:
    res[key] = val
    print(key, json.dumps(val), flush=True)
    old = json.loads(OUT.read_text()) if OUT.exists() else {}
    OUT.write_text(json.dumps({**old, **res}, indent=1))


def make_model(shape: str) -> Qwen2ForCausalLM:
    """Random init directly on the GPU in bf16 (a 7B init on the CPU takes minutes)."""
    torch.manual_seed(0)
    cfg = Qwen2Config(max_position_embeddings=32768, rope_theta=1e6, **SHAPES[shape])
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        m = Qwen2ForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    m.config._attn_implementation = "sdpa"
    return m


def update_flops(m, lens: list[tuple[int, int]]) -> float:
    """Useful FLOPs of one forward+backward over (prompt, completion) pairs: 6 x non-embedding
    params x tokens, the LM head (6 x H x V) on completion positions only (that is all r1kit
    computes), and causal attention 6 x layers x d_model x T^2. Recomputation is not counted."""
    c = m.config
    emb = c.vocab_size * c.hidden_size
    body = sum(p.numel() for p in m.parameters()) - emb * (1 if c.tie_word_embeddings else 2)
    f = 0.0
    for p, n in lens:
        T = p + n
        f += 6 * body * T + 6 * emb * n + 6 * c.num_hidden_layers * c.hidden_size * T * T
    return f


def rollouts_from(outs, reward_mod: int = 7) -> list[Rollout]:
    """The engine's samples as scored rollouts; reward = (sum of ids) mod 7, a stand-in for a
    rule reward that varies within a group like TRL's len(completion) % 7 in the anchor."""
    rs = []
    for o in outs:
        for s in o.samples:
            r = Rollout({}, list(o.prompt_ids), s.token_ids, s.logprobs, "", s.finish_reason)
            r.reward = float(sum(s.token_ids) % reward_mod)
            rs.append(r)
    return rs


def synth_rollouts(n: int, plen: int, clen: int, seed: int = 0) -> list[Rollout]:
    g = random.Random(seed)
    out = []
    for i in range(n):
        p = [g.randrange(100, 150000) for _ in range(plen)]
        c = [g.randrange(100, 150000) for _ in range(clen)]
        r = Rollout({}, p, c, None, "", "length")
        r.reward = float(i % 3)
        out.append(r)
    return out


def sync() -> float:
    torch.cuda.synchronize()
    return time.perf_counter()


def trainer_for(m, cfg: ZeroConfig) -> GRPOTrainer:
    """The trainer `r1kit zero` builds for cfg."""
    s = cfg.sampling
    return GRPOTrainer(
        m, cfg.algo, cfg.optim, temperature=s.temperature, max_tokens=s.max_tokens, pad_id=0
    )


def grpo_steps(
    res, tag, m, engine, cfg: ZeroConfig, prompts, steps: int, update_ctx=contextlib.nullcontext
) -> None:
    trainer = trainer_for(m, cfg)
    sp = SamplingParams(n=G, temperature=1.0, max_tokens=GEN, logprobs=True)
    rows = []
    compile_s = None
    torch.cuda.reset_peak_memory_stats()
    for k in range(steps + 1):  # step 0 is warm-up (Triton compile, graph capture, allocator)
        t0 = sync()
        outs = engine.generate(prompts, sp)
        t1 = sync()
        rollouts = rollouts_from(outs)
        t2 = sync()
        engine.sleep()  # zero._update's phases, timed one by one
        t3 = sync()
        with update_ctx():
            upd = trainer.update(rollouts)
        t4 = sync()
        engine.sync_weights()
        engine.wake()
        t5 = sync()
        compile_s = upd.get("compile_s", compile_s)  # the first update's, once
        row = {
            "rollout_s": t1 - t0,
            "reward_s": t2 - t1,
            "sleep_s": t3 - t2,
            "update_s": t4 - t3,
            "sync_wake_s": t5 - t4,
            "step_s": t5 - t0,
        }
        if k:
            rows.append(row)
        print(tag, k, {a: round(b, 3) for a, b in row.items()}, flush=True)
    mean = {a: round(sum(r[a] for r in rows) / len(rows), 3) for a in rows[0]}
    lens = [(len(r.prompt_ids), len(r.completion_ids)) for r in rollouts]
    flops = update_flops(m, lens)
    ntok = sum(p + n for p, n in lens)
    log(
        res,
        f"r1kit.{tag}",
        {
            **mean,
            "steps_timed": len(rows),
            "rollout_tok_per_s": round(sum(n for _, n in lens) / mean["rollout_s"]),
            "update_tok_per_s": round(ntok / mean["update_s"]),
            "update_mfu": round(flops / mean["update_s"] / PEAK, 3),
            "peak_mem_GB": round(torch.cuda.max_memory_allocated() / 1e9, 1),
            "peak_reserved_GB": round(torch.cuda.max_memory_reserved() / 1e9, 1),
            "micro_batch": cfg.optim.micro_batch,
            "grad_checkpoint": cfg.optim.grad_checkpoint,
            "pack_tokens": cfg.optim.pack_tokens,
            "compile_update": trainer.compiled,
            "compile_s": compile_s,
        },
    )


@contextlib.contextmanager
def knobs(opts: list[str]):
    """A variant's settings that are not config fields, restored afterwards: chunkN (LM-head
    positions per chunk), keepG (GB of LM-head logits kept for backward), attn=B (SDPA backend
    of the update: flash, efficient, cudnn or math). Yields the update's context factory."""
    saved = {k: getattr(batch_mod, k) for k in ("LOGIT_CHUNK", "HEAD_KEEP_BYTES")}
    ctx = contextlib.nullcontext
    for o in opts[1:]:
        if o.startswith("chunk"):
            batch_mod.LOGIT_CHUNK = int(o.removeprefix("chunk"))
        elif o.startswith("keep"):
            batch_mod.HEAD_KEEP_BYTES = int(float(o.removeprefix("keep")) * 1e9)
        elif o.startswith("attn="):
            from torch.nn.attention import SDPBackend, sdpa_kernel

            name = o.removeprefix("attn=").upper()
            backend = getattr(SDPBackend, name if name == "MATH" else name + "_ATTENTION")
            ctx = functools.partial(sdpa_kernel, backend)
        elif o not in ("eager", "compile", "ckpt"):
            raise SystemExit(f"unknown variant option {o!r}")
    try:
        yield ctx
    finally:
        for k, v in saved.items():
            setattr(batch_mod, k, v)


def part_r1kit(res, variants: list[str], steps: int) -> None:
    m = make_model("0.5B")
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(100, 150000, (P, PLEN), generator=g).tolist()
    engine = PagedEngine(m, max_num_seqs=P * G, kv_memory=0.3, seed=0)
    # e.g. "mb64" (the default: compiled on CUDA), "mb64+eager", "mb32+ckpt"; eager first
    for v in sorted(variants, key=lambda v: "eager" not in v.split("+")):
        opts = v.split("+")
        compile_update = False if "eager" in opts else True if "compile" in opts else None
        mb = int(opts[0].removeprefix("mb"))
        cfg = ZeroConfig.of(
            group_size=G,
            prompts_per_step=P,
            max_new_tokens=GEN,
            lr=1e-6,
            beta=0.0,
            loss_agg="token",
            micro_batch=mb,
            temperature=1.0,
            grad_checkpoint="ckpt" in opts,
            compile_update=compile_update,
        )
        if "ckpt" in opts:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            m.gradient_checkpointing_disable()
        with knobs(opts) as update_ctx:
            grpo_steps(res, v, m, engine, cfg, prompts, steps, update_ctx)
    del engine, m
    torch.cuda.empty_cache()


def part_trl(res) -> None:
    env = {**os.environ, "OUT": "/tmp"}
    t = time.time()
    logf = OUT.with_name("trl_log.txt")  # TRL's own output, kept beside the results
    with logf.open("w") as f:
        p = subprocess.run(
            [sys.executable, str(Path(__file__).parent / "anchors" / "trl_grpo_step.py")],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    if p.returncode:
        log(res, "trl", {"error": logf.read_text()[-2000:]})
        return
    r = json.loads(Path("/tmp/trl_grpo.json").read_text())
    steady = r["step_s"][1:] or r["step_s"]
    r["mean_step_s_after_first"] = round(sum(steady) / len(steady), 2)
    r["wall_s"] = round(time.time() - t, 1)
    log(res, "trl", r)


def part_update_fit(res, shape: str, n: int, clen: int, mb: int, lora_rank: int = 0) -> None:
    """One full GRPO update of `n` completions of `clen` tokens (synthetic ids), the engine
    asleep beside the trainer as in a real step."""
    m = make_model(shape)
    if lora_rank:
        from r1kit.train.lora import add_lora

        m = add_lora(m, lora_rank)
    engine = PagedEngine(m, max_num_seqs=256, kv_memory=0.3, seed=0)
    engine.sleep()
    cfg = ZeroConfig.of(
        group_size=G,
        prompts_per_step=n // G,
        max_new_tokens=clen,
        lr=1e-6,
        micro_batch=mb,
        grad_checkpoint=True,
        lora_rank=lora_rank,
    )
    trainer = trainer_for(m, cfg)
    rollouts = synth_rollouts(n, PLEN, clen)
    torch.cuda.reset_peak_memory_stats()
    t0 = sync()
    trainer.update(rollouts)
    t1 = sync()
    engine.sync_weights()
    engine.wake()
    t2 = sync()
    lens = [(PLEN, clen)] * n
    log(
        res,
        f"fit.{shape}{'.lora' if lora_rank else ''}",
        {
            "completions": n,
            "completion_tokens": clen,
            "prompt_tokens": PLEN,
            "micro_batch": mb,
            "update_s": round(t1 - t0, 2),
            "sync_wake_s": round(t2 - t1, 2),
            "update_mfu": round(update_flops(m, lens) / (t1 - t0) / PEAK, 3)
            if not lora_rank
            else None,
            "peak_mem_GB": round(torch.cuda.max_memory_allocated() / 1e9, 1),
            "peak_reserved_GB": round(torch.cuda.max_memory_reserved() / 1e9, 1),
            "gpu_total_GB": round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1),
            "trainable_params": sum(p.numel() for p in m.parameters() if p.requires_grad),
        },
    )
    del engine, trainer, m
    torch.cuda.empty_cache()


def part_lora7(res, steps: int) -> None:
    """A real LoRA GRPO step of the 7B shape on the 0.5B workload."""
    from r1kit.train.lora import add_lora

    m = add_lora(make_model("7B"), 64)
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(100, 150000, (P, PLEN), generator=g).tolist()
    engine = PagedEngine(m, max_num_seqs=P * G, kv_memory=0.3, seed=0)
    cfg = ZeroConfig.of(
        group_size=G,
        prompts_per_step=P,
        max_new_tokens=GEN,
        lr=1e-5,
        micro_batch=16,
        grad_checkpoint=True,
        lora_rank=64,
    )
    grpo_steps(res, "lora7B", m, engine, cfg, prompts, steps)
    del engine, m
    torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="r1kit,trl,fit15,lora7")
    ap.add_argument("--variants", default="mb64,mb64+eager")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--fit-n", type=int, default=512)
    a = ap.parse_args()
    parts = a.parts.split(",")
    import transformers

    res = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "workload": f"{P} prompts x {G} completions, prompt {PLEN}, {GEN} new tokens forced",
    }
    if "r1kit" in parts:
        part_r1kit(res, a.variants.split(","), a.steps)
    if "fit15" in parts:
        part_update_fit(res, "1.5B", a.fit_n, 4096, mb=8)
    if "lora7" in parts:
        part_lora7(res, 1)
    if "trl" in parts:
        part_trl(res)


if __name__ == "__main__":
    main()
