"""One GRPO step's batch: prompts_per_step groups of group_size scored rollouts.

With dynamic sampling (DAPO) groups whose rewards are all equal carry no gradient and are
dropped, and more prompts are sampled to refill the batch, for at most `max_refills` extra
rounds (a short batch trains as it is). The soft overlong punishment (DAPO) is added to each
completion's reward here, before groups are compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from r1kit.config.parts import GRPO
from r1kit.engine import Engine, SamplingParams
from r1kit.rewards.base import WeightedReward
from r1kit.rl import grpo
from r1kit.sampling.rollout import Rollout, generate_scored


def collect(
    engine: Engine,
    tokenizer: Any,
    stream: Iterator[dict],
    template: str,
    algo: GRPO,
    params: SamplingParams,
    reward: WeightedReward,
) -> tuple[list[Rollout], int, int]:
    """(rollouts in group order, prompts consumed from `stream`, groups dropped)."""
    G, want = algo.group_size, algo.prompts_per_step
    kept: list[Rollout] = []
    used = dropped = 0
    for _ in range(1 + (algo.max_refills if algo.dynamic_sampling else 0)):
        need = want - len(kept) // G
        if need <= 0:
            break
        examples = [next(stream) for _ in range(need)]
        used += need
        rollouts = generate_scored(engine, tokenizer, examples, template, params, reward)
        if algo.overlong_buffer:
            lens = torch.tensor([len(r.completion_ids) for r in rollouts])
            pen = grpo.soft_overlong_penalty(lens, params.max_tokens, algo.overlong_buffer)
            for r, p in zip(rollouts, pen.tolist()):
                r.rewards["overlong"] = p
                r.reward += p
        for i in range(0, len(rollouts), G):
            group = rollouts[i : i + G]
            if algo.dynamic_sampling and len({r.reward for r in group}) == 1:
                dropped += 1
                continue
            kept.extend(group)
    if not kept:  # every group was degenerate: train on the last round (zero advantages)
        kept = rollouts
    return kept[: want * G], used, dropped


def checked(rewards: dict[str, float]) -> float:
    """The answer-checking reward of a rollout: accuracy, or the code reward (tests passed)."""
    return rewards.get("accuracy", rewards.get("code", rewards.get("code_fraction", 0.0)))


def batch_metrics(rollouts: list[Rollout]) -> dict[str, float]:
    """A step's rollout metrics: mean reward, checked accuracy, format, length, reflection and
    truncation rates."""
    n = len(rollouts)
    return {
        "reward": sum(r.reward for r in rollouts) / n,
        "accuracy": sum(checked(r.rewards) for r in rollouts) / n,
        "format": sum(r.rewards.get("format", 0) for r in rollouts) / n,
        "response_len": sum(len(r.completion_ids) for r in rollouts) / n,
        "reflection_rate": sum(r.reflects for r in rollouts) / n,
        "truncated": sum(r.finish_reason == "length" for r in rollouts) / n,
    }
