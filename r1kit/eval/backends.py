"""Where samples come from: the local engine, an OpenAI-compatible endpoint, or the reference
answers themselves (`--gold`). Each backend turns requests into finished samples:

    backend.generate(requests, params) -> iterator of lists of sample records

A request asks for samples `start .. start+n-1` of one problem; a record carries problem_id,
sample, prompt, reasoning, answer, tokens and finish_reason. Records come in batches as they
finish, so the caller can write them at once and an interrupted run loses little.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from r1kit.chat import user_message


@dataclass(frozen=True)
class Request:
    problem: dict  # {"id", "question", "gold", "reference"}
    start: int  # index of the first sample asked for
    n: int
    seed: int | None = None  # None: unseeded


@dataclass(frozen=True)
class Params:
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 32768


def request_seed(seed: int | None, problem_id: str, start: int) -> int | None:
    """A per-request seed from the run's seed, so samples do not depend on batching and a resumed
    run draws fresh samples for the indices it still needs."""
    if seed is None:
        return None
    digest = hashlib.sha256(f"{seed}:{problem_id}:{start}".encode()).hexdigest()
    return int(digest[:8], 16)


def engine_kind(name: str) -> str:
    """--engine: auto (the paged engine where the architecture is supported, else the HF loop),
    paged or hf; the name goes to `r1kit.engine.make_engine` as it is."""
    return name


class GoldBackend:
    """Each problem's reference solution or answer, as if a model had written it: a check of the
    verifier and of a dataset before spending GPU hours."""

    kind = "gold"
    name = "reference"
    template = "chat"

    def generate(self, requests: list[Request], params: Params) -> Iterator[list[dict]]:
        for r in requests:
            yield [
                {
                    "problem_id": r.problem["id"],
                    "sample": j,
                    "prompt": user_message(r.problem["question"]),
                    "reasoning": "",
                    "answer": r.problem["reference"],
                    "tokens": 0,
                    "prompt_tokens": 0,
                    "finish_reason": "stop",
                }
                for j in range(r.start, r.start + r.n)
            ]

    def close(self) -> None:
        pass
