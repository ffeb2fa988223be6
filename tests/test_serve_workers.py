"""`r1kit serve --api-workers 2`: two API processes in front of one engine process, started
with the real CLI and driven with the real `openai` client. Whatever must hold across
processes holds: quotas and `n` (reservations in SQLite), the rate limit, abort on
disconnect (the engine's blocks freed), /health; and connections reach both workers."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from r1kit.errors import R1kitError
from r1kit.serve.app import serve
from r1kit.serve.store import Store
from r1kit.serve.workers import RESTARTS, bind_sockets

MODEL = "r1kit-tiny"


class Served:
    def __init__(self, tmp: Path) -> None:
        self.db = tmp / "r1kit.db"
        self.store = Store(self.db)  # this process's own connection to the server's file
        self.key, _ = self.store.create_key("tests")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "r1kit.cli", "serve", "--api-workers", "2", "--port", "0"]
        self.proc = subprocess.Popen(
            [*cmd, "--db", str(self.db)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        line, t0 = "", time.time()
        while "serving" not in line:  # the banner names the port
            ready, _, _ = select.select([self.proc.stdout], [], [], 5)
            if time.time() - t0 > 120 or self.proc.poll() is not None:
                raise RuntimeError(f"the server did not start: {line}")
            if ready:
                line = self.proc.stdout.readline()
        self.url = "http://" + line.split("http://")[1].split(" ")[0]
        self.port = int(self.url.rsplit(":", 1)[1])

    def health(self) -> dict:
        # a new connection each time: either worker may answer
        return httpx.get(self.url + "/health", headers={"Connection": "close"}).json()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Served(tmp_path_factory.mktemp("workers"))
    yield s
    if s.proc.poll() is None:  # the last test stops it (API processes that keep dying)
        s.close()
        assert s.proc.returncode == 0, "SIGTERM stops every process cleanly"


def test_openai_client_plain_and_streaming(srv):
    client = openai.OpenAI(base_url=srv.url, api_key=srv.key)  # DeepSeek's base URL, no /v1
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=12, seed=1)
    assert r.usage.completion_tokens > 0 and r.choices[0].finish_reason in ("stop", "length")
    text = r.choices[0].message.reasoning_content or ""
    stream = client.chat.completions.create(
        model=MODEL,
        messages=msgs,
        max_tokens=12,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    got, usage = "", None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            got += getattr(ch.delta, "reasoning_content", None) or ""
    assert got == text and usage.completion_tokens == r.usage.completion_tokens


def test_health_and_both_workers_serve(srv):
    seen = {srv.health()["api_worker"] for _ in range(24)}
    h = srv.health()
    assert h["status"] == "ok" and h["api_workers"] == 2 and h["engine"] == "paged"
    assert seen == {0, 1}, "new connections reach both API processes (SO_REUSEPORT)"


def test_quota_holds_across_workers(srv):
    """A 200-token key: 50 concurrent requests from 50 connections (both workers), and one
    request with n=16, never spend past it."""
    key50, k50 = srv.store.create_key("k50", quota_tokens=200)
    key16, k16 = srv.store.create_key("k16", quota_tokens=200)

    async def burst() -> list:
        async def one(i: int):
            c = openai.AsyncOpenAI(base_url=srv.url, api_key=key50, max_retries=0)
            try:
                r = await c.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"What is {i} + 1?"}],
                    max_tokens=40,
                    extra_body={"ignore_eos": True},
                )
                return r.usage.total_tokens
            except openai.APIStatusError as e:
                return e.status_code
            finally:
                await c.close()

        return await asyncio.gather(*[one(i) for i in range(50)])

    out = asyncio.run(burst())
    served = [x for x in out if x not in (402, 429)]
    assert served and 402 in out, out
    used = srv.store.get_key(k50.id)
    assert sum(served) == used.used_tokens <= 200 and used.reserved_tokens == 0

    c = openai.OpenAI(base_url=srv.url, api_key=key16, max_retries=0)
    r = c.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "1 + 1?"}],
        max_tokens=100,
        n=16,
        extra_body={"ignore_eos": True},
    )
    assert len(r.choices) == 16 and r.usage.total_tokens <= 200
    assert srv.store.get_key(k16.id).used_tokens == r.usage.total_tokens
    assert srv.health()["status"] == "ok"


def test_rate_limit_holds_across_workers(srv):
    key, _ = srv.store.create_key("slow", rpm=3)
    codes = []
    for _ in range(8):  # a connection each: the requests land on both workers
        r = httpx.post(
            srv.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}", "Connection": "close"},
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
            timeout=60,
        )
        codes.append(r.status_code)
    assert codes.count(200) == 3 and codes.count(429) == 5, codes


def test_disconnect_aborts_and_frees_blocks(srv):
    used0 = srv.store.tokens_used(srv.store.find_key(srv.key).id)
    free0 = _settled(srv)["free_blocks"]
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Count."}],
            "max_tokens": 900,
            "ignore_eos": True,
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        f"{srv.key}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall(head.encode() + body)
        t0 = time.time()
        while srv.health()["requests"] == 0 and time.time() - t0 < 30:
            time.sleep(0.01)
        assert srv.health()["requests"] == 1
    st = _settled(srv)  # the client is gone: the request ends well before 900 tokens
    assert st["requests"] == 0 and st["free_blocks"] == free0
    billed = srv.store.tokens_used(srv.store.find_key(srv.key).id) - used0
    assert 0 < billed < 900


def test_second_server_on_the_port_is_refused(srv):
    """Every worker's socket has SO_REUSEPORT, which would let a second server of the same
    user join the port and take half its connections: it must fail in one line instead."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for workers in ("2", "1"):
        cmd = [sys.executable, "-m", "r1kit.cli", "serve", "--api-workers", workers]
        r = subprocess.run(
            [*cmd, "--port", str(srv.port), "--db", str(srv.db)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
        assert r.stderr.splitlines() == [
            f"r1kit: error: cannot listen on 127.0.0.1:{srv.port}: Address already in use"
        ]
    with pytest.raises(R1kitError, match="Address already in use"):
        bind_sockets("127.0.0.1", srv.port, 2)  # the workers' own bind, past the early check
    assert {srv.health()["api_worker"] for _ in range(16)} == {0, 1}


def test_dead_api_process_is_restarted(srv):
    """An API process killed mid-stream (kill -9, as the OOM killer does): the server says so
    in one line and restarts it, its request is aborted in the engine (the blocks freed) and
    its key's reservation given back (it never settles), and every new connection is answered
    meanwhile, by the other process until the new one is up."""
    free0 = _settled(srv)["free_blocks"]
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count."}],
        "max_tokens": 900,
        "stream": True,
        "ignore_eos": True,
    }
    key, k = srv.store.create_key("victim", quota_tokens=5000)
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=srv.url, headers=auth, timeout=60) as c:
        h = c.get("/health").json()  # the process this connection reached
        victim, pid = h["api_worker"], h["pid"]
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            while not next(lines).startswith("data: "):
                pass
            assert srv.store.get_key(k.id).reserved_tokens > 900
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(httpx.TransportError):  # the stream's connection is cut
                for _ in lines:
                    pass
    line = _console_line(srv.proc)
    head = f"r1kit: r1kit-api-{victim} (pid {pid}) was killed by SIGKILL with 1 request in flight"
    assert line.startswith(head + " (aborted); restarted it (pid "), line
    assert srv.store.get_key(k.id).reserved_tokens == 0
    seen, t0 = set(), time.time()
    while victim not in seen:  # a new connection each: none is refused or left waiting
        h = srv.health()
        assert h["pid"] != pid
        seen.add(h["api_worker"])
        assert time.time() - t0 < 120, "the restarted API process never answered"
    st = _settled(srv)
    assert st["requests"] == 0 and st["free_blocks"] == free0
    test_openai_client_plain_and_streaming(srv)
    assert {srv.health()["api_worker"] for _ in range(24)} == {0, 1}


def _console_line(proc: subprocess.Popen, timeout: float = 60) -> str:
    """The server's next line on its console (stdout and stderr)."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the server printed nothing"
    return proc.stdout.readline().rstrip("\n")


def test_server_killed_outright_leaves_no_process_on_the_port(tmp_path):
    """kill -9 of `r1kit serve` (no handler runs): its API processes stop with it (they served
    the port on, unsupervised, and a restart found it in use), and the engine core with them."""
    s = Served(tmp_path)
    kids = subprocess.run(["pgrep", "-P", str(s.proc.pid)], capture_output=True, text=True)
    pids = [int(x) for x in kids.stdout.split()]
    assert len(pids) >= 3  # the engine core and two API processes (and a resource tracker)
    s.proc.kill()
    s.proc.wait()
    t0 = time.time()
    while time.time() - t0 < 60 and any(_running(p) for p in pids):
        time.sleep(0.1)
    assert not any(_running(p) for p in pids)
    with pytest.raises(httpx.ConnectError):
        s.health()


def _running(pid: int) -> bool:
    try:  # an exited child of the killed server waits as a zombie until init reaps it
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_api_processes_that_keep_dying_stop_the_server(srv):
    """Restarts are for a process that dies once in a while: ones killed as fast as they
    start (RESTARTS + 1 within a minute, the earlier test's death included when recent) stop
    the server with one line, exit 1, and no process left. Last: it ends the module's server."""
    kids = subprocess.run(["pgrep", "-P", str(srv.proc.pid)], capture_output=True, text=True)
    pids = [int(x) for x in kids.stdout.split()]
    pid = srv.health()["pid"]
    for _ in range(RESTARTS + 1):
        os.kill(pid, signal.SIGKILL)
        line = _console_line(srv.proc)
        if "stopping the server" in line:
            break
        assert "restarted it (pid " in line, line
        pid = int(line.rsplit("(pid ", 1)[1].rstrip(")"))
        pids.append(pid)
    assert line.endswith(
        f"was killed by SIGKILL: {RESTARTS + 1} API processes died within 60 s; stopping the server"
    ), line
    assert srv.proc.wait(timeout=60) == 1
    t0 = time.time()
    while time.time() - t0 < 60 and any(_running(p) for p in pids):
        time.sleep(0.1)
    assert not any(_running(p) for p in pids)


def test_api_workers_flag_checked():
    with pytest.raises(R1kitError, match="--api-workers must be at least 1"):
        serve(api_workers=0)
    with pytest.raises(R1kitError, match="needs the paged engine, not llama.cpp"):
        serve("model.gguf", api_workers=2)  # refused before anything is loaded


def _settled(srv) -> dict:
    """/health once the engine has no request (both workers see the same state)."""
    t0 = time.time()
    while time.time() - t0 < 30:
        a, b = srv.health(), srv.health()
        if a["requests"] == 0 and b["requests"] == 0 and a["free_blocks"] == b["free_blocks"]:
            return a
        time.sleep(0.05)
    raise AssertionError("the engine did not settle")
