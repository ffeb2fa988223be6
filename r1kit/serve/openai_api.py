"""The OpenAI/DeepSeek contract (DESIGN.md section 5): `/v1/chat/completions` (JSON or SSE),
`/v1/completions`, `/v1/models`, with `reasoning_content` (alias `reasoning`) beside `content`.

Sampling defaults follow DeepSeek's advice for R1 (temperature 0.6, top-p 0.95). DeepSeek's
base URL without `/v1` works too, as do its model names (`deepseek-reasoner` thinks,
`deepseek-chat` does not), its `thinking: {"type": "enabled" | "disabled"}` and
`GET /user/balance`. Extensions: `think: false` (or `chat_template_kwargs:
{"enable_thinking": false}`) answers without reasoning; `ignore_eos: true` generates
max_tokens tokens (benchmarks). Parameters r1kit does not implement are a 400 naming them
(serve/compat.py).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from r1kit.serve.admission import Ticket, encode, keepalive, run_or_abort
from r1kit.serve.compat import (
    DEEPSEEK_MODELS,
    reject_parts,
    reject_unsupported,
    thinking_of,
)
from r1kit.serve.errors import APIError, bad_request, read_json
from r1kit.serve.generation import Generation

router = APIRouter()


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class Sampling(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI fields are accepted and ignored
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.6, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    n: int = Field(1, ge=1, le=64)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    ignore_eos: bool = False

    def stops(self) -> tuple[str, ...]:
        s = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(s) > 16:
            raise APIError(422, "at most 16 stop sequences", "stop", "invalid_parameter")
        return tuple(s)


class ChatRequest(Sampling):
    messages: list[Message]
    think: bool | None = None
    thinking: dict[str, Any] | None = None  # DeepSeek's {"type": "enabled" | "disabled"}
    chat_template_kwargs: dict[str, Any] | None = None


class CompletionRequest(Sampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)


def text_of(content) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def check_model(state, name: str | None) -> tuple[str, bool | None]:
    """The model name to answer with and whether it thinks by default (None: the request
    decides): DeepSeek's names stand for the served model."""
    if name in DEEPSEEK_MODELS:
        return name, DEEPSEEK_MODELS[name]
    if name and name not in state.model_names:
        raise bad_request("Model Not Exist", "model")
    return state.gen.name, None


def sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


def usage_of(g: Generation) -> dict:
    p, c, hit = g.prompt_tokens, g.completion_tokens, g.prompt_cache_hit_tokens
    return {
        "prompt_tokens": p,
        "completion_tokens": c,
        "total_tokens": p + c,
        "prompt_tokens_details": {"cached_tokens": hit},  # OpenAI's name; DeepSeek's two:
        "prompt_cache_hit_tokens": hit,
        "prompt_cache_miss_tokens": p - hit,
        "completion_tokens_details": {"reasoning_tokens": g.reasoning_tokens},
    }


def respond(
    request: Request,
    ticket: Ticket,
    g: Generation,
    stream: bool,
    chunk_fn,
    final_fn,
    usage: bool,
    endpoint: str,
):
    """JSON after the whole generation, or SSE: chunks (`: keep-alive` comments while the
    request waits), [usage], [DONE]. Usage is settled either way, also for a client that left
    (its request was aborted, streaming or not)."""
    if not stream:

        async def whole():
            try:
                await run_or_abort(request, g)
            finally:
                ticket.settle(g, endpoint)
            return final_fn(g)

        return whole()

    async def events():
        try:
            for chunk in chunk_fn(None):
                yield sse(chunk)
            async for deltas in keepalive(g, request.app.state.keepalive_s, request):
                if deltas is None:
                    yield b": keep-alive\n\n"
                    continue
                for chunk in chunk_fn(deltas):
                    yield sse(chunk)
            if usage:
                yield sse(chunk_fn.usage_chunk(usage_of(g)))
            yield b"data: [DONE]\n\n"
        except APIError as e:  # the engine failed (or was stopped) mid-stream: the 200 is out,
            yield sse(e.body())  # so the error is an event, which the openai client raises
        finally:
            ticket.settle(g, endpoint)

    # the background settle is for a stream that never started (its client left first): the
    # reservation is returned; settling twice is a no-op
    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache"},
        background=BackgroundTask(ticket.settle, g, endpoint),
    )


class _Chunks:
    """SSE chunks of a chat completion: role first, then reasoning / content deltas, then one
    chunk per choice with its finish_reason."""

    def __init__(self, g: Generation, model: str, obj: str, chat: bool) -> None:
        self.g, self.model, self.obj, self.chat = g, model, obj, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.done: set[int] = set()

    def _wrap(self, choices: list) -> dict:
        return {
            "id": self.id,
            "object": self.obj,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": None,
        }

    def usage_chunk(self, usage: dict) -> dict:
        return {**self._wrap([]), "usage": usage}

    def __call__(self, deltas):
        n = len(self.g.samples)
        if deltas is None:
            if self.chat:
                first = [self._choice(j, {"role": "assistant", "content": None}) for j in range(n)]
                yield self._wrap(first)
            return
        for d in deltas:
            s = self.g.samples[d.index]
            if d.reasoning and self.chat:
                yield self._wrap(
                    [
                        self._choice(
                            d.index,
                            {
                                "content": None,
                                "reasoning_content": d.reasoning,
                                "reasoning": d.reasoning,
                            },
                        )
                    ]
                )
            if d.content:
                body = {"content": d.content, "reasoning_content": None} if self.chat else None
                yield self._wrap([self._choice(d.index, body, text=d.content)])
            if s.finish_reason and d.index not in self.done:
                self.done.add(d.index)
                end = {"content": None} if self.chat else None
                yield self._wrap([self._choice(d.index, end, s.finish_reason, text="")])

    def _choice(self, j: int, delta, finish=None, text: str = "") -> dict:
        if self.chat:
            if delta:
                delta.setdefault("reasoning_content", None)
            return {"index": j, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": j, "text": text, "logprobs": None, "finish_reason": finish}


@router.get("/v1/models")
@router.get("/models")
async def models(request: Request):
    state = request.app.state
    state.auth.check(request)
    return {
        "object": "list",
        "data": [
            {"id": state.gen.name, "object": "model", "created": state.created, "owned_by": "r1kit"}
        ],
    }


@router.post("/v1/chat/completions")
@router.post("/chat/completions")
async def chat_completions(request: Request):
    state = request.app.state
    state.auth.check(request)
    body: ChatRequest = await read_json(request, ChatRequest)
    if not body.messages:
        raise bad_request("messages must not be empty", "messages")
    reject_unsupported(body.model_extra or {}, chat=True)
    reject_parts(body.messages)
    model, model_think = check_model(state, body.model)
    think = body.think
    if think is None:
        think = thinking_of(body.thinking)
    if think is None and body.chat_template_kwargs:
        think = body.chat_template_kwargs.get("enable_thinking")
    if think is None:
        think = model_think
    think = True if think is None else bool(think)
    msgs = [{"role": m.role, "content": text_of(m.content)} for m in body.messages]
    gen, stops = state.gen, body.stops()
    chars = sum(len(m["content"]) for m in msgs)
    ids = await encode(
        gen, chars, lambda: gen.encode(gen.render(msgs, think)), "messages", len(msgs)
    )
    params = gen.params(
        len(ids),
        body.max_completion_tokens or body.max_tokens,
        body.n,
        body.temperature,
        body.top_p,
        body.seed,
        body.ignore_eos,
    )
    ticket = Ticket(request, len(ids), params)
    g = ticket.start(lambda p: gen.start(ids, p, think, stops))
    chunks = _Chunks(g, model, "chat.completion.chunk", chat=True)
    include = bool((body.stream_options or {}).get("include_usage"))

    def final(g: Generation) -> dict:
        choices = []
        for j, s in enumerate(g.samples):
            msg = {
                "role": "assistant",
                "content": s.answer,
                "reasoning_content": s.reasoning if think else None,
            }
            msg["reasoning"] = msg["reasoning_content"]
            choices.append(
                {"index": j, "message": msg, "logprobs": None, "finish_reason": s.finish_reason}
            )
        return {
            "id": chunks.id,
            "object": "chat.completion",
            "created": chunks.created,
            "model": model,
            "choices": choices,
            "usage": usage_of(g),
        }

    out = respond(request, ticket, g, body.stream, chunks, final, include, "chat")
    return out if body.stream else await out


@router.post("/v1/completions")
@router.post("/completions")
async def completions(request: Request):
    state = request.app.state
    state.auth.check(request)
    body: CompletionRequest = await read_json(request, CompletionRequest)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1 or not prompts[0]:
        raise bad_request("prompt must be one non-empty string", "prompt")
    reject_unsupported(body.model_extra or {}, chat=False)
    model, _ = check_model(state, body.model)
    gen, stops = state.gen, body.stops()
    ids = await encode(gen, len(prompts[0]), lambda: gen.encode(prompts[0]), "prompt")
    params = gen.params(
        len(ids), body.max_tokens, body.n, body.temperature, body.top_p, body.seed, body.ignore_eos
    )
    ticket = Ticket(request, len(ids), params)
    g = ticket.start(lambda p: gen.start(ids, p, None, stops))
    chunks = _Chunks(g, model, "text_completion", chat=False)
    include = bool((body.stream_options or {}).get("include_usage"))

    def final(g: Generation) -> dict:
        choices = [
            {"index": j, "text": s.content, "logprobs": None, "finish_reason": s.finish_reason}
            for j, s in enumerate(g.samples)
        ]
        return {
            "id": chunks.id,
            "object": "text_completion",
            "created": chunks.created,
            "model": model,
            "choices": choices,
            "usage": usage_of(g),
        }

    out = respond(request, ticket, g, body.stream, chunks, final, include, "completions")
    return out if body.stream else await out


@router.get("/user/balance")
async def balance(request: Request):
    """DeepSeek's balance: what is left of the key's credit (money, its currency) and, an
    r1kit extension, of its token quota. A spent key may still ask (no 402, no rpm)."""
    state = request.app.state
    state.auth.check(request, quota=False, rate=False)
    key = request.state.key
    key = state.store.get_key(key.id) if key is not None else None
    if key is None:  # auth off: nothing is metered
        return {"is_available": True, "balance_infos": []}
    infos, available = [], True
    if key.credit is not None:
        left = f"{max(0.0, key.credit - key.spent):.2f}"
        infos.append(
            {
                "currency": key.currency,
                "total_balance": left,
                "granted_balance": left,
                "topped_up_balance": "0.00",
            }
        )
        available = key.money_left() > 0
    out = {"is_available": available, "balance_infos": infos}
    if key.quota_tokens is not None:
        out["token_quota"] = {
            "total": key.quota_tokens,
            "used": key.used_tokens,
            "left": max(0, key.quota_tokens - key.used_tokens),
        }
        out["is_available"] = available and key.tokens_left() > 0
    return out
