"""Errors as `{"error": {"message", "type", "param", "code"}}` with DeepSeek's status codes.

400 invalid format (malformed JSON, invalid UTF-8, wrong types, a prompt longer than the
context), 401 authentication, 402 quota exhausted, 422 invalid parameters, 429 rate limit,
500 server error, 503 overloaded. Ollama routes use the same codes with Ollama's `{"error": str}`.
"""

from __future__ import annotations

import json

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    404: "not_found_error",
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


async def read_json(request: Request, model: type[BaseModel]) -> BaseModel:
    """The request body as `model`: 400 for invalid UTF-8, malformed JSON or wrong types."""
    raw = await request.body()
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise bad_request("the body is not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise bad_request(f"the body is not valid JSON: {e.msg} at {e.pos}") from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_error(e) from None


async def server_error_handler(request: Request, err: Exception) -> JSONResponse:
    return error_response(request, APIError(500, f"internal error: {type(err).__name__}"))
