"""Rewards: plain callables `reward(completion, example) -> float`, a registry and plugins."""

from r1kit.rewards import code, language, rules  # noqa: F401  (registers the built-ins)
from r1kit.rewards.base import (
    REGISTRY,
    RewardFn,
    WeightedReward,
    get_reward,
    parse_reward_spec,
    register,
)

__all__ = ["REGISTRY", "RewardFn", "WeightedReward", "get_reward", "parse_reward_spec", "register"]
