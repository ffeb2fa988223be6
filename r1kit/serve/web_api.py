"""The web chat's own routes: its config, the signed-in key, and that key's conversations
(SQLite).

These routes are not model requests: they take a valid key (`Auth.owner`), never its quota or
requests-per-minute, and record no usage. So a key whose quota is spent still signs in, reads,
renames and deletes its history; only a new answer (`/v1/chat/completions`) is refused (402).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from r1kit.serve.errors import APIError, read_json

router = APIRouter()


class Conversation(BaseModel):
    title: str = Field("New chat", max_length=200)
    messages: list[dict[str, Any]] = Field(default_factory=list)


class Rename(BaseModel):
    title: str = Field(min_length=1, max_length=200)


@router.get("/web/config")
async def config(request: Request):
    s = request.app.state
    return {"auth": s.auth.enabled, "model": s.gen.name, "context": s.gen.max_model_len}


@router.get("/web/me")
async def me(request: Request):
    """Sign-in check: 401 for a bad key; what is left of the key's quota or credit (the page
    says so when it is spent: history still works, new answers do not)."""
    s = request.app.state
    out = {
        "id": s.auth.owner(request),
        "quota_tokens": None,
        "tokens_used": 0,
        "credit": None,
        "spent": 0.0,
        "currency": "USD",
        "exhausted": False,
    }
    if s.auth.enabled:
        k = s.auth.identify(request)
        left, money = k.tokens_left(), k.money_left()
        out.update(
            quota_tokens=k.quota_tokens,
            tokens_used=k.used_tokens,
            credit=k.credit,
            spent=round(k.spent, 6),
            currency=k.currency,
            exhausted=(left is not None and left <= 0) or (money is not None and money <= 0),
        )
    return out


@router.get("/web/conversations")
async def list_conversations(request: Request):
    s = request.app.state
    return {"data": s.store.conversations(s.auth.owner(request))}


@router.post("/web/conversations")
async def create_conversation(request: Request):
    s = request.app.state
    key_id = s.auth.owner(request)
    c: Conversation = await read_json(request, Conversation)
    return {"id": s.store.save_conversation(key_id, None, c.title, c.messages)}


@router.get("/web/conversations/{conv_id}")
async def get_conversation(conv_id: str, request: Request):
    s = request.app.state
    c = s.store.conversation(s.auth.owner(request), conv_id)
    if c is None:
        raise APIError(404, "no such conversation", code="not_found")
    return c


@router.put("/web/conversations/{conv_id}")
async def save_conversation(conv_id: str, request: Request):
    s = request.app.state
    key_id = s.auth.owner(request)
    c: Conversation = await read_json(request, Conversation)
    return {"id": s.store.save_conversation(key_id, conv_id, c.title, c.messages)}


@router.patch("/web/conversations/{conv_id}")
async def rename_conversation(conv_id: str, request: Request):
    s = request.app.state
    key_id = s.auth.owner(request)
    r: Rename = await read_json(request, Rename)
    if not s.store.rename_conversation(key_id, conv_id, r.title.strip() or "New chat"):
        raise APIError(404, "no such conversation", code="not_found")
    return {"id": conv_id, "title": r.title}


@router.delete("/web/conversations/{conv_id}")
async def delete_conversation(conv_id: str, request: Request):
    s = request.app.state
    if not s.store.delete_conversation(s.auth.owner(request), conv_id):
        raise APIError(404, "no such conversation", code="not_found")
    return {"deleted": True}
