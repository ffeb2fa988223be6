"""The web chat's own routes: its config and the signed-in key's conversation list (SQLite)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from r1kit.serve.errors import APIError, read_json

router = APIRouter()


class Conversation(BaseModel):
    title: str = Field("New chat", max_length=200)
    messages: list[dict[str, Any]] = Field(default_factory=list)


@router.get("/web/config")
async def config(request: Request):
    s = request.app.state
    return {"auth": s.auth.enabled, "model": s.gen.name, "context": s.gen.max_model_len}


@router.get("/web/conversations")
async def list_conversations(request: Request):
    s = request.app.state
    return {"data": s.store.conversations(s.auth.check(request))}


@router.post("/web/conversations")
async def create_conversation(request: Request):
    s = request.app.state
    key_id = s.auth.check(request)
    c: Conversation = await read_json(request, Conversation)
    return {"id": s.store.save_conversation(key_id, None, c.title, c.messages)}


@router.get("/web/conversations/{conv_id}")
async def get_conversation(conv_id: str, request: Request):
    s = request.app.state
    c = s.store.conversation(s.auth.check(request), conv_id)
    if c is None:
        raise APIError(404, "no such conversation", code="not_found")
    return c


@router.put("/web/conversations/{conv_id}")
async def save_conversation(conv_id: str, request: Request):
    s = request.app.state
    key_id = s.auth.check(request)
    c: Conversation = await read_json(request, Conversation)
    return {"id": s.store.save_conversation(key_id, conv_id, c.title, c.messages)}


@router.delete("/web/conversations/{conv_id}")
async def delete_conversation(conv_id: str, request: Request):
    s = request.app.state
    if not s.store.delete_conversation(s.auth.check(request), conv_id):
        raise APIError(404, "no such conversation", code="not_found")
    return {"deleted": True}
