"""The OpenAI/DeepSeek contract through the real `openai` SDK against r1kit's server."""

from __future__ import annotations

import httpx
import openai
import pytest
from serve_server import MODEL, find_seed, shared

Q = [{"role": "user", "content": "What is 3 + 4?"}]


@pytest.fixture(scope="module")
def srv():
    return shared()


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=srv.key, max_retries=0)


def test_models(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_chat_non_streaming_matches_engine(srv, client):
    seed, reasoning, answer, ntok = find_seed(srv, Q)
    r = client.chat.completions.create(model=MODEL, messages=Q, seed=seed, max_tokens=120)
    m = r.choices[0].message
    assert m.reasoning_content == reasoning == m.model_extra["reasoning"]
    assert m.content == answer
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == ntok
    assert 0 < r.usage.completion_tokens_details.reasoning_tokens < ntok
    assert r.usage.total_tokens == r.usage.prompt_tokens + ntok


def test_chat_streaming_same_as_whole(srv, client):
    seed, reasoning, answer, ntok = find_seed(srv, Q)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=Q,
        seed=seed,
        max_tokens=120,
        stream=True,
        stream_options={"include_usage": True},
    )
    rs, cs, order, usage, finish = "", "", [], None, None
    for chunk in stream:
        if not chunk.choices:
            usage = chunk.usage
            continue
        d = chunk.choices[0].delta
        r = (d.model_extra or {}).get("reasoning_content")
        assert not (r and d.content), "one kind of text per chunk"
        if r:
            rs += r
            order.append("r")
        if d.content:
            cs += d.content
            order.append("c")
        finish = chunk.choices[0].finish_reason or finish
    assert rs == reasoning and cs == answer and finish == "stop"
    assert "</think>" not in rs
    assert order == sorted(order, key=lambda x: x != "r"), "reasoning first, then content"
    assert usage.completion_tokens == ntok and usage.completion_tokens_details.reasoning_tokens


def test_raw_sse_shape(srv):
    body = {"model": MODEL, "messages": Q, "stream": True, "max_tokens": 8, "seed": 0}
    with httpx.stream(
        "POST", srv.url + "/v1/chat/completions", json=body, headers=srv.headers, timeout=30
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [x for x in r.iter_lines() if x]
    assert lines[-1] == "data: [DONE]"
    import json

    chunks = [json.loads(x[6:]) for x in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    for c in chunks:
        for ch in c["choices"]:
            assert "content" in ch["delta"] and "reasoning_content" in ch["delta"]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_n_stop_and_max_tokens(client):
    r = client.chat.completions.create(
        model=MODEL, messages=Q, n=3, max_tokens=5, seed=3, extra_body={"ignore_eos": True}
    )
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in r.choices)
    assert r.usage.completion_tokens == 15
    # a stop string cuts the text there and ends the sample with "stop"
    full = client.completions.create(
        model=MODEL, prompt="1 + 2 = ", max_tokens=30, seed=5, extra_body={"ignore_eos": True}
    )
    text = full.choices[0].text
    assert len(text) > 4
    stop = text[2:4]
    cut = client.completions.create(
        model=MODEL,
        prompt="1 + 2 = ",
        max_tokens=30,
        seed=5,
        stop=[stop],
        extra_body={"ignore_eos": True},
    )
    assert cut.choices[0].text == text[: text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_completions_streaming(client):
    whole = client.completions.create(model=MODEL, prompt="User: 2 + 2\n", max_tokens=12, seed=1)
    parts = client.completions.create(
        model=MODEL, prompt="User: 2 + 2\n", max_tokens=12, seed=1, stream=True
    )
    assert "".join(c.choices[0].text for c in parts if c.choices) == whole.choices[0].text


def test_history_reasoning_stripped(srv, client):
    gen = srv.gen
    with_r = [
        *Q,
        {
            "role": "assistant",
            "content": "<think>\nlong thought\n</think>\n\n7",
            "reasoning_content": "ignored",
        },
        {"role": "user", "content": "And 5+5?"},
    ]
    prompt = gen.render(with_r)
    assert "long thought" not in prompt and "ignored" not in prompt and "7" in prompt
    r = client.chat.completions.create(model=MODEL, messages=with_r, max_tokens=4)
    assert r.choices[0].message.model_extra["reasoning_content"] is not None


def test_think_off_answers_directly(client):
    r = client.chat.completions.create(
        model=MODEL, messages=Q, max_tokens=20, seed=0, extra_body={"think": False}
    )
    m = r.choices[0].message
    assert m.model_extra["reasoning_content"] is None and m.content is not None
    assert r.usage.completion_tokens_details.reasoning_tokens == 0


def test_usage_recorded(srv, client):
    before = {u["id"]: u for u in srv.store.usage()}
    kid = srv.store.find_key(srv.key).id
    client.chat.completions.create(model=MODEL, messages=Q, max_tokens=3)
    after = {u["id"]: u for u in srv.store.usage()}
    assert after[kid]["requests"] == before[kid]["requests"] + 1
    assert after[kid]["prompt_tokens"] > before[kid]["prompt_tokens"]


def test_hf_engine_fallback(srv):
    """Architectures the paged engine does not support run HFEngine.generate in a worker
    thread; the contract is the same (seeded samples match the paged engine's)."""
    from serve_server import Server

    hf = Server(engine="hf")
    try:
        assert not hf.gen.paged
        seed, reasoning, answer, ntok = find_seed(srv, Q)
        c = openai.OpenAI(base_url=hf.url + "/v1", api_key=hf.key, max_retries=0)
        m = c.chat.completions.create(model=MODEL, messages=Q, seed=seed, max_tokens=120)
        assert (m.choices[0].message.reasoning_content, m.choices[0].message.content) == (
            reasoning,
            answer,
        )
        parts = c.chat.completions.create(
            model=MODEL, messages=Q, seed=seed, max_tokens=120, stream=True
        )
        text = "".join(p.choices[0].delta.content or "" for p in parts if p.choices)
        assert text == answer
    finally:
        hf.close()
