"""DeepSeek/OpenAI compatibility against a real server, through the clients people use: the
`openai` SDK with DeepSeek's base URL (no `/v1`), model names and `thinking` switch,
`/user/balance` with a money credit, the context-overflow error each client maps to its own
class (openai, LangChain's ChatDeepSeek, LiteLLM), unsupported parameters refused by name,
and Ollama's measured durations (SSE keep-alive: test_serve_limits.py, on its one-sequence
server)."""

from __future__ import annotations

import json
import os

import httpx
import openai
import pytest
from serve_server import MODEL, find_seed, shared

from r1kit.cli import main

Q = [{"role": "user", "content": "What is 3 + 4?"}]
LONG = [{"role": "user", "content": "7 + 8 = 15. " * 400}]  # past the 1,024-token context


@pytest.fixture(scope="module")
def srv():
    return shared()


@pytest.fixture(scope="module")
def client(srv):
    # DeepSeek documents its base URL without /v1
    return openai.OpenAI(base_url=srv.url, api_key=srv.key, max_retries=0)


def test_base_url_without_v1(srv, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    seed, reasoning, answer, _ = find_seed(srv, Q)
    r = client.chat.completions.create(model=MODEL, messages=Q, seed=seed, max_tokens=120)
    assert r.choices[0].message.reasoning_content == reasoning
    assert r.choices[0].message.content == answer
    c = client.completions.create(model=MODEL, prompt="1 + 1 =", max_tokens=3)
    assert c.usage.completion_tokens == 3


def test_deepseek_names_and_thinking_switch(srv, client):
    seed, reasoning, _, _ = find_seed(srv, Q)
    r = client.chat.completions.create(
        model="deepseek-reasoner", messages=Q, seed=seed, max_tokens=120
    )
    assert r.model == "deepseek-reasoner" and r.choices[0].message.reasoning_content == reasoning
    r = client.chat.completions.create(model="deepseek-chat", messages=Q, max_tokens=16)
    m = r.choices[0].message
    assert r.model == "deepseek-chat" and m.reasoning_content is None and m.content is not None
    assert r.usage.completion_tokens_details.reasoning_tokens == 0
    off = {"thinking": {"type": "disabled"}}
    r = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=16, extra_body=off)
    assert r.choices[0].message.reasoning_content is None
    # thinking enabled on deepseek-chat thinks, as DeepSeek's hybrid model does
    on = {"thinking": {"type": "enabled"}}
    r = client.chat.completions.create(
        model="deepseek-chat", messages=Q, seed=seed, max_tokens=120, extra_body=on
    )
    assert r.choices[0].message.reasoning_content == reasoning
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=Q, extra_body={"thinking": "on"})
    assert e.value.body["param"] == "thinking"


def test_context_overflow_openai_wording(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=LONG)
    assert e.value.code == "context_length_exceeded"
    assert e.value.body["message"].startswith("This model's maximum context length is 1024 ")


@pytest.mark.parametrize(
    "extra,param",
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format",
        ),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": -1}, "frequency_penalty"),
        ({"repetition_penalty": 1.1}, "repetition_penalty"),
        ({"logit_bias": {"42": 5}}, "logit_bias"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"audio": {"voice": "x", "format": "wav"}}, "audio"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this?"},
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,AAAA"},
                            },
                        ],
                    }
                ]
            },
            "messages[0].content[1]",
        ),
    ],
)
def test_unsupported_parameters_named(srv, extra, param):
    body = {"model": MODEL, "messages": Q, "max_tokens": 4, **extra}
    r = httpx.post(srv.url + "/v1/chat/completions", json=body, headers=srv.headers, timeout=30)
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == param and param in err["message"]
    assert err["code"] == "unsupported_parameter"


def test_unsupported_accepts_neutral_values(srv):
    # what SDKs send by default is no request for a feature: zero penalties, text format...
    body = {
        "model": MODEL,
        "messages": Q,
        "max_tokens": 4,
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "logprobs": False,
        "response_format": {"type": "text"},
        "tools": [],
        "tool_choice": "none",
        "logit_bias": {},
        "modalities": ["text"],
    }
    r = httpx.post(srv.url + "/v1/chat/completions", json=body, headers=srv.headers, timeout=30)
    assert r.status_code == 200, r.text
    for extra, param in (
        ({"echo": True}, "echo"),
        ({"suffix": "x"}, "suffix"),
        ({"best_of": 3}, "best_of"),
        ({"logprobs": 2}, "logprobs"),
    ):
        r = httpx.post(
            srv.url + "/v1/completions",
            headers=srv.headers,
            timeout=30,
            json={"model": MODEL, "prompt": "1 +", "max_tokens": 2, **extra},
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == param
    r = httpx.post(
        srv.url + "/api/chat",
        headers=srv.headers,
        timeout=30,
        json={"model": MODEL, "messages": Q, "format": "json", "stream": False},
    )
    assert r.status_code == 400 and "format" in r.json()["error"]


def test_balance_with_credit(srv, capsys):
    db = str(srv.store.path)
    assert main(["keys", "create", "--db", db, "--credit", "10", "--currency", "CNY"]) == 0
    key = capsys.readouterr().out.strip()
    h = {"Authorization": f"Bearer {key}"}
    b = httpx.get(srv.url + "/user/balance", headers=h, timeout=30).json()
    assert b == {
        "is_available": True,
        "balance_infos": [
            {
                "currency": "CNY",
                "total_balance": "10.00",
                "granted_balance": "10.00",
                "topped_up_balance": "0.00",
            }
        ],
    }
    c = openai.OpenAI(base_url=srv.url, api_key=key, max_retries=0)
    r = c.chat.completions.create(model="deepseek-reasoner", messages=Q, max_tokens=8)
    kid = key.split("-")[2]
    spent = srv.store.get_key(kid).spent  # the key's CNY rates: 4 / 1 (cache hit) / 16 per 1M
    hit = r.usage.prompt_cache_hit_tokens
    cost = (r.usage.prompt_cache_miss_tokens * 4 + hit + r.usage.completion_tokens * 16) / 1e6
    assert hit + r.usage.prompt_cache_miss_tokens == r.usage.prompt_tokens
    assert spent == pytest.approx(cost, rel=1e-12)  # float sums of 3 terms
    # a nearly spent credit: the request is clamped to what is left, then refused (402)
    with srv.store._db:
        srv.store._db.execute("UPDATE keys SET spent = ? WHERE id = ?", (10 - 400e-6, kid))
    r = c.chat.completions.create(
        model="deepseek-reasoner", messages=Q, max_tokens=100, extra_body={"ignore_eos": True}
    )
    assert r.usage.prompt_tokens * 4 + r.usage.completion_tokens * 16 <= 400
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens < 100
    assert srv.store.get_key(kid).money_left() >= 0
    with pytest.raises(openai.APIStatusError) as e:
        for _ in range(3):
            c.chat.completions.create(model="deepseek-reasoner", messages=Q, max_tokens=100)
    assert e.value.status_code == 402
    b = httpx.get(srv.url + "/user/balance", headers=h, timeout=30).json()
    assert float(b["balance_infos"][0]["total_balance"]) < 0.0004
    with srv.store._db:
        srv.store._db.execute("UPDATE keys SET spent = 10 WHERE id = ?", (kid,))
    b = httpx.get(srv.url + "/user/balance", headers=h, timeout=30).json()
    assert not b["is_available"] and b["balance_infos"][0]["total_balance"] == "0.00"


def test_keys_usage_prices_cache_hits(tmp_path, capsys):
    from r1kit.serve.store import Store

    db = str(tmp_path / "k.db")
    s = Store(db)
    _, k = s.create_key("c")
    s.record(k.id, MODEL, "chat", 1_000_000, 1_000_000, 0, cache_hit=600_000)
    assert main(["keys", "usage", "--db", db]) == 0  # DeepSeek's USD defaults
    out = capsys.readouterr().out
    # 400k misses x 0.55 + 600k hits x 0.14 + 1M x 2.19 = 0.22 + 0.084 + 2.19
    assert "2.4940" in out and "600000" in out
    assert main(["keys", "usage", "--db", db, "--price-cache-hit", "0"]) == 0
    assert "2.4100" in capsys.readouterr().out


def test_langchain_chat_deepseek(srv):
    pytest.importorskip("langchain_deepseek")
    from langchain_core.exceptions import ContextOverflowError
    from langchain_deepseek import ChatDeepSeek

    seed, reasoning, answer, _ = find_seed(srv, Q)
    llm = ChatDeepSeek(
        model="deepseek-reasoner",
        api_key=srv.key,
        api_base=srv.url,
        max_tokens=120,
        max_retries=0,
        seed=seed,
    )
    m = llm.invoke("What is 3 + 4?")
    assert m.additional_kwargs["reasoning_content"] == reasoning and m.content == answer
    with pytest.raises(ContextOverflowError):
        llm.invoke(LONG[0]["content"])
    # structured output needs response_format or tools: refused, not a silent None
    with pytest.raises(openai.BadRequestError, match="response_format|tools"):
        llm.with_structured_output(
            {"title": "A", "type": "object", "properties": {"x": {"type": "integer"}}},
            method="json_mode",
        ).invoke("x = 1")


def test_litellm(srv):
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import
    litellm = pytest.importorskip("litellm")
    seed, reasoning, answer, _ = find_seed(srv, Q)
    kw = {"api_base": srv.url, "api_key": srv.key, "num_retries": 0}
    r = litellm.completion(
        model="deepseek/deepseek-reasoner", messages=Q, max_tokens=120, seed=seed, **kw
    )
    assert r.choices[0].message.reasoning_content == reasoning
    assert r.choices[0].message.content == answer
    with pytest.raises(litellm.ContextWindowExceededError):
        litellm.completion(model="deepseek/deepseek-reasoner", messages=LONG, **kw)


def test_llamaindex(srv):
    pytest.importorskip("llama_index.llms.openai_like")
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    seed, reasoning, answer, _ = find_seed(srv, Q)
    llm = OpenAILike(
        model="deepseek-reasoner",
        api_base=srv.url + "/v1",
        api_key=srv.key,
        is_chat_model=True,
        max_tokens=120,
        max_retries=0,
        temperature=0.6,
        additional_kwargs={"seed": seed},
    )
    r = llm.chat([ChatMessage(role="user", content=Q[0]["content"])])
    assert r.message.content == answer
    thinking = [b.content for b in r.message.blocks if b.block_type == "thinking"]
    assert thinking == [reasoning]  # LlamaIndex reads reasoning_content as a thinking block


def test_ollama_durations_measured(srv):
    body = {
        "model": MODEL,
        "messages": Q,
        "stream": False,
        "options": {"num_predict": 24, "temperature": 0},
    }
    r = httpx.post(srv.url + "/api/chat", json=body, headers=srv.headers, timeout=60).json()
    for k in ("load_duration", "prompt_eval_duration", "eval_duration"):
        assert r[k] > 0, (k, r)
    # the three phases follow each other inside the request: load + prompt eval + the decode
    # time (eval_duration is decode time per token x eval_count, one token more than measured)
    n = r["eval_count"]
    decode = r["eval_duration"] * (n - 1) // n
    assert r["load_duration"] + r["prompt_eval_duration"] + decode <= r["total_duration"]
    lines = []
    with httpx.stream(
        "POST",
        srv.url + "/api/generate",
        headers=srv.headers,
        timeout=60,
        json={"model": MODEL, "prompt": "hi", "options": {"num_predict": 8}},
    ) as s:
        lines = [json.loads(x) for x in s.iter_lines() if x]
    assert lines[-1]["done"] and lines[-1]["eval_duration"] > 0
