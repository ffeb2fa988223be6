"""Continuous batching: which sequences run in the next step, and their KV blocks.

Each step is either a prefill (new requests, admitted first-come first-served while there are
sequence slots, prefill-token budget and free blocks) or a decode of every running sequence.
A request's n samples are admitted together and prefilled once; afterwards they share the
prompt's full blocks and each gets its own copy of the partial last block (`fork`).
When a decode step finds no free block, the most recently admitted sequences are preempted:
their blocks are freed and they go back to the head of the queue to be recomputed (their tokens
and log-probs are kept; recompute costs one prefill).

Prefix caching (blocks.py): at admission the head of a group takes the cached blocks of its
longest cached prefix of full blocks (always leaving at least its last token to compute, whose
logits are sampled) and only the rest is prefilled. Full blocks are registered in the cache as
soon as their K/V are computed (prompt blocks at admission: the prefill of the same step writes
each layer's K/V before any sequence of the pack attends to it), and a sequence's decoded full
blocks when it finishes or is preempted, so a preempted sequence's recompute is mostly hits.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from r1kit.engine.blocks import ROOT_HASH, BlockAllocator, block_hash
from r1kit.engine.sequence import Sequence


@dataclass
class Plan:
    prefill: list[list[Sequence]]  # groups; group[0]'s tokens are prefilled for all of them
    decode: list[Sequence]
    copies: list[tuple[int, int]]  # (src block, dst block) to copy before the step


class Scheduler:
    def __init__(
        self,
        allocator: BlockAllocator,
        block_size: int,
        max_num_seqs: int,
        max_prefill_tokens: int,
    ) -> None:
        self.alloc = allocator
        self.bs = block_size
        self.max_num_seqs = max_num_seqs
        self.max_prefill_tokens = max_prefill_tokens
        self.waiting: deque[list[Sequence]] = deque()
        self.running: list[Sequence] = []
        self.num_preempted = 0

    def add(self, group: list[Sequence]) -> None:
        self.waiting.append(group)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _hashes(self, s: Sequence) -> list[int]:
        """Chained hashes of the full blocks of `s.tokens` (extended as tokens are appended)."""
        hs, bs = s.hashes, self.bs
        for i in range(len(hs), len(s.tokens) // bs):
            hs.append(block_hash(hs[-1] if hs else ROOT_HASH, s.tokens[i * bs : (i + 1) * bs]))
        return hs

    def _hits(self, s: Sequence) -> list[int]:
        """Cached blocks for the prefix of `s`; its last token is always left to compute."""
        if not self.alloc.prefix_cache:
            return []
        return self.alloc.match(self._hashes(s)[: (len(s.tokens) - 1) // self.bs])

    def _blocks_for(self, group: list[Sequence], hits: list[int] | None = None) -> int:
        """Free blocks the group's admission uses (cached hits nobody holds count too)."""
        n = len(group[0].tokens)
        partial = 1 if n % self.bs else 0
        hits = self._hits(group[0]) if hits is None else hits
        new = -(-n // self.bs) - len(hits) + partial * (len(group) - 1)
        return new + self.alloc.num_idle(hits)

    def _register(self, s: Sequence) -> None:
        """Put the sequence's full, computed blocks in the prefix cache."""
        if self.alloc.prefix_cache:
            full = min(s.num_cached, len(s.tokens)) // self.bs
            for b, h in zip(s.blocks[:full], self._hashes(s)[:full]):
                self.alloc.register(b, h)

    def schedule(self) -> Plan:
        plan = Plan([], [], [])
        tokens = 0
        seqs = len(self.running)
        while self.waiting:
            group = self.waiting[0]
            hits = self._hits(group[0])
            need = self._blocks_for(group, hits)
            n_tok = len(group[0].tokens) - len(hits) * self.bs
            if seqs + len(group) > self.max_num_seqs or need > self.alloc.num_free:
                break
            if plan.prefill and tokens + n_tok > self.max_prefill_tokens:
                break
            self.waiting.popleft()
            self._place(group, plan, hits)
            plan.prefill.append(group)
            tokens += n_tok
            seqs += len(group)
        if plan.prefill:
            return plan
        if not self.running and self.waiting:  # nothing runs, and the head can never fit
            group = self.waiting.popleft()
            for s in group:
                s.finish_reason = "abort"
            raise MemoryError(
                f"a request needs {self._blocks_for(group)} KV blocks but the cache has "
                f"{self.alloc.num_blocks - 1}; raise the KV memory budget or shorten it"
            )
        self._grow_running()
        plan.decode = list(self.running)
        return plan

    def _place(self, group: list[Sequence], plan: Plan, hits: list[int]) -> None:
        """Blocks for the group's prompt (cached hits first); the other samples share full
        blocks and copy the last."""
        head = group[0]
        self.alloc.share(hits)
        head.blocks = hits + self.alloc.allocate(-(-len(head.tokens) // self.bs) - len(hits))
        head.prefill_from = len(hits) * self.bs
        if head.request.num_cached_tokens is None:  # first admission (not a recompute)
            head.request.num_cached_tokens = head.prefill_from
        full = len(head.tokens) // self.bs
        for s in group[1:]:
            s.blocks = list(head.blocks[:full])
            self.alloc.share(s.blocks)
            if full < len(head.blocks):
                (dst,) = self.alloc.allocate(1)
                s.blocks.append(dst)
                plan.copies.append((head.blocks[-1], dst))
        for s in group:
            s.num_cached = len(head.tokens)  # true once the prefill step has run
        self._register(head)
        self.running.extend(group)

    def _grow_running(self) -> None:
        self.running = self.grow(self.running)

    def grow(self, batch: list[Sequence]) -> list[Sequence]:
        """Give each sequence of a decode batch a block for its next token, preempting the most
        recently admitted running sequences when none is free. Returns the batch left."""
        out = []
        for s in batch:
            if not s.blocks:  # preempted while growing an earlier sequence
                continue
            while s.num_cached // self.bs >= len(s.blocks):
                if self.alloc.num_free == 0:
                    self.preempt(self.running[-1])
                    if not s.blocks:
                        break
                    continue
                s.blocks += self.alloc.allocate(1)
            if s.blocks:
                out.append(s)
        return [s for s in out if s.blocks]

    def can_admit(self) -> bool:
        """Whether the head of the queue would be admitted by `schedule()` now."""
        if not self.waiting:
            return False
        group = self.waiting[0]
        return (
            len(self.running) + len(group) <= self.max_num_seqs
            and self._blocks_for(group) <= self.alloc.num_free
        )

    def preempt(self, s: Sequence) -> None:
        self.running.remove(s)
        self._register(s)
        self.alloc.release(s.blocks)
        s.blocks, s.num_cached = [], 0
        s.epoch += 1
        self.waiting.appendleft([s])
        self.num_preempted += 1

    def finish(self, s: Sequence, reason: str) -> None:
        """Free the sequence's blocks; `reap()` then drops it from the running list. A sequence
        can finish while preempted (its last token arrives after it lost its blocks): it then
        leaves the queue too."""
        s.finish_reason = reason
        if not s.blocks and any(s in g for g in self.waiting):
            self.waiting = deque(g for g in self.waiting if s not in g)
        self._register(s)
        self.alloc.release(s.blocks)
        s.blocks = []

    def reap(self) -> None:
        self.running = [s for s in self.running if s.finish_reason is None]

    def abort(self, seqs: list[Sequence]) -> None:
        ids = {id(s) for s in seqs}
        self.waiting = deque(g for g in self.waiting if not any(id(s) in ids for s in g))
        for s in seqs:
            if s.finish_reason is None:
                self.finish(s, "abort")
        self.reap()
