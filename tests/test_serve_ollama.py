"""The Ollama contract through the real `ollama` client against r1kit's server."""

from __future__ import annotations

import httpx
import ollama
import pytest
from serve_server import MODEL, shared

from r1kit.chat import R1ZERO_CHAT_TEMPLATE, split_reasoning

Q = [{"role": "user", "content": "What is 3 + 4?"}]


@pytest.fixture(scope="module")
def srv():
    return shared()


@pytest.fixture(scope="module")
def client(srv):
    return ollama.Client(host=srv.url, headers=srv.headers)


def _reference(srv, seed: int, n: int = 60):
    """The same request through the OpenAI route: reasoning and answer to compare with."""
    body = {"model": MODEL, "messages": Q, "seed": seed, "max_tokens": n}
    r = httpx.post(srv.url + "/v1/chat/completions", json=body, headers=srv.headers, timeout=60)
    m = r.json()["choices"][0]["message"]
    return m["reasoning_content"], m["content"]


def test_chat_think(srv, client):
    for seed in range(6):
        r = client.chat(
            model=MODEL, messages=Q, think=True, options={"seed": seed, "num_predict": 60}
        )
        reasoning, content = _reference(srv, seed)
        assert r.message.thinking == (reasoning or None)
        assert r.message.content == (content or "")
        assert r.done and r.done_reason in ("stop", "length") and r.eval_count > 0


def test_chat_think_streaming(srv, client):
    whole = client.chat(model=MODEL, messages=Q, think=True, options={"seed": 2})
    thinking, content, last = "", "", None
    for part in client.chat(model=MODEL, messages=Q, think=True, stream=True, options={"seed": 2}):
        thinking += part.message.thinking or ""
        content += part.message.content or ""
        last = part
    assert last.done and thinking == (whole.message.thinking or "")
    assert content == whole.message.content
    assert "</think>" not in thinking


def test_think_false(client):
    r = client.chat(model=MODEL, messages=Q, think=False, options={"num_predict": 10})
    assert not r.message.thinking


def test_generate(srv, client):
    r = client.generate(
        model=MODEL, prompt="What is 2 + 2?", think=True, options={"seed": 1, "num_predict": 40}
    )
    assert r.done and isinstance(r.response, str)
    ref = client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "What is 2 + 2?"}],
        think=True,
        options={"seed": 1, "num_predict": 40},
    )
    assert (r.thinking, r.response) == (ref.message.thinking, ref.message.content)
    raw = client.generate(
        model=MODEL, prompt="User: 1 + 1\n", raw=True, options={"seed": 1, "num_predict": 8}
    )
    assert raw.done and raw.eval_count == 8 or raw.done_reason == "stop"
    parts = list(
        client.generate(
            model=MODEL,
            prompt="What is 2 + 2?",
            think=True,
            stream=True,
            options={"seed": 1, "num_predict": 40},
        )
    )
    assert parts[-1].done
    assert "".join(p.response for p in parts) == r.response


def test_tags_show_version(client):
    tags = client.list()
    assert [m.model for m in tags.models] == [MODEL + ":latest"]
    assert tags.models[0].details.family == "qwen2"
    show = client.show(MODEL)
    assert "thinking" in show.capabilities and show.details.family == "qwen2"
    assert show.template == R1ZERO_CHAT_TEMPLATE  # the embedded model's own format
    v = httpx.get(client._client.base_url.join("/api/version")).json()["version"]
    assert v.count(".") == 2


def test_split_is_shared(srv):
    """What the Ollama route calls thinking is what the shared parser calls reasoning."""
    text = "<think>\na b\n</think>\n\nc"
    assert split_reasoning(text) == ("a b", "c")
