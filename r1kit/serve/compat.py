"""What DeepSeek/OpenAI clients send that r1kit maps or refuses: DeepSeek's model names and
`thinking` switch, and the parameters it does not implement (a 400 naming each, never a
silent ignore: LangChain's `with_structured_output` would return None)."""

from __future__ import annotations

from typing import Any

from r1kit.serve.errors import APIError

# DeepSeek's names for the served model: the reasoner thinks, the chat model answers directly
DEEPSEEK_MODELS = {"deepseek-reasoner": True, "deepseek-chat": False}


def unsupported(param: str, why: str = "is not supported by this server") -> APIError:
    return APIError(400, f"{param} {why}", param, "unsupported_parameter")


def _set(v: Any) -> bool:
    """A value that asks for something: not None, False, 0, "" or an empty list/dict."""
    return v not in (None, False, 0, 0.0, "", [], {})


def reject_unsupported(extra: dict[str, Any], chat: bool) -> None:
    """Raise 400 for the first parameter in `extra` (the fields the request model does not
    declare) that asks for a feature r1kit does not implement."""
    for name in ("tools", "functions", "audio", "prediction", "web_search_options"):
        if _set(extra.get(name)):
            raise unsupported(name)
    for name in ("tool_choice", "function_call"):
        if _set(extra.get(name)) and extra[name] not in ("none", "auto"):
            raise unsupported(name)
    rf = extra.get("response_format")
    if _set(rf) and not (isinstance(rf, dict) and rf.get("type") == "text"):
        raise unsupported("response_format", "is not supported: only {'type': 'text'}")
    for name in ("logprobs", "top_logprobs"):
        if _set(extra.get(name)):
            raise unsupported(name, "is not supported for a reasoning model")
    for name in ("presence_penalty", "frequency_penalty"):
        if _set(extra.get(name)):
            raise unsupported(name, "is not supported (only 0)")
    if extra.get("repetition_penalty") not in (None, 1, 1.0):
        raise unsupported("repetition_penalty", "is not supported (only 1)")
    if _set(extra.get("logit_bias")):
        raise unsupported("logit_bias")
    mods = extra.get("modalities")
    if _set(mods) and list(mods) != ["text"]:
        raise unsupported("modalities", "is not supported: only ['text']")
    if not chat:
        if _set(extra.get("suffix")):
            raise unsupported("suffix")
        if _set(extra.get("echo")):
            raise unsupported("echo")
        if extra.get("best_of") not in (None, 1):
            raise unsupported("best_of", "is not supported (only 1)")


def reject_parts(messages: list) -> None:
    """Content parts other than text (images, audio, files) are refused, naming the part."""
    for i, m in enumerate(messages):
        if isinstance(m.content, list):
            for j, part in enumerate(m.content):
                kind = part.get("type", "text") if isinstance(part, dict) else "?"
                if kind != "text":
                    raise unsupported(
                        f"messages[{i}].content[{j}]",
                        f"is a {kind!r} part; this model reads text only",
                    )


def thinking_of(thinking: Any) -> bool | None:
    """DeepSeek's `thinking: {"type": "enabled" | "disabled"}` as True / False (None: absent)."""
    if thinking is None:
        return None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind not in ("enabled", "disabled"):
        raise APIError(
            400,
            "thinking must be {'type': 'enabled'} or {'type': 'disabled'}",
            "thinking",
            "invalid_request_error",
        )
    return kind == "enabled"
