"""Evaluate a model on held-out problems: k samples each, pass@1, pass@k, format-aware accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from r1kit.engine import Engine, SamplingParams
from r1kit.eval.metrics import summarize
from r1kit.rewards.base import WeightedReward
from r1kit.rl.rollout import Rollout, generate, score


def evaluate(
    engine: Engine,
    tokenizer: Any,
    problems: Sequence[dict],
    template: str,
    params: SamplingParams,
) -> tuple[dict[str, float], list[Rollout]]:
    """Summary (pass1, passk, format rate, accuracy among well-formatted answers, mean length,
    reflection rate) and the scored rollouts, problem by problem."""
    rollouts = generate(engine, tokenizer, problems, template, params)
    score(rollouts, WeightedReward({"accuracy": 1.0, "format": 1.0}))
    return summarize_rollouts(rollouts, params.n), rollouts


def summarize_rollouts(rollouts: Sequence[Rollout], k: int) -> dict[str, float]:
    """The summary of `evaluate` from its scored rollouts (k per problem, problem by problem)."""
    correct = [
        [r.rewards["accuracy"] > 0 for r in rollouts[i : i + k]] for i in range(0, len(rollouts), k)
    ]
    formatted = [r for r in rollouts if r.rewards["format"] > 0]
    out = summarize(correct, k)
    out.update(
        format_rate=len(formatted) / len(rollouts),
        formatted_accuracy=(
            sum(r.rewards["accuracy"] for r in formatted) / len(formatted) if formatted else 0.0
        ),
        mean_length=sum(len(r.completion_ids) for r in rollouts) / len(rollouts),
        reflection_rate=sum(r.reflects for r in rollouts) / len(rollouts),
        n_problems=len(rollouts) // k,
    )
    return out
