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

# The R1-Zero template above as a Jinja chat template, so a model trained on it carries it in its
# tokenizer (DESIGN.md section 3) and every consumer renders it the same way. The marker comment
# says which format this is (`template_of`). A system message goes after the preamble; an earlier
# assistant turn is rendered without its reasoning (its content as sent: with its answer tags).
R1ZERO_MARKER = "r1kit:r1zero"
R1ZERO_CHAT_TEMPLATE = (
    "{#- " + R1ZERO_MARKER + ": the R1-Zero plain-text prompt (R1 paper, Table 1) -#}"
    "{{ bos_token or '' }}" + R1_ZERO_TEMPLATE.split("User:")[0] + "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] | trim }}\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] | trim }}\n"
    "{% elif message['role'] == 'assistant' %}"
    "{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "Assistant: <think> </think> {{ content | trim }}\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant: <think>{% endif %}"
)

TEMPLATES = ("r1zero", "chat")


def r1zero_prompt(question: str) -> str:
    """The R1-Zero prompt for a base model; the completion continues after `<think>`."""
    return R1_ZERO_TEMPLATE.format(question=question.strip())


def user_message(question: str) -> str:
    """The R1 protocol's only message for a chat model: the problem, then the step-by-step
    instruction. Chat-format training data (cold-start traces, rejection samples, distilled
    traces) asks its questions the same way, so a model sees at inference what it learned on."""
    return f"{question.strip()}\n{MATH_INSTRUCTION}"


def chat_prompt(tokenizer: Any, question: str) -> str:
    """A chat/distilled model prompt: no system prompt, R1's step-by-step instruction."""
    messages = [{"role": "user", "content": user_message(question)}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def build_prompt(template: str, question: str, tokenizer: Any = None) -> str:
    if template == "r1zero":
        return r1zero_prompt(question)
    if template == "chat":
        return chat_prompt(tokenizer, question)
    raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")


def template_of(tokenizer: Any) -> str:
    """The prompt format a model was trained with, read from its tokenizer: "r1zero" for r1kit's
    R1-Zero chat template or a tokenizer without any chat template (a base model), else "chat"."""
    tpl = getattr(tokenizer, "chat_template", None)
    if isinstance(tpl, dict):  # several named templates: the default one speaks for the model
        tpl = tpl.get("default")
    if not tpl or R1ZERO_MARKER in tpl:
        return "r1zero"
    return "chat"


def resolve_template(tokenizer: Any, template: str | None) -> str:
    """`template` as asked ("r1zero" | "chat"), or the model's own when None or "auto"."""
    if template in (None, "auto"):
        return template_of(tokenizer)
    if template not in TEMPLATES:
        raise ValueError(
            f"unknown template {template!r}; choose one of auto, {', '.join(TEMPLATES)}"
        )
    return template


def set_template(tokenizer: Any, template: str) -> None:
    """Make `template` the tokenizer's chat template, so the model saved with it carries it.

    r1zero: r1kit's R1-Zero Jinja template. chat: the tokenizer's own chat template when it has
    one that is not the R1-Zero one (an instruct model's), else the DeepSeek-R1 template."""
    if template == "r1zero":
        tokenizer.chat_template = R1ZERO_CHAT_TEMPLATE
    elif template == "chat":
        if template_of(tokenizer) == "r1zero":
            tokenizer.chat_template = CHAT_TEMPLATE
    else:
        raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a rendered prompt, with the start-of-sequence token the tokenizer puts before
    plain text exactly once, whether the text came from a chat template that writes it
    (`{{ bos_token }}`) or from a plain string (the R1-Zero prompt, `/v1/completions`): every
    path that turns text into a prompt calls this, so they all see the same ids."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return _with_bos(ids, _auto_bos(tokenizer))


def encode_prompt_batch(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """`encode_prompt` of many texts in one call of a Hugging Face tokenizer (a fast one
    tokenizes the batch in parallel)."""
    bos = _auto_bos(tokenizer)
    # verbose=False: a prompt longer than the model (what a length check looks for) is no warning
    batch = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    return [_with_bos(list(ids), bos) for ids in batch]


def _with_bos(ids: list[int], bos: int | None) -> list[int]:
    """`ids` starting with `bos` exactly once (unchanged when bos is None)."""
    if bos is not None and (not ids or ids[0] != bos):
        ids.insert(0, bos)
    return ids


def _auto_bos(tokenizer: Any) -> int | None:
    """The BOS id the tokenizer adds on its own to plain text, or None when it adds none."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    try:
        probe = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    except TypeError:  # a tokenizer without the flag adds nothing of its own
        return None
    return bos if probe and probe[0] == bos else None


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


# ```python ... ``` (or ```py, or a bare ```); an unclosed last fence runs to the end
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)


def code_in(content: str | None, template: str = "r1zero") -> str | None:
    """The program in an answer part (the text after `</think>`; None: there is none): the last
    fenced Python block, else for the R1-Zero template the text inside `<answer>...</answer>`."""
    if content is None:
        return None
    blocks = _FENCE.findall(content)
    if blocks:
        return blocks[-1]
    if template == "r1zero":
        inner = extract_answer(content, "r1zero")
        return inner or None
    return None


def parse_completion(text: str, template: str = "r1zero") -> dict[str, str | None]:
    """reasoning, content (after </think>) and the extracted final answer of one completion."""
    reasoning, content = split_reasoning(text)
    return {"reasoning": reasoning, "content": content, "answer": extract_answer(content, template)}


R1ZERO_THINK = "Assistant: " + THINK_OPEN  # how the R1-Zero generation prompt ends


def render_chat(tokenizer: Any, messages: Sequence[Mapping[str, Any]], think: bool = True) -> str:
    """A chat as the prompt for the next assistant turn, in the tokenizer's chat template:
    earlier reasoning stripped, generation prompt added; with think off, the think block is
    opened and closed empty so the model answers directly (R1-Zero: `<think> </think>`)."""
    msgs = []
    for m in messages:
        content = m.get("content") or ""
        if m.get("role") == "assistant" and THINK_CLOSE in content:
            content = split_reasoning(content)[1] or ""
        msgs.append({"role": m["role"], "content": content})
    prompt = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    if not think and prompt.endswith(R1ZERO_THINK):
        return prompt + " " + THINK_CLOSE
    if not think:
        prompt = prompt + ("" if prompt.endswith("\n") else "\n") + THINK_CLOSE + "\n\n"
        if THINK_OPEN not in prompt[-40:]:
            prompt = prompt[: -len(THINK_CLOSE) - 2]  # the template does not think
    return prompt


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


class AnswerTagStream:
    """The answer part of an R1-Zero completion without its `<answer>` tags, incrementally.

    For a model in the R1-Zero format the API's `content` is the text inside `<answer>` and
    `</answer>` (DESIGN.md section 3 keeps the reasoning apart; this keeps the tags out). Fed the
    answer part as it streams (after `</think>`): a leading `<answer>` is dropped, the text up to
    `</answer>` goes out, and what follows the closing tag is dropped. An answer part that does
    not open with the tag goes out as it is. As in `ReasoningStream`, a tag cut across chunks
    is held back until it is whole, and surrounding whitespace is stripped.
    """

    def __init__(self) -> None:
        self._buf = ""
        self._state = "pre"  # pre -> inside | raw -> post
        self._pending = ""  # whitespace held until non-space text follows
        self._emitted = False

    def feed(self, text: str) -> str:
        self._buf += text
        if self._state == "pre":
            body = self._buf.lstrip()
            if not body or (ANSWER_OPEN.startswith(body) and body != ANSWER_OPEN):
                return ""  # maybe the start of <answer>: wait
            if body.startswith(ANSWER_OPEN):
                self._buf, self._state = body[len(ANSWER_OPEN) :], "inside"
            else:
                self._buf, self._state = body, "raw"
        if self._state == "raw":
            out, self._buf = self._buf, ""
            return self._put(out)
        if self._state == "inside":
            i = self._buf.find(ANSWER_CLOSE)
            if i >= 0:
                out = self._put(self._buf[:i])
                self._buf, self._state, self._pending = "", "post", ""
                return out
            keep = _partial_suffix(self._buf, ANSWER_CLOSE)
            out = self._buf[: len(self._buf) - keep]
            self._buf = self._buf[len(self._buf) - keep :]
            return self._put(out)
        self._buf = ""  # post: text after </answer> is not part of the answer
        return ""

    @property
    def done(self) -> bool:
        """The answer closed: what the model writes after `</answer>` is not part of it."""
        return self._state == "post"

    def close(self) -> str:
        """Flush what was held back: an unfinished tag is plain text."""
        if self._state == "post":
            return ""
        out, self._buf = self._buf.lstrip() if self._state == "pre" else self._buf, ""
        return self._put(out)

    def _put(self, text: str) -> str:
        if not text:
            return ""
        text = self._pending + text
        if not self._emitted:
            text = text.lstrip()
        stripped = text.rstrip()
        self._pending = text[len(stripped) :]
        if stripped:
            self._emitted = True
        return stripped


def answer_content(content: str | None) -> str | None:
    """`AnswerTagStream` over a whole answer part: the R1-Zero answer without its tags."""
    if content is None:
        return None
    s = AnswerTagStream()
    return s.feed(content) + s.close()
