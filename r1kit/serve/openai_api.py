"""The OpenAI/DeepSeek contract (DESIGN.md section 5): `/v1/chat/completions` (JSON or SSE),
`/v1/completions`, `/v1/models`, with `reasoning_content` (alias `reasoning`) beside `content`.

Sampling defaults follow DeepSeek's advice for R1 (temperature 0.6, top-p 0.95). Extensions:
`think: false` (or `chat_template_kwargs: {"enable_thinking": false}`) answers without
reasoning; `ignore_eos: true` generates max_tokens tokens (benchmarks).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

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
    chat_template_kwargs: dict[str, Any] | None = None


class CompletionRequest(Sampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)


def text_of(content) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def check_model(state, name: str | None) -> str:
    if name and name not in state.model_names:
        raise bad_request("Model Not Exist", "model")
    return state.gen.name


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


def record(state, key_id: str, g: Generation, endpoint: str) -> None:
    state.store.record(key_id, state.gen.name, endpoint, g.prompt_tokens, g.completion_tokens,
                       g.reasoning_tokens)  # fmt: skip


def respond(state, key_id: str, g: Generation, stream: bool, chunk_fn, final_fn, usage: bool,
            endpoint: str):  # fmt: skip
    """JSON after the whole generation, or SSE: chunks, [usage], [DONE]. Usage is recorded
    either way, also for a client that left mid-stream (its request was aborted)."""
    if not stream:

        async def whole():
            try:
                await g.run()
            finally:
                record(state, key_id, g, endpoint)
            return final_fn(g)

        return whole()

    async def events():
        try:
            for chunk in chunk_fn(None):
                yield sse(chunk)
            async for deltas in g:
                for chunk in chunk_fn(deltas):
                    yield sse(chunk)
            if usage:
                yield sse(chunk_fn.usage_chunk(usage_of(g)))
            yield b"data: [DONE]\n\n"
        finally:
            record(state, key_id, g, endpoint)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache"})  # fmt: skip


class _Chunks:
    """SSE chunks of a chat completion: role first, then reasoning / content deltas, then one
    chunk per choice with its finish_reason."""

    def __init__(self, g: Generation, model: str, obj: str, chat: bool) -> None:
        self.g, self.model, self.obj, self.chat = g, model, obj, chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.done: set[int] = set()

    def _wrap(self, choices: list) -> dict:
        return {"id": self.id, "object": self.obj, "created": self.created, "model": self.model,
                "choices": choices, "usage": None}  # fmt: skip

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
                yield self._wrap([self._choice(d.index, {"content": None,
                                  "reasoning_content": d.reasoning, "reasoning": d.reasoning})])  # fmt: skip
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
async def models(request: Request):
    state = request.app.state
    state.auth.check(request)
    return {"object": "list", "data": [{"id": state.gen.name, "object": "model",
            "created": state.created, "owned_by": "r1kit"}]}  # fmt: skip


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    state = request.app.state
    key_id = state.auth.check(request)
    body: ChatRequest = await read_json(request, ChatRequest)
    if not body.messages:
        raise bad_request("messages must not be empty", "messages")
    model = check_model(state, body.model)
    think = body.think
    if think is None and body.chat_template_kwargs:
        think = body.chat_template_kwargs.get("enable_thinking")
    think = True if think is None else bool(think)
    msgs = [{"role": m.role, "content": text_of(m.content)} for m in body.messages]
    gen = state.gen
    ids = gen.encode(gen.render(msgs, think))
    params = gen.params(len(ids), body.max_completion_tokens or body.max_tokens, body.n,
                        body.temperature, body.top_p, body.seed, body.ignore_eos)  # fmt: skip
    g = gen.start(ids, params, think, body.stops())
    chunks = _Chunks(g, model, "chat.completion.chunk", chat=True)
    include = bool((body.stream_options or {}).get("include_usage"))

    def final(g: Generation) -> dict:
        choices = []
        for j, s in enumerate(g.samples):
            msg = {"role": "assistant", "content": s.answer,
                   "reasoning_content": s.reasoning if think else None}  # fmt: skip
            msg["reasoning"] = msg["reasoning_content"]
            choices.append({"index": j, "message": msg, "logprobs": None,
                            "finish_reason": s.finish_reason})  # fmt: skip
        return {"id": chunks.id, "object": "chat.completion", "created": chunks.created,
                "model": model, "choices": choices, "usage": usage_of(g)}  # fmt: skip

    out = respond(state, key_id, g, body.stream, chunks, final, include, "chat")
    return out if body.stream else await out


@router.post("/v1/completions")
async def completions(request: Request):
    state = request.app.state
    key_id = state.auth.check(request)
    body: CompletionRequest = await read_json(request, CompletionRequest)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1 or not prompts[0]:
        raise bad_request("prompt must be one non-empty string", "prompt")
    model = check_model(state, body.model)
    gen = state.gen
    ids = gen.encode(prompts[0])
    params = gen.params(len(ids), body.max_tokens, body.n, body.temperature, body.top_p,
                        body.seed, body.ignore_eos)  # fmt: skip
    g = gen.start(ids, params, None, body.stops())
    chunks = _Chunks(g, model, "text_completion", chat=False)
    include = bool((body.stream_options or {}).get("include_usage"))

    def final(g: Generation) -> dict:
        choices = [{"index": j, "text": s.content, "logprobs": None,
                    "finish_reason": s.finish_reason} for j, s in enumerate(g.samples)]  # fmt: skip
        return {"id": chunks.id, "object": "text_completion", "created": chunks.created,
                "model": model, "choices": choices, "usage": usage_of(g)}  # fmt: skip

    out = respond(state, key_id, g, body.stream, chunks, final, include, "completions")
    return out if body.stream else await out
