"""Bad input never takes the server down: each error has its documented code and shape
(DESIGN.md section 5), and the next good request succeeds. Raw HTTP, no SDK in between."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from serve_server import MODEL, Server, shared

GOOD = {"model": MODEL, "messages": [{"role": "user", "content": "1 + 1?"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def srv():
    return shared()


def post(srv, body, key=None, path="/v1/chat/completions", raw: bytes | None = None):
    h = {"Authorization": f"Bearer {key or srv.key}", "Content-Type": "application/json"}
    data = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(srv.url + path, content=data, headers=h, timeout=60)


def assert_error(r, status, srv, key=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    ok = post(srv, GOOD, key)
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["role"] == "assistant"
    return err


LONG = "7 + 8 = 15. " * 400  # far past the tiny model's 1,024-token context


@pytest.mark.parametrize(
    "raw,status,param",
    [
        (b'{"model": "r1kit-tiny", "messages": [', 400, None),  # malformed JSON
        (b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, None),  # bad UTF-8
        (b"[1, 2]", 400, None),  # not an object
        (json.dumps({"messages": "hi"}).encode(), 400, "messages"),  # wrong type
        (json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(), 400, None),
        (json.dumps({"messages": []}).encode(), 400, "messages"),  # empty messages
        (json.dumps({**GOOD, "max_tokens": "many"}).encode(), 400, "max_tokens"),
        (
            json.dumps({**GOOD, "messages": [{"role": "user", "content": LONG}]}).encode(),
            400,
            "messages",
        ),
        (json.dumps({**GOOD, "model": "gpt-9"}).encode(), 400, "model"),  # DeepSeek: 400
        (json.dumps({**GOOD, "max_tokens": 0}).encode(), 422, "max_tokens"),
        (json.dumps({**GOOD, "max_tokens": -5}).encode(), 422, "max_tokens"),
        (json.dumps({**GOOD, "max_tokens": 10**9}).encode(), 422, "max_tokens"),
        (json.dumps({**GOOD, "temperature": -1}).encode(), 422, "temperature"),
        (json.dumps({**GOOD, "top_p": 0}).encode(), 422, "top_p"),
        (json.dumps({**GOOD, "n": 0}).encode(), 422, "n"),
        (
            json.dumps({**GOOD, "messages": [{"role": "wizard", "content": "x"}]}).encode(),
            422,
            None,
        ),
    ],
)
def test_bad_requests(srv, raw, status, param):
    err = assert_error(post(srv, None, raw=raw), status, srv)
    if param:
        assert (err["param"] or "").startswith(param), err


def test_unknown_model_message(srv):
    r = post(srv, {**GOOD, "model": "gpt-9"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "Model Not Exist"


def test_completions_errors(srv):
    assert_error(post(srv, {"prompt": ""}, path="/v1/completions"), 400, srv)
    assert_error(post(srv, {"prompt": "x", "max_tokens": 0}, path="/v1/completions"), 422, srv)


def test_auth_401(srv):
    for key in ("sk-nope", "sk-r1-00000000-abc", srv.key[:-1] + "x"):
        err = assert_error(post(srv, GOOD, key=key), 401, srv)
        assert err["type"] == "authentication_error"
    r = httpx.post(srv.url + "/v1/chat/completions", json=GOOD, timeout=30)  # no header
    assert r.status_code == 401
    key, rec = srv.store.create_key("to-revoke")
    assert post(srv, GOOD, key=key).status_code == 200
    assert srv.store.revoke(rec.id)
    assert "revoked" in assert_error(post(srv, GOOD, key=key), 401, srv)["message"]


def test_quota_402(srv):
    prompt = post(srv, GOOD).json()["usage"]["prompt_tokens"]
    key, rec = srv.store.create_key("small", quota_tokens=prompt + 4)  # one request's worth
    assert post(srv, GOOD, key=key).status_code == 200
    err = assert_error(post(srv, GOOD, key=key), 402, srv)
    assert err["code"] == "insufficient_quota"
    assert srv.store.tokens_used(rec.id) <= prompt + 4


def test_rate_limit_429(srv):
    key, _ = srv.store.create_key("slow", rpm=2)
    assert post(srv, GOOD, key=key).status_code == 200
    assert post(srv, GOOD, key=key).status_code == 200
    r = post(srv, GOOD, key=key)
    assert int(r.headers["retry-after"]) >= 1
    assert_error(r, 429, srv)


def test_ollama_errors(srv):
    h = srv.headers
    r = httpx.post(srv.url + "/api/chat", content=b"{nope", headers=h, timeout=30)
    assert r.status_code == 400 and "error" in r.json()
    r = httpx.post(srv.url + "/api/chat", json={"model": "llama9", "messages": []}, headers=h)
    assert r.status_code == 404 and r.json()["error"] == "model 'llama9' not found"
    r = httpx.post(
        srv.url + "/api/chat",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": False,
            "options": {"temperature": -2},
        },
        headers=h,
    )
    assert r.status_code == 422


def test_disconnect_aborts_and_frees_blocks(srv):
    st0 = srv.gen.stats()
    body = {**GOOD, "max_tokens": 900, "stream": True, "ignore_eos": True}
    with httpx.stream(
        "POST", srv.url + "/v1/chat/completions", json=body, headers=srv.headers, timeout=30
    ) as r:
        lines = r.iter_lines()
        for _ in range(4):
            next(lines)
        assert srv.gen.stats()["requests"] == 1
    t0 = time.time()
    while srv.gen.stats()["requests"] and time.time() - t0 < 10:
        time.sleep(0.05)
    st = srv.gen.stats()
    assert st["requests"] == 0 and st["running"] == 0 and st["waiting"] == 0
    assert st["free_blocks"] == st0["free_blocks"] == st["total_blocks"] - 1
    assert post(srv, GOOD).status_code == 200


def test_full_queue_503():
    # one sequence at a time, one waiting: the third concurrent request is refused at once
    s = Server(max_waiting=1, max_num_seqs=1)
    try:
        body = {**GOOD, "max_tokens": 150, "ignore_eos": True}

        async def main():
            async with httpx.AsyncClient(base_url=s.url, headers=s.headers, timeout=60) as c:
                first = asyncio.ensure_future(c.post("/v1/chat/completions", json=body))
                while not s.gen.stats()["running"]:  # the first one runs: the next may wait
                    await asyncio.sleep(0.01)
                rest = [c.post("/v1/chat/completions", json=body) for _ in range(5)]
                return await asyncio.gather(first, *rest)

        rs = asyncio.run(main())
        codes = sorted(r.status_code for r in rs)
        assert codes == [200, 200, 503, 503, 503, 503], codes
        err = next(r for r in rs if r.status_code == 503).json()["error"]
        assert err["type"] == "server_overloaded"
        assert_error(next(r for r in rs if r.status_code == 503), 503, s)
    finally:
        s.close()
