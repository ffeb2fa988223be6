"""Attention candidates for the engine, measured before choosing (issue 3), on one GPU.

Decode over the paged KV cache (cache [num_blocks, 32, Hkv, D], block tables as the engine
keeps them), 0.5B shape (14 query heads, 2 KV heads, D 64), batch 512:
  triton      r1kit's paged decode kernel (engine/triton_attention.py): what the engine uses
  flex_paged  FlexAttention reading the same pages through a BlockMask built from the block
              tables (torch.compile'd), as torch's experimental PagedAttention does
  gather_sdpa gather each sequence's blocks into a contiguous tensor, then attention (the CPU
              reference path)
Prefill of packed sequences (causal within each):
  sdpa_loop   one SDPA call per sequence (engine/attention.py's CPU / fp32 path; the CUDA path
              until this measurement)
  varlen      torch.nn.attention.varlen.varlen_attn, one call for the pack (the engine's CUDA
              bf16/fp16 path since this measurement)
  flex_doc    FlexAttention with a document-causal block mask (compiled)
Every candidate is checked against gather_sdpa / sdpa_loop (max abs error) before it is timed.

    python bench/attention.py          -> bench/results/attention.json
"""

from __future__ import annotations

import inspect
import json
import os
import time
from pathlib import Path

import torch

from r1kit.engine.attention import decode_attention_reference, prefill_attention

OUT = Path(os.environ.get("R1KIT_BENCH_OUT", Path(__file__).parent / "results" / "attention.json"))
H, HKV, D, BS = 14, 2, 64, 32


def bench(fn, n: int = 50) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n


def paged_case(ctx: list[int], seed: int = 0):
    """A cache holding len(ctx) sequences in shuffled blocks, and their block tables."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    nbs = [(c + BS - 1) // BS for c in ctx]
    NB = sum(nbs) + 1  # block 0 stays unused, as in the engine
    perm = torch.randperm(NB - 1, generator=g, device="cuda") + 1
    width = max(nbs)
    tables = torch.zeros(len(ctx), width, dtype=torch.int32, device="cuda")
    o = 0
    for i, n in enumerate(nbs):
        tables[i, :n] = perm[o : o + n]
        o += n
    kc = torch.randn(NB, BS, HKV, D, device="cuda", dtype=torch.bfloat16, generator=g)
    vc = torch.randn(NB, BS, HKV, D, device="cuda", dtype=torch.bfloat16, generator=g)
    q = torch.randn(len(ctx), H, D, device="cuda", dtype=torch.bfloat16, generator=g)
    lens = torch.tensor(ctx, dtype=torch.int32, device="cuda")
    return q, kc, vc, tables, lens


def flex_paged(q, kc, vc, tables, lens, scale):
    """FlexAttention over the pages: kv_indices are the physical blocks of each sequence; the
    mask maps a physical position back to its logical one to cut the last block at ctx."""
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    B, NB = q.shape[0], kc.shape[0]
    nblk = ((lens + BS - 1) // BS).to(torch.int32)
    kv_idx = torch.zeros(B, NB, dtype=torch.int32, device=q.device)  # padded to all pages
    kv_idx[:, : tables.shape[1]] = tables
    logical = torch.zeros(B, NB, dtype=torch.int32, device=q.device)  # phys block -> logical
    cols = torch.arange(tables.shape[1], device=q.device, dtype=torch.int32)
    logical.scatter_(1, tables.long(), cols.expand(B, -1).contiguous())

    def mask_mod(b, h, q_idx, kv):
        pos = logical[b, kv // BS] * BS + kv % BS
        return pos < lens[b]

    bm = BlockMask.from_kv_blocks(
        nblk[:, None, None],
        kv_idx[:, None, None, :],
        BLOCK_SIZE=(128, BS),
        mask_mod=mask_mod,
        seq_lengths=(1, NB * BS),
    )
    k = kc.view(1, NB * BS, HKV, D).transpose(1, 2)  # [1, Hkv, S, D], pages laid end to end
    v = vc.view(1, NB * BS, HKV, D).transpose(1, 2)
    fn = torch.compile(flex_attention, dynamic=False)

    def run():
        return fn(
            q[:, :, None],
            k.expand(B, -1, -1, -1),
            v.expand(B, -1, -1, -1),
            block_mask=bm,
            scale=scale,
            enable_gqa=True,
        )[:, :, 0]

    return run


def decode_part(res: dict, name: str, ctx: list[int]) -> None:
    from r1kit.engine.triton_attention import paged_decode

    q, kc, vc, tables, lens = paged_case(ctx)
    scale = D**-0.5
    ref = decode_attention_reference(q, kc, vc, tables, lens, scale, tables.shape[1])
    cands = {
        "triton": lambda: paged_decode(q, kc, vc, tables, lens, scale),
        "gather_sdpa": lambda: decode_attention_reference(
            q, kc, vc, tables, lens, scale, tables.shape[1]
        ),
    }
    try:
        cands["flex_paged"] = flex_paged(q, kc, vc, tables, lens, scale)
    except Exception as e:  # noqa: BLE001 - a candidate that cannot run is a result too
        res[f"decode.{name}.flex_paged"] = {"error": f"{type(e).__name__}: {e}"[:300]}
    kv_bytes = sum(ctx) * HKV * D * 2 * 2
    for cand, fn in cands.items():
        try:
            err = float((fn().float() - ref.float()).abs().max())
            t = bench(fn)
            res[f"decode.{name}.{cand}"] = {
                "us": round(t * 1e6, 1),
                "max_abs_err": round(err, 4),
                "kv_GB_per_s": round(kv_bytes / t / 1e9),
            }
        except Exception as e:  # noqa: BLE001
            res[f"decode.{name}.{cand}"] = {"error": f"{type(e).__name__}: {e}"[:300]}
        print(name, cand, res[f"decode.{name}.{cand}"], flush=True)


def varlen_fn(q, k, v, lens, scale):
    from torch.nn.attention.varlen import varlen_attn

    cu = torch.tensor(
        [0, *torch.tensor(lens).cumsum(0).tolist()], device=q.device, dtype=torch.int32
    )
    sig = inspect.signature(varlen_attn).parameters
    kw: dict = {"scale": scale}
    if "window_size" in sig:
        kw["window_size"] = (-1, 0)  # causal
    else:
        kw["is_causal"] = True
    if "enable_gqa" in sig:
        kw["enable_gqa"] = True
        kk, vv = k, v
    else:  # older signature: repeat the KV heads
        kk, vv = k.repeat_interleave(H // HKV, 1), v.repeat_interleave(H // HKV, 1)
    m = max(lens)
    return lambda: varlen_attn(q, kk, vv, cu, cu, m, m, **kw)


def flex_doc_fn(q, k, v, lens, scale):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    doc = torch.repeat_interleave(
        torch.arange(len(lens), device=q.device), torch.tensor(lens, device=q.device)
    )

    def causal_doc(b, h, qi, ki):
        return (doc[qi] == doc[ki]) & (qi >= ki)

    T = q.shape[0]
    bm = create_block_mask(causal_doc, None, None, T, T, device="cuda")
    fn = torch.compile(flex_attention, dynamic=False)
    qt, kt, vt = (x.transpose(0, 1)[None] for x in (q, k, v))
    return lambda: fn(qt, kt, vt, block_mask=bm, scale=scale, enable_gqa=True)[0].transpose(0, 1)


def prefill_part(res: dict, name: str, lens: list[int]) -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    T = sum(lens)
    q = torch.randn(T, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(T, HKV, D, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(T, HKV, D, device="cuda", dtype=torch.bfloat16, generator=g)
    scale = D**-0.5
    ref = prefill_attention(q, k, v, lens, scale)
    makers = {
        "sdpa_loop": lambda: lambda: prefill_attention(q, k, v, lens, scale),
        "varlen": lambda: varlen_fn(q, k, v, lens, scale),
        "flex_doc": lambda: flex_doc_fn(q, k, v, lens, scale),
    }
    for cand, make in makers.items():
        try:
            fn = make()
            err = float((fn().float() - ref.float()).abs().max())
            res[f"prefill.{name}.{cand}"] = {
                "us": round(bench(fn, 20) * 1e6, 1),
                "max_abs_err": round(err, 4),
            }
        except Exception as e:  # noqa: BLE001
            res[f"prefill.{name}.{cand}"] = {"error": f"{type(e).__name__}: {e}"[:300]}
        print(name, cand, res[f"prefill.{name}.{cand}"], flush=True)


def main() -> None:
    res: dict = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "shape": f"H={H} Hkv={HKV} D={D} block={BS}, bf16",
    }
    decode_part(res, "b512_ctx640", [640] * 512)
    decode_part(res, "b512_ctx64-2176", [64 + (i * 2112) // 511 for i in range(512)])
    prefill_part(res, "64x128", [128] * 64)
    prefill_part(res, "16x2048", [2048] * 16)
    prefill_part(res, "ragged64", [32 + (i * 1984) // 63 for i in range(64)])
    OUT.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
