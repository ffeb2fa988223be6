"""Fused sampling on CUDA: one pass over each row's logits computes the log-sum-exp, the counter
hash noise, the filter mask and the Gumbel-max argmax (sampler.py is the reference it matches).

For a [512, 152k] bf16 batch this reads 155 MB once instead of the ~10 full passes the reference
needs; see bench/rollout.py.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401

        return torch.cuda.is_available()
    except ImportError:
        return False


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def mix(x):  # uint32 -> uint32, same as sampler._mix
        x = ((x >> 16) ^ x) * 0x45D9F3B
        x = ((x >> 16) ^ x) * 0x45D9F3B
        return (x >> 16) ^ x

    @triton.jit
    def kernel(L, stride, V, INV_T, NOISE, TH, KEYS, TOK, LP, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        inv_t = tl.load(INV_T + row)
        noise = tl.load(NOISE + row)
        th = tl.load(TH + row)
        key = tl.load(KEYS + row).to(tl.uint32)
        m = tl.full([], float("-inf"), tl.float32)
        s = tl.full([], 0.0, tl.float32)
        best = tl.full([], float("-inf"), tl.float32)
        best_x = tl.full([], 0.0, tl.float32)
        best_i = tl.full([], 0, tl.int32)
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            ok = offs < V
            x = tl.load(L + row * stride + offs, mask=ok, other=float("-inf")).to(tl.float32)
            x = x * inv_t
            m_new = tl.maximum(m, tl.max(x, 0))
            s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
            m = m_new
            h = mix(mix(key + offs.to(tl.uint32) * 0x61C88647))
            u = ((h >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)
            score = x - tl.log(-tl.log(u)) * noise
            score = tl.where(ok & (x >= th), score, float("-inf"))
            bv = tl.max(score, 0)
            bi = tl.argmax(score, 0)
            bx = tl.sum(tl.where(tl.arange(0, BLOCK) == bi, x, 0.0), 0)
            take = bv > best
            best_i = tl.where(take, start + bi, best_i)
            best_x = tl.where(take, bx, best_x)
            best = tl.where(take, bv, best)
        tl.store(TOK + row, best_i.to(tl.int64))
        tl.store(LP + row, best_x - (m + tl.log(s)))

    return kernel


def triton_sample(
    logits: torch.Tensor,  # [B, V], rows contiguous
    inv_t: torch.Tensor,  # [B] float32
    noise: torch.Tensor,  # [B] float32; 0 = greedy
    th: torch.Tensor,  # [B] float32 thresholds on scaled logits
    keys: torch.Tensor,  # [B] int64 from sampler.row_keys
) -> tuple[torch.Tensor, torch.Tensor]:
    B, V = logits.shape
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    tok = torch.empty(B, dtype=torch.int64, device=logits.device)
    lp = torch.empty(B, dtype=torch.float32, device=logits.device)
    _kernel()[(B,)](
        logits, logits.stride(0), V, inv_t.float(), noise.float(), th.float(), keys, tok, lp,
        BLOCK=4096, num_warps=8,
    )  # fmt: skip
    return tok, lp
