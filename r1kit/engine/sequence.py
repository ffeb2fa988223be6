"""Request and sequence state inside the paged engine (token ids only)."""

from __future__ import annotations

from dataclasses import dataclass, field

from r1kit.engine.sampler import row_seed
from r1kit.engine.types import SamplingParams


@dataclass(eq=False)  # identity semantics: a sequence is itself, not its fields
class Sequence:
    """One sample of a request: its tokens (prompt + output), KV blocks and log-probs."""

    request: Request
    index: int  # sample j of the request
    tokens: list[int]
    blocks: list[int] = field(default_factory=list)
    num_cached: int = 0  # leading tokens whose K/V are in the cache
    prefill_from: int = 0  # first token the next prefill computes (the ones before: cache hits)
    hashes: list[int] = field(default_factory=list)  # chained hash of each full block of tokens
    epoch: int = 0  # bumped when the blocks are taken away (preemption)
    npending: int = 0  # tokens sampled on the device but not yet appended (pipelined decode)
    logprobs: list[float] | None = None
    finish_reason: str | None = None  # stop | length | abort

    def __post_init__(self) -> None:
        # plain attributes, not properties: the decode loop reads them for every sequence
        self.params: SamplingParams = self.request.params
        self.prompt_len: int = len(self.request.prompt_ids)

    @property
    def seed(self) -> int:
        return row_seed(self.request.seed, self.index)

    @property
    def output(self) -> list[int]:
        return self.tokens[self.prompt_len :]

    @property
    def num_output(self) -> int:
        return len(self.tokens) - self.prompt_len


@dataclass(eq=False)
class Request:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    seed: int  # the request's seed (drawn by the engine when params.seed is None)
    seqs: list[Sequence] = field(default_factory=list)
    num_cached_tokens: int | None = None  # prompt tokens found in the prefix cache at admission

    def __post_init__(self) -> None:
        self.seqs = [
            Sequence(self, j, list(self.prompt_ids), logprobs=[] if self.params.logprobs else None)
            for j in range(self.params.n)
        ]

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    @property
    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.seqs)
