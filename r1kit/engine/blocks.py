"""Block bookkeeping for the paged KV cache: a free list, reference counts and the prefix cache.

A block holds `block_size` consecutive tokens of one sequence. Blocks are shared by reference
count: the n samples of a request point at the prompt's full blocks until they are freed.
Block 0 is reserved (padded rows of a CUDA-graph batch write into it) and never handed out.

Prefix cache (automatic, as vLLM's): a full block whose K/V are computed is registered under the
hash of its tokens chained with the hash of the prefix before it, so equal hashes mean equal
token prefixes (up to a 64-bit collision). When its last reference goes, a registered block is
not freed but kept, least recently used first in line for eviction; a later sequence with the
same prefix takes it back (`lookup`) instead of recomputing it. `num_free` counts those kept
blocks as free: `allocate` evicts them (oldest first) once the plain free list is empty, so a
running request never waits on the cache. `clear()` forgets every hash (weight sync: K/V
computed with old weights must not be reused).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

ROOT_HASH = 0x5EED  # parent hash of a sequence's first block


class OutOfBlocks(Exception):
    pass


def block_hash(parent: int, tokens: Sequence[int]) -> int:
    """Hash of one full block given its prefix's hash (ints hash the same in every process)."""
    return hash((parent, *tokens))


class BlockAllocator:
    def __init__(self, num_blocks: int, prefix_cache: bool = True) -> None:
        if num_blocks < 2:
            raise ValueError("the KV cache needs at least 2 blocks (block 0 is reserved)")
        self.num_blocks = num_blocks
        self.prefix_cache = prefix_cache
        self._free = list(range(num_blocks - 1, 0, -1))  # pop() hands out low ids first
        self._ref = [0] * num_blocks
        self._cached: dict[int, int] = {}  # block hash -> block
        self._hash_of: dict[int, int] = {}  # block -> its hash (registered blocks only)
        self._idle: OrderedDict[int, None] = OrderedDict()  # registered, unreferenced: LRU first
        self.num_evicted = 0

    @property
    def num_free(self) -> int:
        """Blocks `allocate` can hand out now: free ones plus cached ones nobody references."""
        return len(self._free) + len(self._idle)

    @property
    def num_cached(self) -> int:
        return len(self._cached)

    def allocate(self, n: int) -> list[int]:
        if n > self.num_free:
            raise OutOfBlocks(f"need {n} blocks, {self.num_free} free")
        out = []
        for _ in range(n):
            if self._free:
                b = self._free.pop()
            else:  # evict the least recently used cached block
                b, _ = self._idle.popitem(last=False)
                del self._cached[self._hash_of.pop(b)]
                self.num_evicted += 1
            self._ref[b] = 1
            out.append(b)
        return out

    def share(self, blocks: list[int]) -> None:
        for b in blocks:
            if self._ref[b] == 0:
                self._idle.pop(b)
            self._ref[b] += 1

    def release(self, blocks: list[int]) -> None:
        for b in blocks:
            self._ref[b] -= 1
            if self._ref[b] == 0:
                if b in self._hash_of:
                    self._idle[b] = None  # most recently used end
                else:
                    self._free.append(b)
            elif self._ref[b] < 0:
                raise RuntimeError(f"block {b} released twice")

    # ----------------------------------------------------------------- prefix cache
    def match(self, hashes: Sequence[int]) -> list[int]:
        """The cached blocks of the longest prefix of `hashes` (not yet referenced)."""
        out = []
        if self.prefix_cache:
            for h in hashes:
                b = self._cached.get(h)
                if b is None:
                    break
                out.append(b)
        return out

    def num_idle(self, blocks: Sequence[int]) -> int:
        """How many of `blocks` sit unreferenced in the cache (taking them uses free room)."""
        return sum(1 for b in blocks if self._ref[b] == 0)

    def register(self, block: int, h: int) -> None:
        """Mark a referenced, fully computed block as holding the prefix with hash `h`. A hash
        already cached under another block is left there (this block stays private)."""
        if self.prefix_cache and h not in self._cached and block not in self._hash_of:
            self._cached[h] = block
            self._hash_of[block] = h

    def clear(self) -> None:
        """Forget every cached prefix: idle blocks become free, referenced ones are freed when
        their last user releases them."""
        for b in self._idle:
            self._free.append(b)
        self._idle.clear()
        self._cached.clear()
        self._hash_of.clear()
