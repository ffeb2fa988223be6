"""Prices and the quota arithmetic of a request: what it may generate before it starts.

A request reserves its worst case when admitted: its prompt plus `n x max_tokens`, priced with
every prompt token a cache miss. `grant` clamps max_tokens to what the key's token quota and
money credit leave, so no number of concurrent requests and no `n` can spend past either.
"""

from __future__ import annotations

import math
from typing import NamedTuple


class Prices(NamedTuple):
    """Per 1M tokens, in the key's currency: prompt (cache miss), prompt cache hit, completion."""

    prompt: float
    cache_hit: float
    completion: float

    def cost(self, prompt_tokens: int, cache_hit_tokens: int, completion_tokens: int) -> float:
        miss = prompt_tokens - cache_hit_tokens
        return (
            miss * self.prompt
            + cache_hit_tokens * self.cache_hit
            + completion_tokens * self.completion
        ) / 1e6


# DeepSeek's list prices for deepseek-reasoner (R1): cache miss, cache hit, output per 1M tokens
DEFAULT_PRICES = {"USD": Prices(0.55, 0.14, 2.19), "CNY": Prices(4.0, 1.0, 16.0)}


def grant(
    tokens_left: int | None,
    money_left: float | None,
    prices: Prices,
    prompt_tokens: int,
    n: int,
    max_tokens: int,
) -> int:
    """The max_tokens per sample a request may have: at most `max_tokens`, and such that the
    prompt plus n samples fit what is left of the quota (tokens) and of the credit (money,
    prompt priced as cache misses). 0 when not even one token fits. None: no such limit."""
    m = max_tokens
    if tokens_left is not None:
        m = min(m, (tokens_left - prompt_tokens) // n)
    if money_left is not None:
        room = money_left - prices.cost(prompt_tokens, 0, 0)
        if prices.completion > 0:
            m = min(m, math.floor(room * 1e6 / (n * prices.completion)))
            # float rounding must never grant a token past the credit
            while m > 0 and prices.cost(prompt_tokens, 0, n * m) > money_left:
                m -= 1
        elif room < 0:
            m = 0
    return max(m, 0)
