"""Limits that hold against a real server (raw HTTP and sockets): the body cap, the prompt size
checked before tokenizing, exact quotas under concurrency and `n`, a non-streaming disconnect,
the --no-auth Host/Origin/JSON guard, CORS, and the small ones. After each, the server still
answers a good request."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import threading
import time

import httpx
import openai
import pytest
from serve_server import MODEL, Server, shared

from r1kit.cli import main

GOOD = {"model": MODEL, "messages": [{"role": "user", "content": "1 + 1?"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def srv():
    return shared()


def healthy(srv, key=None) -> None:
    h = {"Authorization": f"Bearer {key or srv.key}"}
    r = httpx.post(srv.url + "/v1/chat/completions", json=GOOD, headers=h, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["role"] == "assistant"


def raw_request(srv, head: str, body: bytes = b"", read_after: bool = True) -> tuple[int, bytes]:
    """Send `head` and `body` on a socket and read the response (status, body)."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while read_after:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                hdr, rest = data.split(b"\r\n\r\n", 1)
                n = [ln for ln in hdr.split(b"\r\n") if ln.lower().startswith(b"content-length")]
                if n and len(rest) >= int(n[0].split(b":")[1]):
                    break
    hdr, rest = data.split(b"\r\n\r\n", 1)
    return int(hdr.split()[1]), rest


def test_body_cap_refuses_before_reading(srv):
    # 50 MB declared, 64 KB sent: the 413 comes back without the rest ever being sent
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        f"{srv.key}\r\nContent-Type: application/json\r\nContent-Length: {50 << 20}\r\n"
    )
    status, body = raw_request(srv, head, b"x" * (64 << 10))
    err = json.loads(body)["error"]
    assert status == 413 and err["code"] == "request_too_large" and "--max-body" in err["message"]
    status, body = raw_request(srv, head.replace("/v1/chat/completions", "/api/chat"), b"{")
    assert status == 413 and isinstance(json.loads(body)["error"], str)  # Ollama's shape
    healthy(srv)


def test_body_cap_chunked(srv):
    # no Content-Length: the body is counted as it arrives and refused once past the cap
    def chunks():
        yield b'{"model": "r1kit-tiny", "messages": [{"role": "user", "content": "'
        for _ in range(80):
            yield b"a" * (64 << 10)  # 5 MiB in all, past the 4 MiB default

    r = httpx.post(
        srv.url + "/v1/chat/completions",
        content=chunks(),
        headers={**srv.headers, "Content-Type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"
    healthy(srv)


def test_prompt_size_checked_before_tokenizing(srv):
    # 30,000 characters cannot fit 1,024 tokens of at most 21 characters each: refused by count
    big = {**GOOD, "messages": [{"role": "user", "content": "z" * 30_000}]}
    r = httpx.post(srv.url + "/v1/chat/completions", json=big, headers=srv.headers, timeout=60)
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "context_length_exceeded"
    assert err["message"].startswith("This model's maximum context length is 1024 tokens.")
    assert "at least" in err["message"] and err["param"] == "messages"
    healthy(srv)


def test_quota_exact_under_concurrency_and_n(srv):
    key, rec = srv.store.create_key("q200", quota_tokens=200)
    body = {**GOOD, "max_tokens": 30, "ignore_eos": True}

    async def burst():
        async with httpx.AsyncClient(
            base_url=srv.url, timeout=120, headers={"Authorization": f"Bearer {key}"}
        ) as c:
            return await asyncio.gather(
                *[c.post("/v1/chat/completions", json=body) for _ in range(50)]
            )

    rs = asyncio.run(burst())
    ok = [r.json()["usage"]["total_tokens"] for r in rs if r.status_code == 200]
    assert ok and {r.status_code for r in rs} <= {200, 402}
    assert sum(ok) == srv.store.tokens_used(rec.id) <= 200
    assert srv.store.get_key(rec.id).reserved_tokens == 0  # every reservation settled

    key, rec = srv.store.create_key("n16", quota_tokens=200)
    r = httpx.post(
        srv.url + "/v1/chat/completions",
        json={**body, "n": 16, "max_tokens": 500},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    u = r.json()["usage"]
    assert r.status_code == 200 and len(r.json()["choices"]) == 16
    assert u["total_tokens"] == srv.store.tokens_used(rec.id) <= 200
    # what is left fits no prompt: 402 at once, and the balance still answers
    h = {"Authorization": f"Bearer {key}"}
    r = httpx.post(srv.url + "/v1/chat/completions", json=body, headers=h, timeout=60)
    assert r.status_code == 402 and r.json()["error"]["code"] == "insufficient_quota"
    b = httpx.get(srv.url + "/user/balance", headers=h, timeout=30).json()
    assert b["token_quota"] == {
        "total": 200,
        "used": u["total_tokens"],
        "left": 200 - u["total_tokens"],
    }
    healthy(srv)


def test_quota_reads_running_total_not_usage_rows(srv):
    key, rec = srv.store.create_key("total", quota_tokens=10_000)
    healthy(srv, key)
    used = srv.store.tokens_used(rec.id)
    db = sqlite3.connect(srv.store.path)
    rows = db.execute(
        "SELECT SUM(prompt_tokens + completion_tokens) FROM usage WHERE key_id = ?", (rec.id,)
    ).fetchone()[0]
    assert used == rows > 0
    # the usage rows are history only: removing them changes no quota decision
    with db:
        db.execute("UPDATE keys SET used_tokens = 10000 WHERE id = ?", (rec.id,))
        db.execute("DELETE FROM usage WHERE key_id = ?", (rec.id,))
    r = httpx.post(
        srv.url + "/v1/chat/completions",
        json=GOOD,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert r.status_code == 402
    db.close()


def test_old_database_gains_running_totals(tmp_path):
    from r1kit.serve.store import Store

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(  # the schema before running totals, with two usage rows
        "CREATE TABLE keys (id TEXT PRIMARY KEY, name TEXT NOT NULL, salt TEXT NOT NULL, "
        "hash TEXT NOT NULL, created REAL NOT NULL, revoked REAL, quota_tokens INTEGER, "
        "rpm INTEGER); CREATE TABLE usage (key_id TEXT NOT NULL, ts REAL NOT NULL, model TEXT "
        "NOT NULL, endpoint TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens "
        "INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL);"
        "INSERT INTO keys VALUES ('k1', 'a', 's', 'h', 0, NULL, 100, NULL);"
        "INSERT INTO usage VALUES ('k1', 0, 'm', 'chat', 10, 20, 5);"
        "INSERT INTO usage VALUES ('k1', 1, 'm', 'chat', 3, 4, 0);"
    )
    db.commit()
    db.close()
    s = Store(path)
    assert s.tokens_used("k1") == 37 and s.get_key("k1").tokens_left() == 63


def test_non_streaming_disconnect_aborts(srv):
    st0 = srv.gen.stats()
    body = json.dumps({**GOOD, "max_tokens": 900, "ignore_eos": True}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        f"{srv.key}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    )
    used0 = srv.store.tokens_used(srv.store.find_key(srv.key).id)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(head.encode() + b"\r\n" + body)
        t0 = time.time()
        while srv.gen.stats()["requests"] == 0 and time.time() - t0 < 30:
            time.sleep(0.01)
        assert srv.gen.stats()["requests"] == 1
    t0 = time.time()  # the client is gone: the request must end well before 900 tokens
    while srv.gen.stats()["requests"] and time.time() - t0 < 30:
        time.sleep(0.02)
    st = srv.gen.stats()
    assert st["requests"] == 0 and st["free_blocks"] == st0["free_blocks"]
    billed = srv.store.tokens_used(srv.store.find_key(srv.key).id) - used0
    assert 0 < billed < 900  # the prompt and the tokens made before the abort, not 900
    healthy(srv)


def test_lone_surrogate_is_400(srv):
    raw = b'{"model": "r1kit-tiny", "messages": [{"role": "user", "content": "\\ud800"}]}'
    r = httpx.post(
        srv.url + "/v1/chat/completions",
        content=raw,
        headers={**srv.headers, "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400 and "surrogate" in r.json()["error"]["message"]
    ok = b'{"model": "r1kit-tiny", "max_tokens": 2, "messages": [{"role": "user", "content": '
    ok += b'"\\ud83d\\ude00"}]}'  # a valid pair is one character
    r = httpx.post(srv.url + "/v1/chat/completions", content=ok, headers=srv.headers, timeout=30)
    assert r.status_code == 200
    healthy(srv)


def test_404_405_in_error_shape(srv):
    r = httpx.get(srv.url + "/v1/nothing", headers=srv.headers)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.get(srv.url + "/v1/chat/completions", headers=srv.headers)
    assert r.status_code == 405 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.get(srv.url + "/api/chat", headers=srv.headers)
    assert r.status_code == 405 and isinstance(r.json()["error"], str)
    healthy(srv)


def test_ollama_tags_show_need_key_and_hide_paths(srv):
    for method, path, kw in (
        ("GET", "/api/tags", {}),
        ("POST", "/api/show", {"json": {"model": MODEL}}),
    ):
        assert httpx.request(method, srv.url + path, **kw).status_code == 401
        r = httpx.request(method, srv.url + path, headers=srv.headers, **kw)
        assert r.status_code == 200
    text = r.text  # /api/show
    assert r.json()["modelfile"] == f"FROM {MODEL}\n"
    for secret in (os.getcwd(), str(srv.dir), os.path.expanduser("~"), "/tmp", "assets"):
        assert secret not in text


def test_sqlite_file_mode_0600(tmp_path):
    from r1kit.serve.store import Store

    Store(tmp_path / "new.db")
    assert stat.S_IMODE(os.stat(tmp_path / "new.db").st_mode) == 0o600


@pytest.mark.parametrize(
    "flags,msg",
    [
        (["--rpm", "0"], "--rpm must be at least 1"),
        (["--quota", "-5"], "--quota must be at least 1"),
        (["--credit", "0"], "--credit must be a positive amount"),
        (["--currency", "EUR"], "no default prices for 'EUR'"),
    ],
)
def test_keys_create_refuses_useless_limits(tmp_path, capsys, flags, msg):
    assert main(["keys", "create", "--db", str(tmp_path / "k.db"), *flags]) == 2
    assert msg in capsys.readouterr().err


@pytest.fixture(scope="module")
def local():
    """A --no-auth server: one sequence at a time (so a second request waits), keep-alive
    comments every 50 ms, and one origin allowed."""
    s = Server(
        auth=False,
        max_num_seqs=1,
        app_kw={"allow_origins": ("http://app.example",), "keepalive_s": 0.05},
    )
    yield s
    s.close()


def test_no_auth_host_origin_json(local):
    url = local.url + "/v1/chat/completions"
    ok = httpx.post(url, json=GOOD, timeout=60)
    assert ok.status_code == 200
    # DNS rebinding: a name that resolves to 127.0.0.1 but is not ours
    r = httpx.post(url, json=GOOD, headers={"Host": f"evil.example:{local.port}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_host"
    # a page on another site posting to the local server
    r = httpx.post(url, json=GOOD, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_origin"
    assert httpx.post(url, json=GOOD, headers={"Origin": local.url}).status_code == 200
    # the form-style post a browser sends cross-site without a preflight
    r = httpx.post(url, content=json.dumps(GOOD), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = httpx.post(
        local.url + "/api/chat",
        content=b"{}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 415 and isinstance(r.json()["error"], str)
    assert httpx.post(url, json=GOOD, timeout=60).status_code == 200


def test_no_auth_curl_without_content_type_is_told_the_fix(local):
    """Ollama's README posts with `curl URL -d '{...}'`, which sends a form Content-Type: the
    415 (kept: a form post is what a page on another site can send) says what to add, and
    the request with it is answered."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    msgs = [{"role": "user", "content": "hi"}]
    body = json.dumps(
        {"model": MODEL, "messages": msgs, "stream": False, "options": {"num_predict": 8}}
    )
    cmd = ["curl", "-sS", "-w", "\n%{http_code}", local.url + "/api/chat", "-d", body]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    text, code = out.rsplit("\n", 1)
    assert code == "415", out
    err = json.loads(text)["error"]
    assert "-H 'Content-Type: application/json'" in err, err
    fixed = [*cmd[:-2], "-H", "Content-Type: application/json", *cmd[-2:]]
    out = subprocess.run(fixed, capture_output=True, text=True, timeout=60).stdout
    text, code = out.rsplit("\n", 1)
    assert code == "200" and json.loads(text)["message"]["role"] == "assistant", out


def test_cors_only_for_allowed_origins(srv, local):
    pre = {
        "Origin": "http://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    r = httpx.options(local.url + "/v1/chat/completions", headers=pre)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://app.example"
    r = httpx.post(
        local.url + "/v1/chat/completions",
        json=GOOD,
        timeout=60,
        headers={"Origin": "http://app.example"},
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://app.example"
    # the shared server names no origin: no CORS headers, a preflight is not answered
    r = httpx.options(srv.url + "/v1/chat/completions", headers=pre)
    assert "access-control-allow-origin" not in r.headers and r.status_code == 405
    r = httpx.post(
        srv.url + "/v1/chat/completions",
        json=GOOD,
        timeout=60,
        headers={**srv.headers, "Origin": "http://app.example"},
    )
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def _busy(s: Server) -> threading.Thread:
    """A streamed request that holds the server's one sequence slot; returns once its first
    tokens came back (it runs then, and has ~35 tokens to go)."""
    busy = {
        "model": MODEL,
        "messages": GOOD["messages"],
        "max_tokens": 40,
        "ignore_eos": True,
        "stream": True,
    }
    running = threading.Event()

    def run() -> None:
        with httpx.stream("POST", s.url + "/v1/chat/completions", json=busy, timeout=120) as r:
            for i, _ in enumerate(r.iter_lines()):
                if i == 2:
                    running.set()
        running.set()

    t = threading.Thread(target=run)
    t.start()
    assert running.wait(60)
    return t


def test_sse_keep_alive_while_waiting(local):
    # one sequence at a time: a second request waits, and its stream says so every 50 ms
    t = _busy(local)
    body = {**GOOD, "max_tokens": 8, "stream": True}
    with httpx.stream("POST", local.url + "/v1/chat/completions", json=body, timeout=120) as r:
        lines = [x for x in r.iter_lines() if x]
    t.join()
    alive = [i for i, x in enumerate(lines) if x == ": keep-alive"]
    tokens = [
        i
        for i, x in enumerate(lines)
        if x.startswith("data: {") and "role" not in json.loads(x[6:])["choices"][0]["delta"]
    ]
    assert alive and tokens and alive[0] < tokens[0] and lines[-1] == "data: [DONE]"
    # the openai SDK reads through the comments
    t = _busy(local)
    c = openai.OpenAI(base_url=local.url, api_key="none", max_retries=0)
    chunks = list(
        c.chat.completions.create(model=MODEL, messages=GOOD["messages"], max_tokens=8, stream=True)
    )
    t.join()
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("size,msg", [("12", "at least 1024 bytes"), ("4X", "not a size")])
def test_serve_max_body_flag_checked(capsys, size, msg):
    assert main(["serve", "--max-body", size]) == 2  # before any model is loaded
    assert msg in capsys.readouterr().err


def test_stream_settles_once(srv):
    key, rec = srv.store.create_key("stream", quota_tokens=5_000)
    h = {"Authorization": f"Bearer {key}"}
    body = {**GOOD, "max_tokens": 12, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream(
        "POST", srv.url + "/v1/chat/completions", json=body, headers=h, timeout=60
    ) as r:
        usage = [json.loads(x[6:])["usage"] for x in r.iter_lines() if x.startswith("data: {")][-1]
    r = httpx.post(
        srv.url + "/api/chat",
        headers=h,
        timeout=60,
        json={"model": MODEL, "messages": GOOD["messages"], "options": {"num_predict": 5}},
    )
    last = [json.loads(x) for x in r.text.splitlines() if x][-1]
    total = usage["total_tokens"] + last["prompt_eval_count"] + last["eval_count"]
    time.sleep(0.5)  # let the background settles of the two streams run (each must be a no-op)
    k = srv.store.get_key(rec.id)
    n = (
        sqlite3.connect(srv.store.path)
        .execute("SELECT COUNT(*) FROM usage WHERE key_id = ?", (rec.id,))
        .fetchone()[0]
    )
    assert (n, k.used_tokens, k.reserved_tokens) == (2, total, 0)
