"""Paged decode attention in Triton: one program per (sequence, KV head).

The program loads the GQA group's queries [G, D] once, walks the sequence's blocks through its
block table, and keeps an online softmax (running max m, sum l, accumulator acc). Sharing one K/V
tile across the whole query group is what makes GQA decode cheap: K/V bytes are read once per KV
head, which is the memory traffic a decode step is bound by. The group is padded to 16 rows (the
smallest tl.dot tile) and head_dim to a power of two, both masked.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def kernel(
        Q,
        K,
        V,
        BT,
        CL,
        Out,
        scale,
        s_qb,
        s_qh,
        s_kb,
        s_ks,
        s_kh,
        s_bt,
        s_ob,
        s_oh,
        GROUP: tl.constexpr,
        GROUP_PAD: tl.constexpr,
        D: tl.constexpr,
        D_PAD: tl.constexpr,
        BS: tl.constexpr,
    ):
        b = tl.program_id(0)
        kvh = tl.program_id(1)
        ctx = tl.load(CL + b)
        g = tl.arange(0, GROUP_PAD)
        d = tl.arange(0, D_PAD)
        s = tl.arange(0, BS)
        gm = g < GROUP
        dm = d < D
        heads = kvh * GROUP + g
        q = tl.load(Q + b * s_qb + heads[:, None] * s_qh + d[None, :], gm[:, None] & dm[None, :])
        q = (q.to(tl.float32) * (scale * 1.4426950408889634)).to(q.dtype)  # exp2 domain
        m = tl.full([GROUP_PAD], float("-inf"), tl.float32)
        l_sum = tl.zeros([GROUP_PAD], tl.float32)
        acc = tl.zeros([GROUP_PAD, D_PAD], tl.float32)
        for i in range(0, tl.cdiv(ctx, BS)):
            blk = tl.load(BT + b * s_bt + i).to(tl.int64)
            off = blk * s_kb + s[:, None] * s_ks + kvh * s_kh + d[None, :]
            k = tl.load(K + off, mask=dm[None, :], other=0.0)  # [BS, D]
            v = tl.load(V + off, mask=dm[None, :], other=0.0)
            qk = tl.dot(q, tl.trans(k))  # [G, BS] fp32
            qk = tl.where((i * BS + s)[None, :] < ctx, qk, float("-inf"))
            m_new = tl.maximum(m, tl.max(qk, 1))
            p = tl.exp2(qk - m_new[:, None])
            alpha = tl.exp2(m - m_new)
            l_sum = l_sum * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m = m_new
        out = acc / l_sum[:, None]
        o_ptr = Out + b * s_ob + heads[:, None] * s_oh + d[None, :]
        tl.store(o_ptr, out.to(Out.dtype.element_ty), gm[:, None] & dm[None, :])

    return kernel


def paged_decode(
    q: torch.Tensor,  # [B, H, D]
    k_cache: torch.Tensor,  # [NB, bs, Hkv, D]
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,  # [B, max_blocks] int32
    context_lens: torch.Tensor,  # [B] int32
    scale: float,
) -> torch.Tensor:
    import triton

    B, H, D = q.shape
    _, bs, Hkv, _ = k_cache.shape
    group = H // Hkv
    o = torch.empty_like(q)
    _kernel()[(B, Hkv)](
        q,
        k_cache,
        v_cache,
        block_tables,
        context_lens,
        o,
        scale,
        q.stride(0),
        q.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        block_tables.stride(0),
        o.stride(0),
        o.stride(1),
        GROUP=group,
        GROUP_PAD=max(16, triton.next_power_of_2(group)),
        D=D,
        D_PAD=max(16, triton.next_power_of_2(D)),
        BS=bs,
        num_warps=4,
        num_stages=2,
    )
    return o
