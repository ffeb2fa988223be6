"""ASGI guards in front of every route: a body cap enforced while the body is read, and, when
the server runs without keys, Host/Origin checks and JSON-only bodies.

`BodyLimit` answers 413 at once for a declared Content-Length over the cap and stops a chunked
body as soon as it passes the cap, so no body larger than the cap is ever held in memory.
`LocalOnly` (with `--no-auth`) refuses a Host that is not the bound address or a loopback name
(DNS rebinding: evil.example resolving to 127.0.0.1), an Origin that is not the server itself
or one named by `--allow-origin` (cross-site requests from a page the user opened), and a body
that is not JSON (text/plain and form posts are the cross-site requests a browser sends
without a preflight) -- the class of Ollama's CVE-2024-28224.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from r1kit.serve.errors import APIError, error_response

DEFAULT_MAX_BODY = 4 << 20  # 4 MiB: a 1M-character prompt in JSON, well past any context here
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


async def _refuse(scope: Scope, receive: Receive, send: Send, err: APIError) -> None:
    resp = error_response(Request(scope), err)
    resp.headers["connection"] = "close"  # the unread body is not drained
    await resp(scope, receive, send)


def too_large(limit: int) -> APIError:
    return APIError(
        413, f"the request body is larger than {limit} bytes (--max-body)", code="request_too_large"
    )


class BodyLimit:
    def __init__(self, app: ASGIApp, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_body
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                if declared is None or declared < 0:
                    return await _refuse(scope, receive, send, APIError(400, "bad Content-Length"))
                if declared > limit:
                    return await _refuse(scope, receive, send, too_large(limit))
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:  # a chunked body: stop reading it here (the route answers 413)
                    raise too_large(limit)
            return msg

        await self.app(scope, counted, send)


def _hostname(value: str) -> str:
    """The host part of a Host header value ("[::1]:8000" -> "::1")."""
    return (urlsplit("//" + value).hostname or "").lower()


class LocalOnly:
    def __init__(
        self, app: ASGIApp, host: str = "127.0.0.1", allow_origins: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.hosts = LOOPBACK_NAMES | {host.strip("[]").lower()}
        self.allow_origins = {o.rstrip("/") for o in allow_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        h = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if _hostname(h.get("host", "")) not in self.hosts:
            err = APIError(
                403,
                "this server (--no-auth) answers only requests addressed to its own address",
                code="forbidden_host",
            )
            return await _refuse(scope, receive, send, err)
        origin = h.get("origin")
        if origin is not None and origin.rstrip("/") not in self.allow_origins:
            if _hostname(urlsplit(origin).netloc) not in self.hosts:
                err = APIError(
                    403,
                    f"cross-origin requests from {origin} are refused "
                    "(--allow-origin names the origins allowed)",
                    code="forbidden_origin",
                )
                return await _refuse(scope, receive, send, err)
        if scope["method"] in ("POST", "PUT", "PATCH"):
            ctype = h.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json" and not ctype.endswith("+json"):
                err = APIError(
                    415,
                    "the body must be JSON: send the header Content-Type: application/json "
                    "(curl: -H 'Content-Type: application/json'); without keys (--no-auth) "
                    "other bodies are refused, being what a page on another site can post",
                    code="unsupported_media_type",
                )
                return await _refuse(scope, receive, send, err)
        await self.app(scope, receive, send)
