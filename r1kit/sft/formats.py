"""SFT row formats: the data people have, turned into one list of chat messages per row.

A file (or hub split) is in ONE format, detected from its first row; every row must then be in
it, and a row that is not gets a one-line error naming its file:line and the fields it has.

  messages       OpenAI: {"messages": [{"role": system|developer|user|assistant, "content"}]}
                 (content: a string or a list of {"type": "text", "text"} parts)
  conversations  ShareGPT: {"conversations": [{"from": system|human|gpt, "value"}]}
  alpaca         {"instruction", "input" (optional, may be ""), "output"}
  prompt/completion  TRL: {"prompt", "completion"}, both strings, or both lists of messages
                 (conversational: the prompt's messages, then the completion's)
  question/answer, and the older prompt|question|problem + completion|response|answer pairs:
                 plain strings, one user turn and one assistant turn

A conversation must end with an assistant turn and hold a user turn.
"""

from __future__ import annotations

from typing import Any

from r1kit.errors import R1kitError

OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}
PROMPT_FIELDS = ("prompt", "question", "problem")
COMPLETION_FIELDS = ("completion", "response", "answer")
EXPECTED = (
    "messages (OpenAI), conversations (ShareGPT from/value), instruction/input/output (Alpaca), "
    "prompt/completion (TRL) or question/answer"
)

Messages = list[dict[str, str]]


def detect(row: dict[str, Any], where: str) -> str:
    """The format name of a row ("messages", "conversations", "alpaca", or "FIELD/FIELD" for a
    prompt/completion pair); a one-line error naming the fields seen when it has none."""
    if isinstance(row.get("messages"), list):
        return "messages"
    if isinstance(row.get("conversations"), list):
        return "conversations"
    if "instruction" in row and "output" in row:
        return "alpaca"
    p = next((k for k in PROMPT_FIELDS if k in row), None)
    c = next((k for k in COMPLETION_FIELDS if k in row), None)
    if p and c:
        return f"{p}/{c}"
    raise R1kitError(f"{where}: not an SFT row (fields: {_fields(row)}); expected {EXPECTED}")


def to_messages(row: dict[str, Any], fmt: str, where: str) -> Messages:
    """The row, in the file's format `fmt` (from `detect` on its first row), as chat messages."""
    if fmt == "messages":
        msgs = row.get("messages")
        if not isinstance(msgs, list):
            raise _not_in(fmt, row, where)
        out = _openai(msgs, where)
    elif fmt == "conversations":
        turns = row.get("conversations")
        if not isinstance(turns, list):
            raise _not_in(fmt, row, where)
        out = _sharegpt(turns, where)
    elif fmt == "alpaca":
        if not ("instruction" in row and "output" in row):
            raise _not_in("instruction/input/output", row, where)
        inst, extra = _text(row["instruction"], where, "instruction"), row.get("input") or ""
        user = inst.strip() + ("\n\n" + _text(extra, where, "input").strip() if extra else "")
        out = [_msg("user", user), _msg("assistant", _text(row["output"], where, "output"))]
    else:
        p, c = fmt.split("/")
        if p not in row or c not in row:
            raise _not_in(fmt, row, where)
        prompt, completion = row[p], row[c]
        if isinstance(prompt, list):  # TRL conversational: the prompt's messages, then the reply
            reply = completion if isinstance(completion, list) else None
            out = _openai(prompt, where) + (
                _openai(reply, where) if reply else [_msg("assistant", _text(completion, where, c))]
            )
        else:
            out = [_msg("user", _text(prompt, where, p))]
            out.append(_msg("assistant", _text(completion, where, c)))
    return _check(out, where)


def _openai(msgs: list, where: str) -> Messages:
    out = []
    for m in msgs:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise R1kitError(f"{where}: each message needs a role and a content, got {m!r:.80}")
        role = OPENAI_ROLES.get(m["role"])
        if role is None:
            raise R1kitError(
                f"{where}: message role {m['role']!r} is not supported "
                f"(roles: {', '.join(OPENAI_ROLES)})"
            )
        out.append(_msg(role, _content(m["content"], where)))
    return out


def _sharegpt(turns: list, where: str) -> Messages:
    out = []
    for t in turns:
        if not isinstance(t, dict) or "from" not in t or "value" not in t:
            raise R1kitError(f"{where}: each ShareGPT turn needs from and value, got {t!r:.80}")
        role = SHAREGPT_ROLES.get(t["from"])
        if role is None:
            raise R1kitError(
                f"{where}: ShareGPT speaker {t['from']!r} is not supported "
                f"(from: {', '.join(SHAREGPT_ROLES)})"
            )
        out.append(_msg(role, _text(t["value"], where, "value")))
    return out


def _content(content: Any, where: str) -> str:
    """An OpenAI message content: a string, or a list of text parts (joined)."""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and "text" in part):
                raise R1kitError(
                    f"{where}: only text content parts can be trained, got {part!r:.80}"
                )
            parts.append(str(part["text"]))
        return "".join(parts)
    return _text(content, where, "content")


def _text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise R1kitError(f"{where}: {field} must be a string, got {type(value).__name__}")
    return value


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _check(msgs: Messages, where: str) -> Messages:
    if not msgs or msgs[-1]["role"] != "assistant":
        raise R1kitError(f"{where}: the last message must be the assistant's (it is trained)")
    if not any(m["role"] == "user" for m in msgs):
        raise R1kitError(f"{where}: no user message")
    return msgs


def _not_in(fmt: str, row: dict[str, Any], where: str) -> R1kitError:
    return R1kitError(
        f"{where}: not in this file's format {fmt} (detected from its first row); "
        f"fields: {_fields(row)}"
    )


def _fields(row: dict[str, Any]) -> str:
    return ", ".join(sorted(map(str, row))) or "none"
