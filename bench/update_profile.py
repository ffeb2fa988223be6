"""Where the GRPO update's time goes: bench/grpo_step.py's update under torch.profiler.

The update of one GRPO step (0.5B shape, random init, bf16; 64 prompts x 8 completions, prompt
128, 512 completion tokens: N=512 rows of T=640) runs as `GRPOTrainer.update` runs it in
`r1kit zero`, once per variant: a first (warm-up, compile) update, `--steps` timed updates, then
one update under torch.profiler. The profiled update's device time is grouped by what each
kernel does (the kernel's name and the CPU ops that launched it):

  matmul      cuBLAS/CUTLASS GEMMs of the decoder (projections, MLP)
  lm_head     every kernel launched by an op whose inputs have the vocabulary dimension
              (the LM-head GEMMs forward, recompute and backward, the fp32 log-sum-exp and its
              gradient), the embedding's backward excepted
  attention   SDPA kernels (flash, memory-efficient, cuDNN, math)
  embedding   the token embedding and its gradient (index/scatter over [vocab, hidden])
  optimizer   grad-norm clipping, the non-finite checks and fused AdamW
  elementwise everything else (norms, rotary, SwiGLU, casts, copies, the loss)

and idle = the profiled update's wall time minus the union of kernel intervals (launch gaps and
host syncs). `lm_head_alone_s` times the LM-head chunk loop by itself (forward + backward of
token_logprobs' chunk function over the batch's completion positions), CUDA-synchronised.
MFU = useful FLOPs (grpo_step.update_flops) / update time / 989 TFLOP/s.

    python bench/update_profile.py --out $OUT/update_profile.json
    python bench/update_profile.py --device cpu --shape tiny --n 16 --plen 8 --clen 24 \
        --variants mb8,mb8+compile --backend aot_eager --out /tmp/up.json   # CPU smoke

Variant syntax ("+"-joined, first is the micro-batch): mbN, compile (compiled update on), eager
(compiled update off), ckpt (activation checkpointing), packN (pack_tokens), chunkN (LM-head
positions per chunk), keepG (GB of LM-head logits kept for backward: HEAD_KEEP_BYTES),
attn=flash|efficient|cudnn|math (SDPA backend forced), mode=M (torch.compile mode, e.g.
max-autotune-no-cudagraphs), static (compiled with dynamic=False: one graph per shape instead
of the update's shape-generic one), noprof (timed only, not profiled).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import time
from pathlib import Path

import torch
from grpo_step import GEN, PEAK, PLEN, G, P, trainer_for, update_flops
from shapes import SHAPES  # bench/shapes.py, beside this script
from transformers import Qwen2Config, Qwen2ForCausalLM

from r1kit.config import ZeroConfig
from r1kit.sampling.rollout import Rollout
from r1kit.train import batch as batch_mod
from r1kit.train import compile as compile_mod
from r1kit.train.batch import collate

CATS = ("matmul", "lm_head", "attention", "embedding", "optimizer", "elementwise", "memcpy")
GEMM = re.compile(r"gemm|nvjet|cutlass|xmma|cublas|sm90_|sm80_|wgmma|splitK", re.I)
ATTN = re.compile(r"flash|fmha|attention|attn|sdpa|cudnn", re.I)
OPTIM = re.compile(r"adam|multi_tensor|foreach|clip_grad|Optimizer", re.I)


def make_model(shape: str, device: str) -> Qwen2ForCausalLM:
    """Random init on `device` (bf16 on CUDA, float32 on CPU), SDPA attention, as the bench."""
    torch.manual_seed(0)
    cfg = Qwen2Config(max_position_embeddings=32768, rope_theta=1e6, **SHAPES[shape])
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.set_default_dtype(dtype)
    with torch.device(device):
        m = Qwen2ForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    m.config._attn_implementation = "sdpa"
    return m


def synth_rollouts(n: int, plen: int, clen: int, vocab: int) -> list[Rollout]:
    """n scored rollouts of random ids below `vocab`, every completion cut at `clen` tokens
    (the bench's forced lengths); rewards vary within each group."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100 if vocab > 1000 else 1, vocab, (n, plen + clen), generator=g).tolist()
    out = []
    for i, row in enumerate(ids):
        r = Rollout({}, row[:plen], row[plen:], None, "", "length")
        r.reward = float(i % 3)
        out.append(r)
    return out


def sync(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def parse_variant(v: str) -> dict:
    opts = v.split("+")
    spec = {"name": v, "micro_batch": int(opts[0].removeprefix("mb")), "compile": None}
    for o in opts[1:]:
        if o in ("compile", "eager"):
            spec["compile"] = o == "compile"
        elif o == "ckpt":
            spec["ckpt"] = True
        elif o.startswith("pack"):
            spec["pack"] = int(o.removeprefix("pack"))
        elif o.startswith("chunk"):
            spec["chunk"] = int(o.removeprefix("chunk"))
        elif o.startswith("keep"):
            spec["keep"] = float(o.removeprefix("keep"))
        elif o == "noprof":
            spec["noprof"] = True
        elif o == "static":
            spec["static"] = True
        elif o.startswith("attn="):
            spec["attn"] = o.removeprefix("attn=")
        elif o.startswith("mode="):
            spec["mode"] = o.removeprefix("mode=")
        else:
            raise SystemExit(f"unknown variant option {o!r} in {v!r}")
    return spec


def config_for(spec: dict, n: int, clen: int) -> ZeroConfig:
    """bench/grpo_step.py's config for the variant (β = 0, token loss, μ = 1)."""
    kw = dict(
        group_size=G,
        prompts_per_step=n // G,
        max_new_tokens=clen,
        lr=1e-6,
        beta=0.0,
        loss_agg="token",
        micro_batch=spec["micro_batch"],
        temperature=1.0,
        grad_checkpoint=bool(spec.get("ckpt")),
        pack_tokens=spec.get("pack", 0),
    )
    if spec["compile"] is not None:
        flat = ZeroConfig.flat_fields()["compile_update"]
        if isinstance(flat.default, str):  # tri-state field: auto/on/off
            kw["compile_update"] = "on" if spec["compile"] else "off"
        else:
            kw["compile_update"] = spec["compile"]
    return ZeroConfig.of(**kw)


@contextlib.contextmanager
def patched(spec: dict, backend: str):
    """The variant's knobs that are not config fields: LM-head chunk, compile backend/mode,
    SDPA backend. Restored afterwards."""
    saved = {}
    if "chunk" in spec:
        saved["LOGIT_CHUNK"] = batch_mod.LOGIT_CHUNK
        batch_mod.LOGIT_CHUNK = spec["chunk"]
    if "keep" in spec:
        saved["HEAD_KEEP_BYTES"] = batch_mod.HEAD_KEEP_BYTES
        batch_mod.HEAD_KEEP_BYTES = int(spec["keep"] * 1e9)
    kw = {"backend": backend}
    if "mode" in spec:
        kw["mode"] = spec["mode"]
    if spec.get("static"):  # shapes specialised (one graph per micro-batch shape)
        kw["dynamic"] = False
    orig_compile = torch.compile
    orig_layer_compile = torch.nn.Module.compile

    def tc(fn=None, **k):
        return orig_compile(fn, **{**k, **kw})

    def lc(self, *a, **k):
        return orig_layer_compile(self, *a, **{**k, **kw})

    torch.compile, torch.nn.Module.compile = tc, lc
    compile_mod._CHUNK.clear()
    ctx = contextlib.nullcontext()
    if "attn" in spec:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        names = {
            "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION,
            "math": SDPBackend.MATH,
        }
        ctx = sdpa_kernel(names[spec["attn"]])
    try:
        with ctx:
            yield
    finally:
        torch.compile, torch.nn.Module.compile = orig_compile, orig_layer_compile
        compile_mod._CHUNK.clear()
        for k, v in saved.items():
            setattr(batch_mod, k, v)


def category(name: str, ops: list, vocab: int) -> str:
    """What a kernel does, from its name and the CPU ops on the stack that launched it (innermost
    first; each op's name and input shapes)."""
    if name.startswith(("Memcpy", "Memset")) or "memcpy" in name.lower():
        return "memcpy"
    opnames = " ".join(o.name for o in ops)
    if "embedding" in name.lower() or "embedding" in opnames:
        return "embedding"
    if OPTIM.search(name) or OPTIM.search(opnames) or "isfinite" in opnames:
        return "optimizer"
    for o in ops:
        if any(vocab in tuple(s) for s in (o.input_shapes or []) if isinstance(s, list | tuple)):
            return "lm_head"
    if re.search(r"logsumexp|log_softmax|gather", name, re.I):
        return "lm_head"
    if ATTN.search(name) or "scaled_dot_product" in opnames or "attention" in opnames:
        return "attention"
    if GEMM.search(name) or re.search(r"aten::(mm|addmm|bmm|linear|matmul)\b", opnames):
        return "matmul" if not name.startswith("triton") else "elementwise"
    return "elementwise"


def breakdown(prof, wall_s: float, vocab: int, on_gpu: bool) -> dict:
    """Device time of the profiled update by category, top kernels, idle time and host syncs."""
    from torch.autograd import DeviceType

    events = list(prof.events())

    def stack(e) -> list:
        out, seen = [], 0
        while e is not None and seen < 64:
            out.append(e)
            e = e.cpu_parent
            seen += 1
        return out

    cats = dict.fromkeys(CATS, 0.0)
    per_kernel: dict[str, dict] = {}  # name -> {cat (the most time), n, s}
    by_cat: dict[str, dict[str, float]] = {}  # name -> {cat: s}

    def add(name: str, cat: str, dt: float, n: int) -> None:
        cats[cat] += dt
        by_cat.setdefault(name, {}).setdefault(cat, 0.0)
        by_cat[name][cat] += dt
        row = per_kernel.setdefault(name, {"n": 0, "s": 0.0})
        row["n"] += n
        row["s"] += dt

    if on_gpu:
        kernels = [  # kernels and copies; not the record_function ranges kineto mirrors
            e
            for e in events
            if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
        ]
        # each op lists the kernels it launched (torch links them by correlation id): the op's
        # stack and input shapes say what a kernel computes
        done: dict[str, float] = {}
        for e in events:
            if e.device_type == DeviceType.CPU and e.kernels:
                ops = stack(e)
                for k in e.kernels:
                    dt = k.duration / 1e6  # us -> s
                    add(k.name, category(k.name, ops, vocab), dt, 1)
                    done[k.name] = done.get(k.name, 0.0) + dt
        totals: dict[str, list] = {}
        for k in kernels:
            t = totals.setdefault(k.name, [0, 0.0])
            t[0] += 1
            t[1] += (k.time_range.end - k.time_range.start) / 1e6
        for name, (n, tot) in totals.items():  # launched outside any op: by name alone
            rest = tot - done.get(name, 0.0)
            if rest > 1e-7:
                add(name, category(name, [], vocab), rest, n - per_kernel.get(name, {}).get("n", 0))
    else:  # CPU smoke: top-level aten ops stand in for kernels
        kernels = [
            e
            for e in events
            if e.device_type == DeviceType.CPU
            and e.name.startswith("aten::")
            and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
        ]
        for k in kernels:
            dt = (k.time_range.end - k.time_range.start) / 1e6
            add(k.name, category(k.name, stack(k), vocab), dt, 1)
    for name, row in per_kernel.items():
        row["cat"] = max(by_cat[name], key=by_cat[name].get)
    spans = [(k.time_range.start, k.time_range.end) for k in kernels]
    busy, end = 0.0, float("-inf")
    for a, b in sorted(spans):  # union of kernel intervals
        if b > end:
            busy += b - max(a, end)
            end = b
    busy /= 1e6
    syncs = {}
    for e in events:
        if e.device_type != DeviceType.CPU:
            continue
        for key in (
            "cudaStreamSynchronize",
            "cudaDeviceSynchronize",
            "cudaEventSynchronize",
            "aten::_local_scalar_dense",
            "aten::nonzero",
            "aten::item",
        ):
            if e.name == key:
                s = syncs.setdefault(key, {"n": 0, "cpu_s": 0.0})
                s["n"] += 1
                s["cpu_s"] += (e.time_range.end - e.time_range.start) / 1e6
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1]["s"])[:30]
    total = sum(cats.values())
    return {
        "profiled_wall_s": round(wall_s, 4),
        "device_busy_s": round(busy, 4),
        "idle_s": round(max(0.0, wall_s - busy), 4) if on_gpu else None,
        "kernel_s_total": round(total, 4),
        "by_category_s": {c: round(v, 4) for c, v in cats.items()},
        "by_category_share": {c: round(v / total, 3) if total else 0 for c, v in cats.items()},
        "n_kernels": len(kernels),
        "syncs": {k: {"n": v["n"], "cpu_s": round(v["cpu_s"], 4)} for k, v in syncs.items()},
        "top_kernels": [
            {"name": n[:160], "cat": r["cat"], "n": r["n"], "s": round(r["s"], 4)} for n, r in top
        ],
    }


def achieved(m, lens: list[tuple[int, int]], cat_s: dict) -> dict:
    """Useful TFLOP/s each kind of work reached in the profiled update (recomputation not
    counted, as in grpo_step.update_flops): the decoder's GEMMs (6 x non-embedding params x
    tokens), the LM head (6 x H x V per completion position) and causal attention (6 x layers
    x d x T^2 per sequence)."""
    c = m.config
    emb = c.vocab_size * c.hidden_size
    body = sum(p.numel() for p in m.parameters()) - emb * (1 if c.tie_word_embeddings else 2)
    tokens = sum(p + n for p, n in lens)
    comp = sum(n for _, n in lens)
    attn = sum(6 * c.num_hidden_layers * c.hidden_size * (p + n) ** 2 for p, n in lens)
    work = {"matmul": 6 * body * tokens, "lm_head": 6 * emb * comp, "attention": attn}
    return {k: round(f / cat_s[k] / 1e12, 1) if cat_s.get(k) else None for k, f in work.items()}


def lm_head_alone(m, rollouts, pad_id: int, device: str, backend, reps: int = 2) -> float:
    """Seconds for the LM-head chunk loop alone, forward + backward, over every completion
    position of the batch (hidden states random, of the decoder output's dtype)."""
    b = collate(rollouts, pad_id)
    M = int(b.completion_mask.sum())
    head = m.get_output_embeddings()
    g = torch.Generator(device=device).manual_seed(0)
    h = torch.randn(M, head.weight.shape[1], device=device, dtype=head.weight.dtype, generator=g)
    h.requires_grad_(True)
    target = b.input_ids[:, 1:].reshape(-1)[b.completion_mask.flatten().bool()].to(device)
    run = getattr(batch_mod, "head_logprobs", None)
    best = float("inf")
    for _ in range(reps + 1):
        t0 = sync(device)
        if run is not None:  # the library's own LM-head path when it has one
            vals = run(h, head, target, 1.0, compile_backend=backend)
        else:
            fn = batch_mod._chunk_logp
            if backend:
                fn = compile_mod.compiled_chunk_logp(fn, backend)
            vals = torch.cat(
                [
                    torch.utils.checkpoint.checkpoint(
                        fn,
                        h[i : i + batch_mod.LOGIT_CHUNK],
                        head.weight,
                        head.bias,
                        target[i : i + batch_mod.LOGIT_CHUNK],
                        1.0,
                        use_reentrant=False,
                    )
                    for i in range(0, M, batch_mod.LOGIT_CHUNK)
                ]
            )
        vals.sum().backward()
        best = min(best, sync(device) - t0)
    m.zero_grad(set_to_none=True)
    return best


def run_variant(args, v: str) -> dict:
    spec = parse_variant(v)
    device = args.device
    m = make_model(args.shape, device)
    if spec.get("ckpt"):
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    cfg = config_for(spec, args.n, args.clen)
    rollouts = synth_rollouts(args.n, args.plen, args.clen, m.config.vocab_size)
    lens = [(args.plen, args.clen)] * args.n
    out: dict = {"variant": v}
    with patched(spec, args.backend):
        trainer = trainer_for(m, cfg)
        out["compile_backend"] = args.backend if trainer.compile_backend else None
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t0 = sync(device)
        trainer.update(rollouts)
        out["first_update_s"] = round(sync(device) - t0, 3)
        times = []
        for _ in range(args.steps):
            t0 = sync(device)
            trainer.update(rollouts)
            times.append(sync(device) - t0)
        upd = sum(times) / len(times)
        out["update_s"] = round(upd, 4)
        out["update_s_all"] = [round(t, 4) for t in times]
        out["update_mfu"] = round(update_flops(m, lens) / upd / PEAK, 3)
        if device.startswith("cuda"):
            out["peak_mem_GB"] = round(torch.cuda.max_memory_allocated() / 1e9, 1)
        if args.profile and not spec.get("noprof"):
            acts = [torch.profiler.ProfilerActivity.CPU]
            if device.startswith("cuda"):
                acts.append(torch.profiler.ProfilerActivity.CUDA)
            with torch.profiler.profile(activities=acts, record_shapes=True) as prof:
                t0 = sync(device)
                trainer.update(rollouts)
                wall = sync(device) - t0
            t1 = time.perf_counter()
            out["profile"] = breakdown(prof, wall, m.config.vocab_size, device.startswith("cuda"))
            out["profile"]["parse_s"] = round(time.perf_counter() - t1, 1)
            out["profile"]["achieved_tflops"] = achieved(m, lens, out["profile"]["by_category_s"])
        out["lm_head_alone_s"] = round(
            lm_head_alone(m, rollouts, 0, device, trainer.compile_backend), 4
        )
    print(json.dumps({k: v for k, v in out.items() if k != "profile"}), flush=True)
    if "profile" in out:
        p = out["profile"]
        print(
            v,
            "by category (s):",
            p["by_category_s"],
            "idle",
            p["idle_s"],
            "syncs",
            {k: s["n"] for k, s in p["syncs"].items()},
            flush=True,
        )
    del trainer, m
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    torch._dynamo.reset()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="mb64+eager,mb64+compile,mb128+compile")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--shape", default="0.5B", choices=sorted(SHAPES))
    ap.add_argument("--n", type=int, default=P * G, help="completions per update")
    ap.add_argument("--plen", type=int, default=PLEN)
    ap.add_argument("--clen", type=int, default=GEN)
    ap.add_argument("--steps", type=int, default=2, help="timed updates after the first")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend")
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "update_profile.json"))
    a = ap.parse_args()
    res = {
        "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "workload": f"{a.n} completions, prompt {a.plen}, {a.clen} completion tokens, {a.shape}",
        "variants": {},
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for v in a.variants.split(","):
        try:
            res["variants"][v] = run_variant(a, v)
        except torch.OutOfMemoryError as e:  # one variant too large: record it, go on
            res["variants"][v] = {"error": f"out of memory: {str(e)[:200]}"}
            torch._dynamo.reset()
            torch.cuda.empty_cache()
        out.write_text(json.dumps(res, indent=1))
    print("wrote", out, os.path.getsize(out), "bytes")


if __name__ == "__main__":
    main()
