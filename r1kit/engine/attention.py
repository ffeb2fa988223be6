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
    prefill_blocks: list[torch.Tensor] | None = None  # ... and each sequence's blocks [nb]


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
    and math kernels: they take any mask without building a plan per shape."""
    lens, starts = batch.prefill_lens, batch.prefill_starts
    dev = q.device
    out = torch.empty_like(q)
    offs = [0]
    for n in lens:
        offs.append(offs[-1] + n)
    plain = [i for i, st in enumerate(starts) if st == 0]
    if plain:  # one packed call for those: gather their rows, attend, scatter back
        rows = torch.cat([torch.arange(offs[i], offs[i + 1]) for i in plain]).to(dev)
        out[rows] = prefill_attention(q[rows], k[rows], v[rows], [lens[i] for i in plain], scale)
    cached = [i for i, st in enumerate(starts) if st]
    S, H, D = len(cached), q.shape[1], q.shape[2]
    bs, Hkv = k_cache.shape[1], k_cache.shape[2]
    n_max = -(-max(lens[i] for i in cached) // 8) * 8
    nb = max(len(batch.prefill_blocks[i]) for i in cached)
    bt = torch.zeros((S, nb), dtype=torch.long, device=dev)  # block 0 pads: masked out
    qidx = torch.zeros((S, n_max), dtype=torch.long)  # padded query rows read row 0
    for r, i in enumerate(cached):
        bt[r, : len(batch.prefill_blocks[i])] = batch.prefill_blocks[i]
        qidx[r, : lens[i]] = torch.arange(offs[i], offs[i + 1])
    L = nb * bs
    qidx = qidx.to(dev)
    kc = k_cache.index_select(0, bt.view(-1)).view(S, L, Hkv, D)
    vc = v_cache.index_select(0, bt.view(-1)).view(S, L, Hkv, D)
    if Hkv != H:  # the efficient kernel takes no GQA: repeat the KV heads
        kc, vc = kc.repeat_interleave(H // Hkv, 2), vc.repeat_interleave(H // Hkv, 2)
    qp = q.index_select(0, qidx.view(-1)).view(S, n_max, H, D)
    # causal, aligned bottom-right: query r of sequence i sees keys j <= start_i + r
    st = torch.tensor([starts[i] for i in cached], device=dev)
    pos = st[:, None] + torch.arange(n_max, device=dev)[None]  # [S, n_max]
    mask = torch.arange(L, device=dev)[None, None] <= pos[:, :, None]  # [S, n_max, L]
    with _any_mask_kernels(dev):
        o = F.scaled_dot_product_attention(
            qp.transpose(1, 2),
            kc.transpose(1, 2),
            vc.transpose(1, 2),
            attn_mask=mask[:, None],
            scale=scale,
        )
    o = o.transpose(1, 2)  # [S, n_max, H, D]
    for r, i in enumerate(cached):
        out[offs[i] : offs[i + 1]] = o[r, : lens[i]]
    return out


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
