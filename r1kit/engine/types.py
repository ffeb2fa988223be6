"""The engine contract: token ids in, token ids (and log-probs) out. No tokenizer inside."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1  # samples per prompt; they share the prompt's prefill
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    max_tokens: int = 256
    stop_token_ids: tuple[int, ...] = ()  # generation ends after emitting one of these
    seed: int | None = None  # same seed + same prompt -> same samples
    logprobs: bool = False  # return log p(token) under the temperature-scaled distribution

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_tokens < 1:
            raise ValueError("n and max_tokens must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError("temperature >= 0, 0 < top_p <= 1 and top_k >= 0 are required")


@dataclass
class Sample:
    token_ids: list[int]
    logprobs: list[float] | None = None
    finish_reason: Literal["stop", "length", "abort"] = "length"
    prompt_len: int = 0


@dataclass
class RequestOutput:
    prompt_ids: list[int]
    samples: list[Sample] = field(default_factory=list)
    num_cached_tokens: int = 0  # prompt tokens whose K/V came from the prefix cache


class Engine(Protocol):
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams],
    ) -> list[RequestOutput]: ...


def params_per_prompt(
    prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams]
) -> list[SamplingParams]:
    """One SamplingParams per prompt: a single one is shared by all (every engine's batch call)."""
    plist = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
    if len(plist) != len(prompts):
        raise ValueError("one SamplingParams per prompt (or a single one for all)")
    return plist
