"""`r1kit run`: an interactive terminal chat like `ollama run`.

Reasoning is shown dimmed, then the answer. Commands: `/set think`, `/set nothink`, `/clear`,
`/bye` (or end of input). It talks to an OpenAI-compatible endpoint (`--base-url`), or starts
r1kit's server for a local model in this process on a free loopback port, without auth.
"""

from __future__ import annotations

import socket
import sys
import threading
import time

from r1kit.errors import R1kitError
from r1kit.serve.app import create_app, make_generator
from r1kit.serve.store import Store

DIM, RESET = "\x1b[2m", "\x1b[0m"
HELP = "commands: /set think, /set nothink, /clear, /bye"


def start_local(model: str | None, engine: str = "auto", template: str = "auto"):
    """Serve `model` on a free loopback port in a daemon thread; returns (base_url, name)."""
    import uvicorn

    # a .gguf runs on llama.cpp; the chat is rendered in the model's own format unless told
    gen, _ = make_generator(model, engine, max_waiting=64, template=template)
    name = gen.name
    app = create_app(gen, Store(":memory:"), auth=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}/v1", name


def chat_loop(
    base_url: str,
    model: str | None,
    api_key: str,
    think: bool = True,
    stdin=None,
    out=None,
    color: bool | None = None,
    max_tokens: int | None = None,
) -> int:
    import openai

    stdin, out = stdin or sys.stdin, out or sys.stdout
    color = out.isatty() if color is None else color
    dim, reset = (DIM, RESET) if color else ("", "")
    client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=0)
    try:
        model = model or client.models.list().data[0].id
    except openai.APIError as err:  # no server there, a wrong key: before any prompt
        raise R1kitError(f"cannot reach the model at {base_url}: {err.message}") from None
    interactive = stdin.isatty()
    history: list[dict] = []
    while True:
        if interactive:
            out.write(">>> ")
            out.flush()
        line = stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            cmd = text.split()
            if cmd[0] in ("/bye", "/exit", "/quit"):
                break
            if cmd[:2] == ["/set", "think"]:
                think = True
                out.write("Set 'think' mode.\n")
            elif cmd[:2] == ["/set", "nothink"]:
                think = False
                out.write("Set 'nothink' mode.\n")
            elif cmd[0] == "/clear":
                history = []
                out.write("Cleared session context.\n")
            else:
                out.write(f"Unknown command {text!r}; {HELP}\n")
            continue
        history.append({"role": "user", "content": text})
        try:
            answer = _ask(client, model, history, think, out, dim, reset, max_tokens)
        except openai.APIError as err:
            out.write(f"error: {err}\n")
            history.pop()
            continue
        history.append({"role": "assistant", "content": answer})
    return 0


def _ask(client, model, history, think: bool, out, dim: str, reset: str, max_tokens=None) -> str:
    extra = {"max_tokens": max_tokens} if max_tokens else {}
    stream = client.chat.completions.create(
        model=model, messages=history, stream=True, extra_body={"think": think}, **extra
    )
    answer, in_reasoning = "", False
    for chunk in stream:
        for ch in chunk.choices:
            extra = ch.delta.model_extra or {}
            r = extra.get("reasoning_content") or extra.get("reasoning")
            if r:
                if not in_reasoning:
                    out.write(dim + "Thinking...\n")
                    in_reasoning = True
                out.write(r)
            if ch.delta.content:
                if in_reasoning:
                    out.write("\n...done thinking." + reset + "\n\n")
                    in_reasoning = False
                answer += ch.delta.content
                out.write(ch.delta.content)
            out.flush()
    if in_reasoning:
        out.write("\n...done thinking." + reset + "\n")
    out.write("\n\n")
    out.flush()
    return answer


def run(
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    think: bool = True,
    engine: str = "auto",
    template: str = "auto",
) -> int:
    import os

    name = None
    if base_url is None:
        base_url, name = start_local(model, engine, template)
    elif model:
        name = model
    key = api_key or os.environ.get("R1KIT_API_KEY") or os.environ.get("OPENAI_API_KEY", "")
    if sys.stdin.isatty():
        print(f"r1kit run: {name or base_url}; {HELP}")
    return chat_loop(base_url, name, key, think)
