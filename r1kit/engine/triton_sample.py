"""Fused sampling on CUDA: one pass over each row's logits computes the log-sum-exp, the counter
hash noise, the filter mask and the Gumbel-max argmax (sampler.py is the reference it matches).

For a [512, 152k] bf16 batch this reads 155 MB once instead of the ~10 full passes the reference
needs; see bench/rollout.py.

`triton_top_p` finds each row's nucleus threshold without sorting and without a host sync: the
threshold is the largest logit v with mass(x >= v) >= top_p (what the sort-based reference
computes: every token above the last one kept is kept, and ties at it stay), found by a 16-way
search over the 32-bit ordered keys of the float32 scaled logits. Each pass sums exp(x - max) at
15 candidate cut-offs at once and keeps the bracket [lo, hi) with mass(lo) >= target >
mass(hi); 8 passes narrow 2^32 keys to one, so the result is a logit of the row, exactly. A
near-uniform row (a random-init model: top-p 0.95 keeps ~95% of 152k tokens) costs 9 reads of
the row instead of a full sort.
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
            # below 1, as in sampler.gumbel: the top hash value rounds to u = 1 in float32
            u = tl.minimum(((h >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0), 0.99999994)
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


@functools.cache
def _top_p_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def ordered(x):  # float32 -> int32 key, monotone in x (-0.0 and +0.0 share key 0)
        b = x.to(tl.int32, bitcast=True)
        k = tl.where(b >= 0, b, b ^ 0x7FFFFFFF)
        return tl.where(x == 0.0, 0, k)

    # one compile serves every batch: the pass number, chunk count and size are not
    # specialised on (Triton would otherwise compile again for k == 1, or a new S)
    @triton.jit(do_not_specialize=["k", "S", "CH"])
    def top_p_pass(
        L,
        stride,
        V,
        CH,
        INV_T,
        TOP_P,
        MIN_P,
        STATS,
        MASS,
        BR,
        TH,
        MX,
        k,
        P,
        S,
        SMAX: tl.constexpr,
        NC: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        """Program (row, c) of pass k over chunk c (CH entries) of a row. k = 0: the chunk's
        max, min and sum(exp(x - max)) -> STATS [B, S, 3]. k >= 1: the row's bracket before
        pass k (from pass k-1's masses), then the chunk's masses at pass k's cuts ->
        MASS[k % 2] [B, S, NC]; k = P + 1: the threshold and the row max."""
        row = tl.program_id(0)
        c = tl.program_id(1)
        B = tl.num_programs(0)
        inv_t = tl.load(INV_T + row)
        p = tl.load(TOP_P + row)
        need = (p < 1.0) | (tl.load(MIN_P + row) > 0.0)
        base = L + row.to(tl.int64) * stride
        lo_c = c * CH
        hi_c = tl.minimum(lo_c + CH, V)
        if k == 0:
            m0 = tl.full([], float("-inf"), tl.float32)
            mn0 = tl.full([], float("inf"), tl.float32)
            sm0 = tl.full([], 0.0, tl.float32)
            for start0 in range(lo_c, tl.where(need, hi_c, lo_c), BLOCK):
                offs0 = start0 + tl.arange(0, BLOCK)
                ok0 = offs0 < hi_c
                x0 = tl.load(base + offs0, mask=ok0, other=float("-inf")).to(tl.float32) * inv_t
                m1 = tl.maximum(m0, tl.max(x0, 0))
                e0 = tl.where(ok0, tl.exp(x0 - m1), 0.0)
                sm0 = tl.where(m1 > float("-inf"), sm0 * tl.exp(m0 - m1) + tl.sum(e0, 0), 0.0)
                m0 = m1
                mn0 = tl.minimum(mn0, tl.min(tl.where(ok0, x0, float("inf")), 0))
            out0 = STATS + (row * S + c) * 3
            tl.store(out0, m0)
            tl.store(out0 + 1, mn0)
            tl.store(out0 + 2, sm0)
        else:
            cs = tl.arange(0, SMAX)
            st = STATS + (row * S + cs) * 3
            on = cs < S
            ms = tl.load(st, mask=on, other=float("-inf"))
            mns = tl.load(st + 1, mask=on, other=float("inf"))
            sms = tl.load(st + 2, mask=on, other=0.0)
            m = tl.max(ms, 0)
            scale = tl.where(ms > float("-inf"), tl.exp(ms - m), 0.0)
            target = p * tl.sum(sms * scale, 0)
            # the bracket [lo, hi): mass(x >= lo) >= target > mass(x >= hi)
            lo = ordered(tl.min(mns, 0)).to(tl.int64)
            hi = ordered(m).to(tl.int64) + 1
            j = tl.arange(0, NC)
            if k > 1:
                br = BR + ((k - 1) % 2 * B + row) * 2
                lo = tl.load(br)
                hi = tl.load(br + 1)
                cut = lo + ((hi - lo) * (j + 1)) // (NC + 1)
                prev = MASS + (((k - 1) % 2 * B + row) * S + cs[:, None]) * NC + j[None, :]
                # a sum of chunk masses, each never larger at a higher cut, in a fixed order:
                # never larger at a higher cut either, so a prefix of the cuts passes
                ok_c = tl.sum(tl.load(prev, mask=on[:, None], other=0.0), 0) >= target
                lo = tl.maximum(lo, tl.max(tl.where(ok_c, cut, lo), 0))
                hi = tl.minimum(hi, tl.min(tl.where(ok_c, hi, cut), 0))
            if k <= P:
                if c == 0:  # the bracket this pass cuts, for the next pass
                    br = BR + (k % 2 * B + row) * 2
                    tl.store(br, lo)
                    tl.store(br + 1, hi)
                cut = lo + ((hi - lo) * (j + 1)) // (NC + 1)  # [NC] ascending, in (lo, hi)
                cut32 = cut.to(tl.int32)  # keys of finite floats fit int32
                # per-slot partial sums, reduced once at the end (not a reduction per block)
                acc = tl.zeros([BLOCK, NC], tl.float32)
                for start in range(lo_c, tl.where(p < 1.0, hi_c, lo_c), BLOCK):
                    offs = start + tl.arange(0, BLOCK)
                    ok = offs < hi_c
                    x = tl.load(base + offs, mask=ok, other=0.0).to(tl.float32) * inv_t
                    e = tl.where(ok, tl.exp(x - m), 0.0)
                    keep = ordered(x)[:, None] >= cut32[None, :]
                    acc += tl.where(keep, e[:, None], 0.0)
                tl.store(MASS + ((k % 2 * B + row) * S + c) * NC + j, tl.sum(acc, 0))
            elif c == 0:
                key = lo.to(tl.int32)
                th = tl.where(key >= 0, key, key ^ 0x7FFFFFFF).to(tl.float32, bitcast=True)
                tl.store(TH + row, tl.where(p < 1.0, th, float("-inf")))
                tl.store(MX + row, m)

    return top_p_pass


TOP_P_CUTS = 16  # cut-offs tried per pass: each pass narrows the bracket 17-fold
TOP_P_PASSES = 8  # 17^8 > 2^32: the bracket is one key wide after these
TOP_P_MAX_CHUNKS = 64  # programs per row (a row of a batch of one is split 64 ways)


def triton_top_p(
    logits: torch.Tensor,  # [B, V], rows contiguous
    inv_t: torch.Tensor,  # [B] float32
    top_p: torch.Tensor,  # [B] float32; 1 = off
    min_p: torch.Tensor,  # [B] float32; rows with neither filter are skipped
    # programs per pass (rows x chunks of a row), about: with 1024 a pass took 3-11% longer at
    # 128-512 rows on an H200 (bench/top_p_tune.py, bench/results/top_p_tune_gpu.json)
    programs: int = 4096,
    block: int = 256,  # entries a program reads per iteration
    warps: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (nucleus threshold on the scaled logits [B] (-inf where top_p is 1), row max of the
    scaled logits [B] (-inf for skipped rows)). Each row is split into S chunks, one program
    each, so that a few rows still fill the GPU; the passes are separate launches (the
    chunks of a row meet in between), 1 + 8 + 1 of them."""
    import triton

    B, V = logits.shape
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    S = max(4, min(TOP_P_MAX_CHUNKS, triton.next_power_of_2(max(1, programs // B))))
    BLOCK = block
    per = -(-V // S)
    CH = -(-per // BLOCK) * BLOCK  # a whole number of blocks per chunk
    dev = logits.device
    th = torch.empty(B, dtype=torch.float32, device=dev)
    mx = torch.empty(B, dtype=torch.float32, device=dev)
    stats = torch.empty((B, S, 3), dtype=torch.float32, device=dev)
    mass = torch.empty((2, B, S, TOP_P_CUTS), dtype=torch.float32, device=dev)
    br = torch.empty((2, B, 2), dtype=torch.int64, device=dev)
    args = (
        logits,
        logits.stride(0),
        V,
        CH,
        inv_t.float(),
        top_p.float(),
        min_p.float(),
        stats,
        mass,
        br,
        th,
        mx,
    )
    kern = _top_p_kernel()
    for k in range(TOP_P_PASSES + 2):
        grid = (B, S if k <= TOP_P_PASSES else 1)
        kern[grid](
            *args,
            k,
            TOP_P_PASSES,
            S,
            SMAX=TOP_P_MAX_CHUNKS,
            NC=TOP_P_CUTS,
            BLOCK=BLOCK,
            num_warps=warps,
        )
    return th, mx


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
        logits,
        logits.stride(0),
        V,
        inv_t.float(),
        noise.float(),
        th.float(),
        keys,
        tok,
        lp,
        BLOCK=4096,
        num_warps=8,
    )
    return tok, lp
