"""Rewards: plain callables `reward(completion, example) -> float`, a registry and plugins."""

# importing these registers the built-in rewards and the reward_model@PATH factory
from r1kit.rewards import code, language, reward_model, rules  # noqa: F401
from r1kit.rewards.base import (
    REGISTRY,
    RewardFn,
    WeightedReward,
    get_reward,
    parse_reward_spec,
    register,
)

__all__ = ["REGISTRY", "RewardFn", "WeightedReward", "get_reward", "parse_reward_spec", "register"]
