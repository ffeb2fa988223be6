"""A small OpenAI-compatible server for tests, on a free loopback port in a thread.

`POST /v1/chat/completions` answers with `reasoning_content` beside `content` (DESIGN.md
section 5), `GET /v1/models` lists one model, and a bearer key is checked. Failures are
scripted: `fail` holds statuses returned to the first requests (429 with Retry-After, 503, ...),
`fail_after` turns every request past that many successes into a 401 (a key revoked half-way).
Until r1kit's own server lands, this is the endpoint the eval tests talk to.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOXED_ANSWER = re.compile(r"^(.*)\nPlease reason step by step", re.S)


class StubServer:
    def __init__(self, answers: dict, key: str = "sk-test", model: str = "stub-r1"):
        self.answers = answers  # question -> answer, or a list of answers given in turn
        self.asked: dict[str, int] = {}
        self.key, self.model = key, model
        self.fail: list[int] = []
        self.fail_after: int | None = None
        self.delay_s = 0.0
        self.bodies: list[dict] = []  # every chat request that was answered with 200
        self.statuses: list[int] = []  # the status of every chat request, in order
        self.lock = threading.Lock()
        self.httpd = _QuietServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reply(self, body: dict) -> tuple[int, dict, dict]:
        """(status, json, headers) for one chat completion request."""
        with self.lock:
            if self.fail:
                code = self.fail.pop(0)
                self.statuses.append(code)
                return code, _error(code), {"retry-after-ms": "20"}
            if self.fail_after is not None and len(self.bodies) >= self.fail_after:
                self.statuses.append(401)
                return 401, _error(401), {}
            self.bodies.append(body)
            self.statuses.append(200)
            text = body["messages"][-1]["content"]
            m = BOXED_ANSWER.match(text)
            q = m.group(1).strip() if m else text
            turn = self.asked[q] = self.asked.get(q, -1) + 1
        time.sleep(self.delay_s)
        given = self.answers.get(q, "0")
        answer = given[turn % len(given)] if isinstance(given, list) else given
        msg = {
            "role": "assistant",
            "content": f"The answer is $\\boxed{{{answer}}}$.",
            "reasoning_content": f"Let me work it out. Wait, let me check: {answer}.",
        }
        return (
            200,
            {
                "id": f"chatcmpl-{len(self.bodies)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32},
            },
            {},
        )


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-reply (a stopped eval closing its connections) is normal
        here; socketserver's default would print a traceback into the test's stderr."""


def _error(code: int) -> dict:
    kind = {401: "authentication_error", 429: "rate_limit_error"}.get(code, "server_error")
    msg = {401: "Authentication Fails (invalid key)", 429: "Rate limit reached"}.get(
        code, "The server is overloaded"
    )
    return {"error": {"message": msg, "type": kind, "param": None, "code": str(code)}}


def _handler(stub: StubServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _send(self, code: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {stub.key}":
                return True
            with stub.lock:
                stub.statuses.append(401)
            self._send(401, _error(401))
            return False

        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/v1/models":
                return self._send(404, {"error": {"message": "not found", "code": "404"}})
            if self._authorized():
                self._send(200, {"object": "list", "data": [{"id": stub.model, "object": "model"}]})

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(n) or b"{}")
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(404, {"error": {"message": "not found", "code": "404"}})
            if self._authorized():
                self._send(*stub.reply(body))

    return Handler
