"""Runs the native decoder over the paged KV cache: input packing, prefill, decode, CUDA graphs.

Decode on CUDA replays a CUDA graph captured per batch-size bucket (captured lazily on first
use, or all at once by `capture_all`): one launch instead of ~15 per layer. The graph reads
static device buffers (token ids, positions, slots, context lengths, block tables); a step copies
its inputs into them, pads the rows up to the bucket with a harmless dummy row (block 0,
context 1), replays, and reads the logits rows it needs.
"""

from __future__ import annotations

import bisect

import numpy as np
import torch

from r1kit.engine.attention import (
    AttnBatch,
    decode_attention,
    prefill_attention,
    prefill_cached_attention,
    store_kv,
)
from r1kit.engine.model import NativeDecoder
from r1kit.engine.sequence import Sequence

BUCKETS = [1, 2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512]


class ModelRunner:
    def __init__(
        self,
        model: NativeDecoder,
        num_blocks: int,
        block_size: int,
        max_num_seqs: int,
        max_model_len: int,
        cuda_graphs: bool,
    ) -> None:
        self.model = model
        self.bs = block_size
        self.num_blocks = num_blocks
        self.max_blocks = -(-max_model_len // block_size)
        self.scale = model.head_dim**-0.5
        self.device = model.device
        self.use_graphs = cuda_graphs and self.device.type == "cuda"
        self.buckets = [b for b in BUCKETS if b < max_num_seqs] + [max_num_seqs]
        n = self.buckets[-1]
        # host-side inputs: rows ids, positions, slots, context lengths; and block tables.
        # On CUDA the meta rows and a block-table staging area are pinned, so the per-step
        # uploads are asynchronous; two of each, used in turn: with pipelined decode, step t+1
        # is written while step t's upload may still wait in the stream (the host has only
        # waited for step t-1, whose upload came from the other pair).
        pin = self.device.type == "cuda"
        self._metas = [torch.zeros((4, n), dtype=torch.int64, pin_memory=pin) for _ in range(2)]
        self._stages = [
            torch.zeros(n * self.max_blocks, dtype=torch.int64, pin_memory=pin) for _ in range(2)
        ]
        self._turn = 0
        self._bt = np.zeros((n, self.max_blocks), dtype=np.int64)
        self._rows: list[tuple | None] = [None] * n  # (seq, epoch, blocks) written in each row
        self.k = self.v = None
        self.allocate()

    # ----------------------------------------------------------------- memory
    def allocate(self) -> None:
        """(Re)take the KV cache memory: k, v [layers, blocks, block_size, Hkv, D]."""
        m = self.model
        shape = (m.num_layers, self.num_blocks, self.bs, m.num_kv_heads, m.head_dim)
        self.k = torch.zeros(shape, dtype=m.dtype, device=self.device)
        self.v = torch.zeros(shape, dtype=m.dtype, device=self.device)
        n = self.buckets[-1]
        self.g_meta = torch.zeros((4, n), dtype=torch.int64, device=self.device)
        self.g_bt = torch.zeros((n, self.max_blocks), dtype=torch.int64, device=self.device)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool = None

    def release(self) -> None:
        """Free the KV cache and the graphs (they hold pointers into it) for the update phase."""
        self.k = self.v = self.g_meta = self.g_bt = None
        self.graphs, self._pool = {}, None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @property
    def kv_bytes(self) -> int:
        return 0 if self.k is None else 2 * self.k.numel() * self.k.element_size()

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        if pairs:
            src = torch.tensor([p[0] for p in pairs], device=self.device)
            dst = torch.tensor([p[1] for p in pairs], device=self.device)
            self.k[:, dst] = self.k[:, src]
            self.v[:, dst] = self.v[:, src]

    # ----------------------------------------------------------------- prefill
    @torch.inference_mode()
    def prefill(self, seqs: list[Sequence]) -> torch.Tensor:
        """The tokens of each sequence from `prefill_from` on (the ones before are cached
        prefix blocks) -> logits of each last token [len(seqs), V]."""
        bs = self.bs
        starts = [s.prefill_from for s in seqs]
        lens = [len(s.tokens) - st for s, st in zip(seqs, starts)]
        ids = [t for s, st in zip(seqs, starts) for t in s.tokens[st:]]
        pos = [p for s, st in zip(seqs, starts) for p in range(st, len(s.tokens))]
        slots = [
            s.blocks[p // bs] * bs + p % bs
            for s, st in zip(seqs, starts)
            for p in range(st, len(s.tokens))
        ]
        dev = self.device
        ids_t, pos_t, slots_t = (torch.tensor(x, device=dev) for x in (ids, pos, slots))
        last = torch.tensor(np.cumsum(lens) - 1, device=dev)
        batch = AttnBatch(slots=slots_t, prefill_lens=lens)
        if any(starts):
            batch.prefill_starts = starts
            batch.prefill_blocks = [s.blocks[: -(-len(s.tokens) // bs)] for s in seqs]
        return self.model.forward(ids_t, pos_t, self._attend(batch), last)

    # ----------------------------------------------------------------- decode
    @torch.inference_mode()
    def decode(self, seqs: list[Sequence], ids: torch.Tensor | None = None) -> torch.Tensor:
        """The last token of each sequence (not yet cached) -> logits [B, V]. `ids` [B] on the
        device replaces the host's token ids (pipelined decode: they are not on the host yet)."""
        B = len(seqs)
        self._turn ^= 1
        meta_t, stage = self._metas[self._turn], self._stages[self._turn]
        bs, meta, bt, rows = self.bs, meta_t.numpy(), self._bt, self._rows
        pos = [s.num_cached for s in seqs]
        meta[0, :B] = [s.tokens[-1] for s in seqs]
        meta[1, :B] = pos
        meta[2, :B] = [s.blocks[p // bs] * bs + p % bs for s, p in zip(seqs, pos)]
        meta[3, :B] = pos
        meta[3, :B] += 1
        width = 0
        for i, s in enumerate(seqs):  # rewrite only block-table rows that changed
            key = (s, s.epoch, len(s.blocks))
            if rows[i] != key:
                bt[i, : key[2]] = s.blocks
                rows[i] = key
            width = max(width, key[2])
        if not self.use_graphs:
            m = torch.from_numpy(meta[:, :B].copy()).to(self.device)
            if ids is not None:
                m[0] = ids
            bt_t = torch.from_numpy(bt[:B, :width].copy()).to(self.device)
            batch = AttnBatch(m[2], None, bt_t, m[3], width)
            return self.model.forward(m[0], m[1], self._attend(batch))
        b = self.buckets[bisect.bisect_left(self.buckets, B)]
        meta[:, B:b] = 0
        meta[3, B:b] = 1  # dummy rows: token 0 at slot 0 of block 0, context 1
        bt[B:b, 0] = 0
        rows[B:b] = [None] * (b - B)
        self.g_meta.copy_(meta_t, non_blocking=True)
        if ids is not None:
            self.g_meta[0, :B].copy_(ids)
        stage = stage[: b * width].view(b, width)
        stage.numpy()[:] = bt[:b, :width]
        self.g_bt[:b, :width].copy_(stage, non_blocking=True)
        graph, logits = self.graphs.get(b) or self._capture(b)
        graph.replay()
        return logits[:B]

    def _static_decode(self, b: int) -> torch.Tensor:
        m = self.g_meta[:, :b]
        batch = AttnBatch(m[2], None, self.g_bt[:b], m[3], self.max_blocks)
        return self.model.forward(m[0], m[1], self._attend(batch))

    def _capture(self, b: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s), torch.inference_mode():
            self._static_decode(b)  # warm-up: compiles the Triton kernels, settles the allocator
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool), torch.inference_mode():
            logits = self._static_decode(b)
        self._pool = graph.pool()
        self.graphs[b] = (graph, logits)
        return graph, logits

    def capture_all(self) -> None:
        """Capture every bucket now (largest first, so smaller graphs reuse its pool)."""
        if self.use_graphs:
            for b in reversed(self.buckets):
                if b not in self.graphs:
                    self._capture(b)

    # ----------------------------------------------------------------- attention hook
    def _attend(self, batch: AttnBatch):
        def attend(i: int, q, k, v):
            store_kv(self.k[i], self.v[i], k, v, batch.slots)
            if batch.prefill_starts is not None:
                return prefill_cached_attention(q, k, v, self.k[i], self.v[i], batch, self.scale)
            if batch.prefill_lens is not None:
                return prefill_attention(q, k, v, batch.prefill_lens, self.scale)
            return decode_attention(q, self.k[i], self.v[i], batch, self.scale)

        return attend
