"""Which problems fit the model: a prompt whose tokens plus the completion budget exceed the
model's context can never be sampled (the paged engine refuses it, and `--resume` would draw it
again every time), so it is dropped when the data loads, with a count, instead of crashing the
run when it is drawn.

Dropped, never truncated: cutting a math question's text loses the numbers or the question
itself, and its gold answer would then grade a problem the model was never shown. The rule is
prompt tokens + `max_tokens` <= context: a prompt that leaves less room than the budget gets
its completions cut by the context instead of `--max-tokens`, which the overlong penalty and
the truncation mask would then misjudge.

Cheap: prompts are tokenized in batches by the fast tokenizer (20,000 short questions in 1.5 s
with the R1-Zero prompt, 2.6 s through a chat template, on one shared CPU core); endless
procedural streams are checked lazily, as each problem is drawn.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from r1kit.chat import build_prompt, encode_prompt_batch
from r1kit.data.notes import places, warn
from r1kit.data.tasks import Example
from r1kit.errors import R1kitError

CHUNK = 1024  # prompts per tokenizer call: batched, without holding every id list at once
PROBE = 64  # problems of an endless stream checked when it starts


def model_context(model: Any, engine: Any = None) -> int | None:
    """The most tokens a sequence may hold: the engine's limit when it has one (the paged
    engine caps long contexts), else the model config's position limit; None when unknown."""
    limit = getattr(engine, "max_model_len", None)
    if limit:
        return int(limit)
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if isinstance(getattr(cfg, name, None), int):
            return getattr(cfg, name)
    return None


class PromptFit:
    """The length check of one model, prompt format and completion budget."""

    def __init__(self, tokenizer: Any, template: str, context: int | None, budget: int) -> None:
        self.tokenizer, self.template = tokenizer, template
        self.context, self.budget = context, budget
        if context is not None and budget >= context:
            raise R1kitError(
                f"--max-tokens {budget} leaves no room for a prompt in the model's context of "
                f"{context} tokens; lower --max-tokens"
            )

    @property
    def room(self) -> int | None:
        """The most prompt tokens a problem may have (None: no limit known)."""
        return None if self.context is None else self.context - self.budget

    def lengths(self, questions: Sequence[str]) -> list[int]:
        """Prompt tokens of each question, as the rollout encodes it (sampling/rollout.py)."""
        out: list[int] = []
        for i in range(0, len(questions), CHUNK):
            texts = [
                build_prompt(self.template, q, self.tokenizer) for q in questions[i : i + CHUNK]
            ]
            out += [len(ids) for ids in encode_prompt_batch(self.tokenizer, texts)]
        return out

    def _why(self) -> str:
        budget = f"{self.budget} kept for --max-tokens"
        return f"longer than the context ({self.context} tokens with {budget})"

    def keep(
        self, rows: list[Example], what: str, wheres: Sequence[str] | None = None
    ) -> list[Example]:
        """The rows whose prompt fits; a warning counts (and places) the others."""
        if self.room is None or not rows:
            return rows
        fits = [n <= self.room for n in self.lengths([r["question"] for r in rows])]
        kept = [r for r, ok in zip(rows, fits) if ok]
        if len(kept) < len(rows):
            where = [w for w, ok in zip(wheres or [], fits) if not ok]
            warn(
                f"dropped {len(rows) - len(kept)} of {len(rows)} {what} {self._why()}"
                + (f": {places(where)}" if where else "")
            )
        if not kept:
            raise R1kitError(f"none of the {len(rows)} {what} fits: every one is {self._why()}")
        return kept

    def stream(self, examples: Iterator[Example]) -> Iterator[Example]:
        """An endless stream without the problems that do not fit, checked as they are drawn
        (`probe` warns about them when the stream starts)."""
        if self.room is None:
            return examples
        room = self.room
        return (ex for ex in examples if self.lengths([ex["question"]])[0] <= room)

    def probe(self, examples: Iterator[Example], what: str) -> None:
        """Check the first PROBE problems of an endless stream: none fitting is an error, some
        not fitting a warning (such problems are then skipped as they are drawn)."""
        if self.room is None:
            return
        first = list(itertools.islice(examples, PROBE))
        n = sum(k > self.room for k in self.lengths([ex["question"] for ex in first]))
        if n == len(first):
            raise R1kitError(f"none of the first {n} {what} fits: every one is {self._why()}")
        if n:
            warn(
                f"{n} of the first {len(first)} {what} are {self._why()}; such problems are "
                "skipped as they are drawn"
            )
