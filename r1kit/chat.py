"""Prompt templates and THE parser that splits output into reasoning and answer.

Rewards, evaluation and (later) the server all call `split_reasoning` / `extract_answer`, so
a completion is judged the same way everywhere (DESIGN.md section 3).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"
PAD = "<｜▁pad▁｜>"
SPECIAL_TOKENS = [BOS, EOS, USER, ASSISTANT, PAD]  # control tokens, dropped by skip_special_tokens
MARKUP_TOKENS = [THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE]  # kept in decoded text

# R1-Zero template (R1 paper, Table 1): plain text for base models; generation starts in <think>.
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The Assistant first thinks inside "
    "<think> </think>, then gives the final answer inside <answer> </answer>.\n"
    "User: {question}\nAssistant: <think>"
)

# DeepSeek usage advice for math with chat/distilled models.
MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# DeepSeek-R1 style chat template (Jinja, for tokenizer_config.json). Earlier assistant turns are
# rendered without their reasoning; the generation prompt opens the think block.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}<｜User｜>{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] | trim %}{% endif %}"
    "<｜Assistant｜>{{ content }}<｜end▁of▁sentence｜>"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}"
)

TEMPLATES = ("r1zero", "chat")


def r1zero_prompt(question: str) -> str:
    """The R1-Zero prompt for a base model; the completion continues after `<think>`."""
    return R1_ZERO_TEMPLATE.format(question=question.strip())


def chat_prompt(tokenizer: Any, question: str) -> str:
    """A chat/distilled model prompt: no system prompt, R1's step-by-step instruction."""
    messages = [{"role": "user", "content": f"{question.strip()}\n{MATH_INSTRUCTION}"}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def build_prompt(template: str, question: str, tokenizer: Any = None) -> str:
    if template == "r1zero":
        return r1zero_prompt(question)
    if template == "chat":
        return chat_prompt(tokenizer, question)
    raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")


def split_reasoning(text: str) -> tuple[str, str | None]:
    """Split generated text into (reasoning, answer) as DESIGN.md section 3 says.

    Drop a leading `<think>`; without `</think>` everything is reasoning and the answer is None;
    otherwise split at the first `</think>`. Both sides are stripped.
    """
    body = text.lstrip()
    if body.startswith(THINK_OPEN):
        body = body[len(THINK_OPEN) :]
    head, sep, tail = body.partition(THINK_CLOSE)
    if not sep:
        return head.strip(), None
    return head.strip(), tail.strip()


_ANSWER_RE = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.S)


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (braces balanced), or None."""
    start = text.rfind("\\boxed")
    while start != -1:
        i = text.find("{", start)
        if i == -1:
            return None
        depth = 0
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j].strip()
        start = text.rfind("\\boxed", 0, start)
    return None


def extract_answer(content: str | None, template: str = "r1zero") -> str | None:
    """The final answer inside the answer part: `<answer>..</answer>` (r1zero) or `\\boxed{}` (chat)."""
    if content is None:
        return None
    if template == "chat":
        return last_boxed(content)
    m = _ANSWER_RE.search(content)
    return m.group(1).strip() if m else None


def parse_completion(text: str, template: str = "r1zero") -> dict[str, str | None]:
    """reasoning, content (after </think>) and the extracted final answer of one completion."""
    reasoning, content = split_reasoning(text)
    return {"reasoning": reasoning, "content": content, "answer": extract_answer(content, template)}


def render_messages(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


class ReasoningStream:
    """`split_reasoning` done incrementally, for streaming (DESIGN.md section 3).

    `feed(text)` returns the new (reasoning, answer) pieces that are certain; `close()` returns
    the rest. A tag cut across two chunks is held back until it is whole, so a partial `<think>`
    or `</think>` is never emitted, and whitespace that may turn out to be trailing is held until
    non-space text follows. The pieces joined equal `split_reasoning` of the whole text, and
    `answer_started` tells a None answer (no `</think>`) from an empty one.
    """

    def __init__(self) -> None:
        self._buf = ""
        self._state = "start"  # start -> reasoning -> answer
        self._pending = {"reasoning": "", "answer": ""}  # held whitespace per part
        self._emitted = {"reasoning": False, "answer": False}
        self.answer_started = False

    def feed(self, text: str) -> tuple[str, str]:
        self._buf += text
        out = {"reasoning": "", "answer": ""}
        if self._state == "start":
            body = self._buf.lstrip()
            if not body or (THINK_OPEN.startswith(body) and body != THINK_OPEN):
                return "", ""  # maybe the start of <think>: wait
            self._buf = body[len(THINK_OPEN) :] if body.startswith(THINK_OPEN) else body
            self._state = "reasoning"
        if self._state == "reasoning":
            i = self._buf.find(THINK_CLOSE)
            if i >= 0:
                self._put(out, "reasoning", self._buf[:i])
                self._buf = self._buf[i + len(THINK_CLOSE) :]
                self._state = "answer"
                self.answer_started = True
            else:
                keep = _partial_suffix(self._buf, THINK_CLOSE)
                self._put(out, "reasoning", self._buf[: len(self._buf) - keep])
                self._buf = self._buf[len(self._buf) - keep :]
        if self._state == "answer":
            self._put(out, "answer", self._buf)
            self._buf = ""
        return out["reasoning"], out["answer"]

    def _put(self, out: dict, part: str, text: str) -> None:
        if not text:
            return
        text = self._pending[part] + text
        if not self._emitted[part]:
            text = text.lstrip()
        stripped = text.rstrip()
        self._pending[part] = text[len(stripped) :]
        if stripped:
            out[part] += stripped
            self._emitted[part] = True

    def close(self) -> tuple[str, str]:
        """Flush what was held back: the tail of a tag that never completed is plain text."""
        if self._state == "start":
            body = self._buf.lstrip()
            self._buf = body[len(THINK_OPEN) :] if body.startswith(THINK_OPEN) else body
            self._state = "reasoning"
        out = {"reasoning": "", "answer": ""}
        part = "answer" if self._state == "answer" else "reasoning"
        self._put(out, part, self._buf)
        self._buf = ""
        return out["reasoning"], out["answer"]


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0
