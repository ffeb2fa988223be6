"""The Ollama contract: `/api/chat`, `/api/generate` (NDJSON streaming, `think` -> `thinking`),
`/api/tags`, `/api/show`, `/api/version`. Errors are `{"error": "..."}` with the same status
codes as the OpenAI routes; an unknown model is a 404, as Ollama answers it. `tags` and `show`
need a key like `/v1/models`; `show` names the model, never a path on the server.

Durations are measured, in ns: load_duration from the request's arrival to the engine taking it
(parsing, template, tokenizing: the model stays loaded), prompt_eval_duration from then to the
first token (queue and prefill), eval_duration the decode time: (last - first token time) x
eval_count / (eval_count - 1), so eval_count / eval_duration is the decode rate (when all the
tokens arrive in one batch, as a short answer can, the time from then to the reply)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from r1kit.serve.admission import Ticket, encode, run_or_abort
from r1kit.serve.compat import unsupported
from r1kit.serve.errors import APIError, bad_request, read_json

router = APIRouter()
OLLAMA_VERSION = "0.12.0"  # the Ollama API version these routes follow


class Options(BaseModel):
    model_config = ConfigDict(extra="allow")
    temperature: float = Field(0.6, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int | None = None
    num_predict: int | None = None  # -1 or None: until the context is full
    stop: list[str] | None = None


class OllamaMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None  # sent back by clients; ignored like reasoning_content


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    stream: bool = True
    think: bool | Literal["low", "medium", "high"] | None = None
    options: Options = Field(default_factory=Options)


class ChatRequest(_Base):
    messages: list[OllamaMessage] = Field(default_factory=list)


class GenerateRequest(_Base):
    prompt: str = ""
    system: str | None = None
    raw: bool = False


class ShowRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    name: str | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _check_model(state, name: str) -> None:
    if name not in state.model_names:
        raise APIError(404, f"model '{name}' not found", "model", "model_not_found")


def _reject_unsupported(body: _Base, messages: list[OllamaMessage] = ()) -> None:
    extra = body.model_extra or {}
    for name in ("format", "tools", "images"):
        if extra.get(name) not in (None, "", [], {}):
            raise unsupported(name)
    for i, m in enumerate(messages):
        if (m.model_extra or {}).get("images"):
            raise unsupported(f"messages[{i}].images", "is not supported: text only")


async def _run(
    request: Request, state, body: _Base, messages: list[dict] | None, prompt: str | None, key: str
):
    """Start the generation; answer NDJSON lines, or one JSON object when stream is false."""
    t0 = request.state.t0
    gen = state.gen
    think = body.think is not False
    if messages is not None:
        chars = sum(len(m["content"]) for m in messages)
        ids = await encode(
            gen, chars, lambda: gen.encode(gen.render(messages, think)), "messages", len(messages)
        )
    else:
        ids = await encode(gen, len(prompt), lambda: gen.encode(prompt), "prompt")
    o = body.options
    mt = o.num_predict if o.num_predict and o.num_predict > 0 else None
    params = gen.params(len(ids), mt, 1, o.temperature, o.top_p, o.seed)
    ticket = Ticket(request, len(ids), params)
    stops = tuple(o.stop or ())
    g = ticket.start(
        lambda p: gen.start(ids, p, think if messages is not None or not body.raw else None, stops)
    )
    t_start = time.perf_counter_ns()  # the engine has the request
    times: list[int] = []  # first and latest token times

    def seen() -> None:
        now = time.perf_counter_ns()
        times[:] = [times[0] if times else now, now]

    def line(content: str, thinking: str, done: bool) -> dict:
        if key == "message":
            part: dict[str, Any] = {"message": {"role": "assistant", "content": content}}
            if thinking:
                part["message"]["thinking"] = thinking
        else:
            part = {"response": content}
            if thinking:
                part["thinking"] = thinking
        out = {"model": body.model, "created_at": _now(), **part, "done": done}
        if done:
            s = g.samples[0]
            end = time.perf_counter_ns()
            first, last = times if times else (end, end)
            n = g.completion_tokens
            if n > 1 and last > first:
                decode = (last - first) * n // (n - 1)
            else:  # every token came in one batch (a short answer): the time until the reply
                decode = end - first
            out.update(
                done_reason=s.finish_reason,
                total_duration=end - t0,
                load_duration=t_start - t0,
                prompt_eval_count=g.prompt_tokens,
                prompt_eval_duration=first - t_start,
                eval_count=n,
                eval_duration=decode,
            )
        return out

    async def timed():
        async for deltas in g:
            seen()
            yield deltas

    if not body.stream:

        async def whole():
            try:
                await run_or_abort(request, _Drain(timed()))
            finally:
                ticket.settle(g, "ollama")
            s = g.samples[0]
            return line(s.content.strip() if think else s.content, s.reasoning, True)

        return whole()

    async def lines():
        try:
            async for deltas in timed():
                for d in deltas:
                    if d.reasoning or d.content:
                        yield json.dumps(line(d.content, d.reasoning, False)) + "\n"
            yield json.dumps(line("", "", True)) + "\n"
        except APIError as e:  # the engine failed mid-stream: an error line, as Ollama's
            yield json.dumps({"error": e.message}) + "\n"
        finally:
            ticket.settle(g, "ollama")

    # the background settle is for a stream that never started (see openai_api.respond)
    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        background=BackgroundTask(ticket.settle, g, "ollama"),
    )


class _Drain:
    """An async iterable with the `run()` that run_or_abort awaits."""

    def __init__(self, it) -> None:
        self.it = it

    async def run(self) -> None:
        async for _ in self.it:
            pass


@router.post("/api/chat")
async def chat(request: Request):
    request.state.t0 = time.perf_counter_ns()
    state = request.app.state
    state.auth.check(request)
    body: ChatRequest = await read_json(request, ChatRequest)
    _check_model(state, body.model)
    _reject_unsupported(body, body.messages)
    if not body.messages:  # Ollama loads the model and answers done for an empty chat
        return {
            "model": body.model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "load",
        }
    msgs = [{"role": m.role, "content": m.content} for m in body.messages]
    out = await _run(request, state, body, msgs, None, "message")
    return out if body.stream else await out


@router.post("/api/generate")
async def generate(request: Request):
    request.state.t0 = time.perf_counter_ns()
    state = request.app.state
    state.auth.check(request)
    body: GenerateRequest = await read_json(request, GenerateRequest)
    _check_model(state, body.model)
    _reject_unsupported(body)
    if not body.prompt:
        return {
            "model": body.model,
            "created_at": _now(),
            "response": "",
            "done": True,
            "done_reason": "load",
        }
    if body.raw:
        out = await _run(request, state, body, None, body.prompt, "response")
    else:
        msgs = ([{"role": "system", "content": body.system}] if body.system else []) + [
            {"role": "user", "content": body.prompt}
        ]
        out = await _run(request, state, body, msgs, None, "response")
    return out if body.stream else await out


def _details(state) -> dict:
    d = state.gen.describe()
    n, fam = d["parameters"], d["family"]
    size = f"{n / 1e9:.1f}B" if n >= 1e8 else f"{n / 1e6:.1f}M"
    return {
        "parent_model": "",
        "format": d["format"],
        "family": fam,
        "families": [fam],
        "parameter_size": size,
        "quantization_level": d["quantization_level"],
    }


@router.get("/api/tags")
async def tags(request: Request):
    state = request.app.state
    state.auth.check(request)
    size = state.gen.describe()["size"]
    name = state.gen.name if ":" in state.gen.name else state.gen.name + ":latest"
    ts = datetime.fromtimestamp(state.created, timezone.utc).isoformat()
    return {
        "models": [
            {
                "name": name,
                "model": name,
                "modified_at": ts,
                "size": size,
                "digest": state.digest,
                "details": _details(state),
            }
        ]
    }


@router.post("/api/show")
async def show(request: Request):
    state = request.app.state
    state.auth.check(request)
    body: ShowRequest = await read_json(request, ShowRequest)
    name = body.model or body.name
    if not name:
        raise bad_request("model is required", "model")
    _check_model(state, name)
    # no server paths: config entries such as `_name_or_path` name where the weights live
    info = {
        k: v
        for k, v in state.gen.describe()["model_info"].items()
        if "path" not in k and not (isinstance(v, str) and ("/" in v or "\\" in v))
    }
    return {
        "modelfile": f"FROM {state.gen.name}\n",
        "parameters": "temperature 0.6\ntop_p 0.95",
        "template": getattr(state.gen.tok, "chat_template", "") or "",
        "details": _details(state),
        "model_info": info,
        "capabilities": ["completion", "thinking"],
        "modified_at": datetime.fromtimestamp(state.created, timezone.utc).isoformat(),
    }


@router.get("/api/version")
async def version():
    return {"version": OLLAMA_VERSION}
