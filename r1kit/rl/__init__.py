"""GRPO reinforcement learning: objective, rollouts, trainer."""
