"""Errors as `{"error": {"message", "type", "param", "code"}}` with DeepSeek's status codes.

400 invalid format (malformed JSON, invalid UTF-8 or a lone surrogate, wrong types, a prompt
longer than the context: code `context_length_exceeded`, an unsupported parameter), 401
authentication, 402 quota exhausted, 403 Host/Origin refused (`--no-auth`), 404/405 unknown
route or method, 413 body over `--max-body`, 415 a non-JSON body (`--no-auth`), 422 invalid
parameters, 429 rate limit, 500 server error, 503 overloaded. Ollama routes use the same codes
with Ollama's `{"error": str}`.
"""

from __future__ import annotations

import asyncio
import json
import re

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_overloaded",
}


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.code = code or TYPES.get(status, "error")
        self.headers = headers or {}

    def body(self) -> dict:
        err = {"message": self.message, "type": TYPES.get(self.status, "error")}
        err.update(param=self.param, code=self.code)
        return {"error": err}


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param, "invalid_request_error")


def invalid_param(message: str, param: str | None = None) -> APIError:
    return APIError(422, message, param, "invalid_parameter")


def _is_ollama(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def error_response(request: Request, err: APIError) -> JSONResponse:
    body = {"error": err.message} if _is_ollama(request) else err.body()
    return JSONResponse(body, status_code=err.status, headers=err.headers)


async def api_error_handler(request: Request, err: APIError) -> JSONResponse:
    return error_response(request, err)


def validation_error(err: ValidationError) -> APIError:
    """pydantic's complaint about a field: a wrong type is a 400, a bad value a 422."""
    errs = err.errors()
    first = errs[0] if errs else {}
    loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or None
    msg = f"{loc}: {first.get('msg', 'invalid')}" if loc else first.get("msg", "invalid")
    kind = first.get("type", "")
    if kind == "missing" or kind.endswith(("_type", "_parsing")):
        return bad_request(msg, loc)
    return invalid_param(msg, loc)


_SURROGATE = re.compile("[\ud800-\udfff]")  # after json.loads only a lone one is left
THREAD_PARSE = 256 << 10  # bodies past 256 KiB are parsed off the event loop


def _parse(raw: bytes):
    data = json.loads(raw.decode("utf-8"))
    if _has_surrogate(data):
        raise UnicodeError("lone surrogate")
    return data


def _has_surrogate(x) -> bool:
    if isinstance(x, str):
        return _SURROGATE.search(x) is not None
    if isinstance(x, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in x.items())
    if isinstance(x, list):
        return any(_has_surrogate(v) for v in x)
    return False


async def read_json(request: Request, model: type[BaseModel]) -> BaseModel:
    """The request body as `model`: 400 for invalid UTF-8 (a lone surrogate like "\\ud800"
    included: no tokenizer can encode it), malformed JSON or wrong types."""
    raw = await request.body()
    try:
        data = await asyncio.to_thread(_parse, raw) if len(raw) > THREAD_PARSE else _parse(raw)
    except UnicodeDecodeError:
        raise bad_request("the body is not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise bad_request(f"the body is not valid JSON: {e.msg} at {e.pos}") from None
    except UnicodeError:
        raise bad_request("the body has a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_error(e) from None


async def http_error_handler(request: Request, err: HTTPException) -> JSONResponse:
    """Starlette's own 404 (no route) and 405 (wrong method) in the API's error shape."""
    msg = {
        404: f"no route {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(err.status_code, str(err.detail))
    code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
    return error_response(
        request, APIError(err.status_code, msg, code=code, headers=dict(err.headers or {}))
    )


async def server_error_handler(request: Request, err: Exception) -> JSONResponse:
    return error_response(request, APIError(500, f"internal error: {type(err).__name__}"))
