"""Attention over the paged KV cache: where k/v are written, prefill and decode attention.

Cache layout per layer: k, v [num_blocks, block_size, Hkv, D]; token slot s lives at block
s // block_size, offset s % block_size. Block 0 is never handed out: padded rows of a CUDA-graph
batch write there and read it, so they can never touch a live sequence.

Prefill is causal attention over the new tokens of each sequence. A prefill that starts at
position 0 needs no cache reads; one that starts after a prefix found in the prefix cache
(`prefill_starts`) reads the prefix's K/V from its blocks (`prefill_cached_attention`).
Decode reads each sequence's blocks through its block table: a Triton kernel on CUDA
(triton_attention.py), gather + SDPA elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# the Triton kernels import triton (optional, CUDA only) when first built, not at import
from r1kit.engine.triton_attention import paged_decode
from r1kit.engine.triton_sample import triton_available


@dataclass
class AttnBatch:
    slots: torch.Tensor  # [T] cache slot of each new token
    prefill_lens: list[int] | None = None  # prefill: new tokens per sequence, in packed order
    block_tables: torch.Tensor | None = None  # decode: [B, max_blocks] int32
    context_lens: torch.Tensor | None = None  # decode: [B] tokens to attend to, new one included
    max_blocks: int = 0  # decode, reference path: widest block table in use
    prefill_starts: list[int] | None = None  # prefill after a cached prefix: its length per seq
    prefill_blocks: list[list[int]] | None = None  # ... and each sequence's blocks [nb]
    cached_index: CachedIndex | None = None  # built from the two above by the first layer


def store_kv(
    k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots
) -> None:
    """k/v [T, Hkv, D] into the flat slot view of one layer's cache."""
    k_cache.view(-1, *k.shape[1:]).index_copy_(0, slots, k)
    v_cache.view(-1, *v.shape[1:]).index_copy_(0, slots, v)


def prefill_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lens: list[int], scale: float
) -> torch.Tensor:
    """q [T, H, D], k/v [T, Hkv, D] packed; causal within each sequence -> [T, H, D].

    On CUDA one `varlen_attn` call covers the whole pack (bench/results/attention.json: 60 us
    for 64 x 128 tokens against 27 ms for one SDPA call per sequence on the H200); elsewhere,
    for fp32, and on torch builds without it, one SDPA call per sequence."""
    flash_ok = q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] % 8 == 0
    if q.is_cuda and flash_ok and q.shape[-1] <= 256 and _varlen_attn() is not None:
        return _prefill_varlen(q, k, v, lens, scale)
    out = torch.empty_like(q)
    start = 0
    for n in lens:
        sl = slice(start, start + n)
        o = F.scaled_dot_product_attention(
            q[sl].transpose(0, 1),
            k[sl].transpose(0, 1),
            v[sl].transpose(0, 1),
            is_causal=True,
            scale=scale,
            enable_gqa=True,
        )
        out[sl] = o.transpose(0, 1)
        start += n
    return out


def prefill_cached_attention(
    q: torch.Tensor,  # [T, H, D] new tokens, packed
    k: torch.Tensor,  # [T, Hkv, D] their keys (already stored in the cache)
    v: torch.Tensor,
    k_cache: torch.Tensor,  # [NB, bs, Hkv, D]
    v_cache: torch.Tensor,
    batch: AttnBatch,
    scale: float,
) -> torch.Tensor:
    """Prefill where some sequences start after a cached prefix: new token r of a sequence
    whose first `start` tokens are cached sits at position start + r and attends to positions
    0 .. start + r, read from its blocks (the new tokens' K/V were stored before this call).
    Sequences without a prefix take the plain path in one call; those with one share a second
    call, padded to one shape: queries [S, n_max], keys [S, L] gathered through block tables
    padded with block 0 (masked out). On CUDA that call is restricted to the memory-efficient
    and math kernels: they take any mask without building a plan per shape. The index tensors
    are built once per forward (`cached_index`), not per layer and sequence: with 128 requests
    hitting a shared system prompt, per-sequence copies were ~6,000 kernel launches a prefill."""
    ix = batch.cached_index
    if ix is None:
        ix = batch.cached_index = CachedIndex.build(batch, k_cache.shape[1], q.device)
    out = torch.empty_like(q)
    if ix.plain_rows is not None:  # one packed call for those: gather their rows, attend, scatter
        r = ix.plain_rows
        out.index_copy_(0, r, prefill_attention(q[r], k[r], v[r], ix.plain_lens, scale))
    S, n_max, L = ix.shape
    H, D = q.shape[1], q.shape[2]
    Hkv = k_cache.shape[2]
    kc = k_cache.index_select(0, ix.blocks).view(S, L, Hkv, D)
    vc = v_cache.index_select(0, ix.blocks).view(S, L, Hkv, D)
    if Hkv != H:  # the efficient kernel takes no GQA: repeat the KV heads
        kc, vc = kc.repeat_interleave(H // Hkv, 2), vc.repeat_interleave(H // Hkv, 2)
    qp = q.index_select(0, ix.q_rows).view(S, n_max, H, D)
    with _any_mask_kernels(q.device):
        o = F.scaled_dot_product_attention(
            qp.transpose(1, 2),
            kc.transpose(1, 2),
            vc.transpose(1, 2),
            attn_mask=ix.mask,
            scale=scale,
        )
    o = o.transpose(1, 2).reshape(S * n_max, H, D)
    out.index_copy_(0, ix.out_rows, o.index_select(0, ix.valid))
    return out


@dataclass
class CachedIndex:
    """The index tensors of a prefill after cached prefixes, shared by every layer."""

    plain_rows: torch.Tensor | None  # [Tp] packed rows of the sequences without a prefix
    plain_lens: list[int]
    blocks: torch.Tensor  # [S * nb] block tables of the others, padded with block 0
    q_rows: torch.Tensor  # [S * n_max] packed row of each padded query (padding reads row 0)
    valid: torch.Tensor  # [Tc] which padded queries are real, in packed order
    out_rows: torch.Tensor  # [Tc] their packed rows
    mask: torch.Tensor  # [S, 1, n_max, L] bool: key j visible to query r
    shape: tuple[int, int, int]  # (S, n_max, L)

    @classmethod
    def build(cls, batch: AttnBatch, bs: int, dev: torch.device) -> CachedIndex:
        lens, starts, tables = batch.prefill_lens, batch.prefill_starts, batch.prefill_blocks
        offs = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        plain = [i for i, st in enumerate(starts) if st == 0]
        cached = [i for i, st in enumerate(starts) if st]
        S = len(cached)
        n_max = -(-max(lens[i] for i in cached) // 8) * 8
        nb = max(len(tables[i]) for i in cached)
        bt = np.zeros((S, nb), dtype=np.int64)  # block 0 pads: masked out
        qidx = np.zeros((S, n_max), dtype=np.int64)  # padded query rows read row 0
        valid = np.zeros((S, n_max), dtype=bool)
        for r, i in enumerate(cached):
            bt[r, : len(tables[i])] = tables[i]
            qidx[r, : lens[i]] = np.arange(offs[i], offs[i + 1])
            valid[r, : lens[i]] = True
        flat_valid = np.flatnonzero(valid)
        prow = [np.arange(offs[i], offs[i + 1]) for i in plain]
        parts = [bt.ravel(), qidx.ravel(), flat_valid, qidx.ravel()[flat_valid], *prow]
        up = torch.from_numpy(np.concatenate(parts)).to(dev)  # one upload for all of them
        sizes = [len(p) for p in parts[:4]] + [sum(len(p) for p in prow)]
        blocks, q_rows, valid_t, out_rows, plain_t = up.split(sizes)
        # causal, aligned bottom-right: query r of sequence i sees keys j <= start_i + r
        st = torch.tensor([starts[i] for i in cached], device=dev)
        L = nb * bs
        pos = st[:, None] + torch.arange(n_max, device=dev)[None]  # [S, n_max]
        mask = torch.arange(L, device=dev)[None, None] <= pos[:, :, None]  # [S, n_max, L]
        return cls(
            plain_t if plain else None,
            [lens[i] for i in plain],
            blocks,
            q_rows,
            valid_t,
            out_rows,
            mask[:, None],
            (S, n_max, L),
        )


def _any_mask_kernels(dev: torch.device):
    import contextlib

    if dev.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def _varlen_attn():
    try:  # torch >= 2.10; the flash kernel behind it is CUDA-only
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def _prefill_varlen(q, k, v, lens: list[int], scale: float) -> torch.Tensor:
    import inspect

    fn = _varlen_attn()
    params = inspect.signature(fn).parameters
    kw: dict = {"scale": scale}
    if "window_size" in params:  # newer signature: causal is a (-1, 0) window
        kw["window_size"] = (-1, 0)
    else:
        kw["is_causal"] = True
    if "enable_gqa" in params:
        kw["enable_gqa"] = True
    elif k.shape[1] != q.shape[1]:  # older signature: repeat the KV heads for GQA
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    cu = [0]
    for n in lens:
        cu.append(cu[-1] + n)
    cu_t = torch.tensor(cu, dtype=torch.int32).to(q.device, non_blocking=True)
    m = max(lens)
    return fn(q, k, v, cu_t, cu_t, m, m, **kw)


def decode_attention_reference(
    q: torch.Tensor,  # [B, H, D]
    k_cache: torch.Tensor,  # [NB, bs, Hkv, D]
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,  # [B, >= max_blocks]
    context_lens: torch.Tensor,  # [B]
    scale: float,
    max_blocks: int,
) -> torch.Tensor:
    B, H, D = q.shape
    Hkv = k_cache.shape[2]
    idx = block_tables[:, :max_blocks].reshape(-1)
    nb, bs = block_tables[:, :max_blocks].shape[1], k_cache.shape[1]
    # [B, Hkv, L, D] contiguous: index_select + one transpose copy is the cheapest gather on CPU
    k = k_cache.index_select(0, idx).view(B, nb * bs, Hkv, D).transpose(1, 2).contiguous()
    v = v_cache.index_select(0, idx).view(B, nb * bs, Hkv, D).transpose(1, 2).contiguous()
    L = k.shape[2]
    # GQA without repeating K/V: queries grouped per KV head, [B, Hkv, G, D]
    s = q.view(B, Hkv, H // Hkv, D) @ k.transpose(-1, -2) * scale  # [B, Hkv, G, L]
    mask = torch.arange(L, device=q.device)[None] < context_lens[:, None]  # [B, L]
    s = s.float().masked_fill(~mask[:, None, None], float("-inf")).softmax(-1)
    o = s.to(v.dtype) @ v  # [B, Hkv, G, D]
    return o.reshape(B, H, D)


def decode_attention(q, k_cache, v_cache, batch: AttnBatch, scale: float) -> torch.Tensor:
    if q.is_cuda:
        if triton_available():
            return paged_decode(q, k_cache, v_cache, batch.block_tables, batch.context_lens, scale)
    return decode_attention_reference(
        q, k_cache, v_cache, batch.block_tables, batch.context_lens, scale, batch.max_blocks
    )
