"""Context caching through the server, as DeepSeek's API reports it: `prompt_cache_hit_tokens`,
`prompt_cache_miss_tokens` and OpenAI's `prompt_tokens_details.cached_tokens`, read with the real
`openai` client over a multi-turn chat; `--no-prefix-cache` reports no hits."""

from __future__ import annotations

import uuid

import openai
import pytest
from serve_server import MODEL, Server, shared

BLOCK = 32  # the paged engine's default block size: hits come in whole blocks


@pytest.fixture(scope="module")
def srv():
    return shared()


def _system() -> list[dict]:
    """A system prompt of several blocks that no other test sent (no hits at first)."""
    words = " ".join(f"rule {i}: {uuid.uuid4().hex[:8]}." for i in range(12))
    return [{"role": "system", "content": f"You follow these rules. {words}"}]


def _usage(client, msgs: list[dict]):
    r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8, seed=1)
    return r, r.usage


def test_multi_turn_hits_are_exact(srv):
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key=srv.key, max_retries=0)
    msgs = _system() + [{"role": "user", "content": "What is 2 + 2?"}]
    r1, u1 = _usage(client, msgs)
    p1 = u1.prompt_tokens
    assert p1 > 3 * BLOCK
    assert (u1.prompt_cache_hit_tokens, u1.prompt_cache_miss_tokens) == (0, p1)
    assert u1.prompt_tokens_details.cached_tokens == 0
    # the same prompt again: every full block but the one holding its last token
    _, u2 = _usage(client, msgs)
    hit = (p1 - 1) // BLOCK * BLOCK
    assert u2.prompt_tokens == p1
    assert (u2.prompt_cache_hit_tokens, u2.prompt_cache_miss_tokens) == (hit, p1 - hit)
    assert u2.prompt_tokens_details.cached_tokens == hit
    # turn 2 resends turn 1 and adds to it: at least turn 1's prompt blocks hit, streamed too
    turn2 = msgs + [
        {"role": "assistant", "content": r1.choices[0].message.content or "4"},
        {"role": "user", "content": "And 3 + 3?"},
    ]
    stream = client.chat.completions.create(
        model=MODEL,
        messages=turn2,
        max_tokens=8,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    u3 = [c.usage for c in stream if c.usage][0]
    assert u3.prompt_cache_hit_tokens >= hit and u3.prompt_cache_hit_tokens % BLOCK == 0
    assert u3.prompt_cache_hit_tokens + u3.prompt_cache_miss_tokens == u3.prompt_tokens


def test_no_prefix_cache_reports_no_hits():
    off = Server(prefix_cache=False)
    try:
        client = openai.OpenAI(base_url=off.url + "/v1", api_key=off.key, max_retries=0)
        msgs = _system() + [{"role": "user", "content": "What is 2 + 2?"}]
        for _ in range(2):
            _, u = _usage(client, msgs)
            assert (u.prompt_cache_hit_tokens, u.prompt_cache_miss_tokens) == (0, u.prompt_tokens)
            assert u.prompt_tokens_details.cached_tokens == 0
    finally:
        off.close()
