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
