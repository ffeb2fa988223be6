"""`r1kit keys`, `r1kit run` (the terminal chat), `--no-auth` only on loopback, the stream
splitter and the key store."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from serve_server import MODEL, free_port, shared

from r1kit.chat import ReasoningStream, render_chat, set_template, split_reasoning
from r1kit.cli import main
from r1kit.modeling import load_tokenizer
from r1kit.serve.app import is_loopback
from r1kit.serve.generation import SampleText
from r1kit.serve.store import Store
from r1kit.serve.term import chat_loop


def test_keys_cli(tmp_path, capsys):
    db = str(tmp_path / "k.db")
    assert main(["keys", "create", "--db", db, "--name", "alice", "--quota", "1000"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("sk-r1-")
    kid = key.split("-")[2]
    assert main(["keys", "list", "--db", db]) == 0
    out = capsys.readouterr().out
    assert kid in out and "active" in out and "alice" in out and key not in out
    s = Store(db)
    s.record(kid, MODEL, "chat", 1_000_000, 2_000_000, 500_000)
    assert (
        main(["keys", "usage", "--db", db, "--price-prompt", "1", "--price-completion", "2"]) == 0
    )
    out = capsys.readouterr().out
    assert "5.0000" in out and "500000" in out  # 1M x $1 + 2M x $2
    assert main(["keys", "revoke", kid, "--db", db]) == 0
    assert main(["keys", "revoke", kid, "--db", db]) == 2  # already revoked
    assert Store(db).find_key(key).revoked is not None


def test_keys_stored_hashed(tmp_path):
    s = Store(tmp_path / "k.db")
    key, rec = s.create_key("x")
    dump = "\n".join(sqlite3.connect(tmp_path / "k.db").iterdump())
    assert key not in dump and key.split("-", 3)[3] not in dump
    assert s.find_key(key).id == rec.id and s.find_key(key + "x") is None


def test_no_auth_only_on_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert main(["serve", "--no-auth", "--host", "0.0.0.0"]) == 2


def test_run_terminal_chat():
    srv = shared()
    stdin = io.StringIO("What is 3 + 4?\n/set nothink\nSay hi\n/bogus\n/bye\nnever read\n")
    out = io.StringIO()
    assert (
        chat_loop(srv.url + "/v1", None, srv.key, stdin=stdin, out=out, color=True, max_tokens=64)
        == 0
    )
    text = out.getvalue()
    assert "\x1b[2mThinking..." in text and "Set 'nothink' mode." in text
    assert "Unknown command" in text and "never read" not in text
    after = text.split("Set 'nothink' mode.")[1]
    assert "Thinking..." not in after  # no reasoning once thinking is off


def test_run_unreachable_endpoint_is_one_line(capsys):
    srv = shared()
    assert main(["run", "--base-url", srv.url, "--api-key", "sk-r1-00000000-wrong"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"r1kit: error: cannot reach the model at {srv.url}: Error code: 401 - invalid API key\n"
    )
    port = free_port()  # nothing listens there
    assert main(["run", "--base-url", f"http://127.0.0.1:{port}/v1"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"r1kit: error: cannot reach the model at http://127.0.0.1:{port}/v1: Connection error."
    ]


def test_serve_not_a_gguf_is_one_line(tmp_path, capsys):
    pytest.importorskip("llama_cpp")  # without it, the refusal names the missing package
    empty, junk = tmp_path / "empty.gguf", tmp_path / "junk.gguf"
    empty.touch()
    junk.write_text("not a model\n")
    for f, why in ((empty, "cannot mmap an empty file"), (junk, "GGUF magic invalid")):
        assert main(["serve", str(f), "--port", "0"]) == 2
        assert capsys.readouterr().err == f"r1kit: error: not a readable GGUF file: {f} ({why})\n"


def _serve_cli(tmp_path, *flags: str) -> tuple[subprocess.Popen, int, list[str], dict]:
    """`r1kit serve` in a process group of its own, as a shell starts it: (process, port)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "r1kit.cli", "serve", "--db", str(tmp_path / "k.db"), *flags]
    p = subprocess.Popen(
        [*cmd, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    line = p.stdout.readline()  # the banner, once the port is bound
    return p, int(line.split("http://127.0.0.1:")[1].split(" ")[0]), cmd, env


def test_serve_ctrl_c_mid_stream_says_the_server_is_shutting_down(tmp_path):
    """Ctrl-C reaches the whole group, the engine process too: streams still running end with
    "the server is shutting down" (it said "the engine process exited", as for a crash): an
    SSE error event, which the openai client raises, and an `{"error": ...}` line on Ollama's
    NDJSON; the terminal gets no traceback (it got uvicorn's "Exception in ASGI application").
    The engine is paused (SIGSTOP) while the signal comes, so the Ollama stream, whose answer
    the tiny model would end early, is still waiting for tokens then."""
    p, port, _, _ = _serve_cli(tmp_path, "--no-auth")
    url = f"http://127.0.0.1:{port}"
    try:
        client = openai.OpenAI(base_url=url, api_key="none")
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Count."}],
            max_tokens=900,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        chunks = iter(stream)
        for _ in range(4):
            next(chunks)
        kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True)
        engine = [int(k) for k in kids.stdout.split() if b"spawn_main" in _cmdline(int(k))]
        assert len(engine) == 1
        os.kill(engine[0], signal.SIGSTOP)
        try:
            body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
            with httpx.stream("POST", url + "/api/chat", json=body, timeout=60) as r:
                assert r.status_code == 200  # the request is queued for the engine
                os.killpg(p.pid, signal.SIGINT)
                os.kill(engine[0], signal.SIGCONT)
                lines = [json.loads(x) for x in r.iter_lines() if x]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(engine[0], signal.SIGCONT)
        assert lines[-1] == {"error": "the server is shutting down"}, lines
        with pytest.raises(openai.APIError, match="^the server is shutting down$"):
            for _ in chunks:
                pass
        assert p.wait(timeout=60) == 0
        assert "Traceback" not in p.stderr.read()
    finally:
        p.kill()
        p.wait()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def test_serve_one_process_port_in_use_and_sigterm(tmp_path):
    """One API process (CPU's default): a port in use is one line, before the banner (it was
    printed, then uvicorn logged the failure); SIGTERM stops it cleanly (exit 0, not -15)."""
    first, port, cmd, env = _serve_cli(tmp_path)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["status"] == "ok"
        r = subprocess.run(
            [*cmd, "--port", str(port)], capture_output=True, text=True, env=env, timeout=120
        )
        assert r.returncode == 2 and r.stdout == ""
        assert (
            r.stderr == f"r1kit: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
        )
        first.terminate()
        assert first.wait(timeout=60) == 0
    finally:
        first.kill()
        first.wait()


def test_reasoning_stream_matches_split():
    rnd = random.Random(0)
    atoms = ["<think>", "</think>", " ", "\n", "a", "b", "<", "/", "think>", "</"]
    for _ in range(2000):
        text = "".join(rnd.choice(atoms) for _ in range(rnd.randint(0, 14)))
        s, r, a, i = ReasoningStream(), "", "", 0
        while i < len(text):
            j = i + rnd.randint(1, 4)
            x, y = s.feed(text[i:j])
            r, a, i = r + x, a + y, j
        x, y = s.close()
        assert (r + x, (a + y) if s.answer_started else None) == split_reasoning(text)
    # a tag cut across chunks is held back, never emitted in part
    s = ReasoningStream()
    assert s.feed("<thi") == ("", "")
    assert s.feed("nk>\nabc </thi") == ("abc", "")
    assert s.feed("nk>\n\nThe ans") == ("", "The ans")
    assert s.feed("wer  ") == ("", "wer")
    assert s.close() == ("", "")


def test_sample_text_stop_and_utf8(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = tok.encode("<think>\nwork\n</think>\n\nThe answer is 7. Done", add_special_tokens=False)
    s = SampleText(tok, True, ("Done",))
    got = [s.add([t], None) for t in ids]
    assert s.finish_reason == "stop" and s.content == "The answer is 7." and s.reasoning == "work"
    assert all(d is None or "Don" not in d.content for d in got)
    # a character split across byte-level tokens is never emitted half
    ids = tok.encode("é ü", add_special_tokens=False)
    s = SampleText(tok, None, ())
    for t in ids:
        d = s.add([t], None)
        assert d is None or "\ufffd" not in d.content
    s.add([], "length")
    assert s.content == "é ü"


@pytest.mark.parametrize("think", [True, False])
@pytest.mark.parametrize("template", ["r1zero", "chat"])
def test_render_think_switch(template, think):
    """Thinking off closes the think block empty, in the spacing of each format."""
    tok = load_tokenizer(None)
    set_template(tok, template)
    p = render_chat(tok, [{"role": "user", "content": "hi"}], think)
    if template == "r1zero":
        assert p.endswith("User: hi\nAssistant: <think>" + ("" if think else " </think>"))
    else:
        assert p.endswith("<think>\n") if think else p.endswith("<think>\n</think>\n\n")
