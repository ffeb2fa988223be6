"""SFT data: rows from a chat JSONL file, a hub dataset, or worked traces of the procedural
tasks, rendered into (prompt ids, completion ids) by the prompt template.

Row formats (one JSON object per line, one format per file: r1kit/sft/formats.py): OpenAI
`messages`, ShareGPT `conversations`, Alpaca `instruction`/`input`/`output`, TRL
`prompt`/`completion` (plain or conversational) and `question`/`answer`.
Every assistant turn is trained (loss on its tokens only); the other turns are context. With the
chat template each assistant turn is one example whose prompt is the tokenizer's chat template
over the messages before it with the generation prompt (ending in `<｜Assistant｜><think>\\n`):
the context the model sees when it is served, where earlier turns lose their reasoning. With the
r1zero template the prompt is R1_ZERO_TEMPLATE (it ends in `<think>`), which has no place for a
system message or earlier turns: such an example is an error. A is written the way the model
should produce it: `<think>reasoning</think>` then the answer part; a leading `<think>` of A is
the prompt's, not the model's.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1kit.chat import (
    CHAT_TEMPLATE,
    THINK_OPEN,
    build_prompt,
    encode_prompt,
    template_of,
    user_message,
)
from r1kit.data.datasets import jsonl_objects, task_names, task_spec
from r1kit.data.tasks import TASKS, stream, zh
from r1kit.errors import R1kitError
from r1kit.modeling import hub_check
from r1kit.sft.formats import detect, to_messages

TRACES = "traces:"  # traces:mix, traces:arith+linear -> worked, readable cold-start traces
TRACE_STYLES = {"careful": 0.85, "corrected": 0.15}  # always right; some self-correction


@dataclass
class Conversation:
    messages: list[dict[str, str]]  # user/assistant/system turns; the last is the assistant's
    where: str  # "file:line" for errors


@dataclass
class Encoded:
    prompt_ids: list[int]
    completion_ids: list[int]


def r1zero_completion(reasoning: str, answer: str) -> str:
    """The assistant text of the R1-Zero format, spaced as the pretraining corpus spaces it."""
    return f"{THINK_OPEN} {reasoning.strip()} </think> <answer> {answer.strip()} </answer>"


def chat_completion(reasoning: str, answer: str, language: str | None = None) -> str:
    """The assistant text of the chat format (R1's cold-start data: reasoning in the think block,
    then a readable summary that ends in the boxed answer)."""
    boxed = f"$\\boxed{{{answer.strip()}}}$"
    summary = f"答案是 {boxed}。" if language == "zh" else f"The answer is {boxed}."
    return f"{THINK_OPEN}\n{reasoning.strip()}\n</think>\n\n{summary}"


def trace_rows(spec: str, n: int, seed: int, template: str = "r1zero") -> list[Conversation]:
    """n readable cold-start examples: careful (and some self-correcting) worked traces of the
    tasks' train split (the role of R1's cold-start data), in the answer format of `template`:
    `<answer>` tags for R1-Zero, a summary ending in `\\boxed{}` for the chat format."""
    names = task_names(spec)
    if names is None:
        raise R1kitError(f"unknown tasks in {TRACES}{spec}; known: {', '.join(TASKS)}, mix")
    language = task_spec(spec)[1]  # traces:mix@zh -> Chinese wording (r1kit/data/tasks/zh.py)
    rng = random.Random(seed)
    streams = [stream(TASKS[t], "train", seed * 7919 + 17 + i) for i, t in enumerate(names)]
    styles, weights = list(TRACE_STYLES), list(TRACE_STYLES.values())
    rows = []
    for i in range(n):
        ex = next(rng.choice(streams))
        reasoning, answer = TASKS[ex["task"]].trace(ex, rng, rng.choices(styles, weights)[0])
        if language:
            ex, reasoning = zh.localize(ex, language), zh.reasoning(reasoning, language)
        if template == "chat":  # asked as R1's protocol asks a chat model (chat.user_message)
            question = user_message(ex["question"])
            content = chat_completion(reasoning, answer, language)
        else:
            question, content = ex["question"], r1zero_completion(reasoning, answer)
        msgs = [{"role": "user", "content": question}, {"role": "assistant", "content": content}]
        rows.append(Conversation(msgs, f"{TRACES}{spec}#{i}"))
    return rows


def _conversations(rows: list[tuple[dict[str, Any], str]]) -> list[Conversation]:
    """Rows of one file or hub split, in the format of its first row."""
    if not rows:
        return []
    fmt = detect(*rows[0])
    return [Conversation(to_messages(r, fmt, w), w) for r, w in rows]


def load_conversations(
    spec: str, split: str = "train", limit: int = 0, seed: int = 0, template: str = "r1zero"
) -> list:
    """Conversations from `traces:TASKS`, a .jsonl file, or a hub dataset id; several sources
    joined by ',' are concatenated (R1's second SFT mixes sampled reasoning with other data),
    `limit` applying to each."""
    if "," in spec:
        return [
            c
            for part in spec.split(",")
            for c in load_conversations(part.strip(), split, limit, seed, template)
        ]
    if spec.startswith(TRACES):
        return trace_rows(spec[len(TRACES) :], limit or 2000, seed, template)
    if spec.endswith(".jsonl") or Path(spec).exists():
        rows = jsonl_objects(spec, "SFT data file")
    else:
        rows = _hub_rows(spec, split)
    rows = rows[:limit] if limit else rows
    return _conversations(rows)


def _hub_rows(name: str, split: str) -> list[tuple[dict, str]]:
    if name.count("/") != 1:
        raise R1kitError(f"SFT data not found: {name} (a .jsonl file, traces:TASKS or a hub id)")
    hub_check(name, "dataset")  # unreachable hub: offline at once, not a minute of retries
    try:
        import datasets

        ds = datasets.load_dataset(name, split=split)
    except Exception as err:  # offline, unknown id, bad split: one line
        msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise R1kitError(f"cannot load hub dataset {name!r} (split {split!r}): {msg}") from None
    return [(dict(r), f"{name}[{split}]#{i}") for i, r in enumerate(ds)]


def encode(conv: Conversation, tokenizer: Any, template: str) -> Encoded:
    """The last assistant turn as prompt ids (no loss) and completion ids (loss)."""
    return encode_turns(conv, tokenizer, template)[-1]


def encode_turns(conv: Conversation, tokenizer: Any, template: str) -> list[Encoded]:
    """One (prompt ids, completion ids) example per assistant turn, the completion ending in EOS:
    with the chat template the prompt is the conversation before the turn (system messages
    included) as the template renders it at generation time; with r1zero (one question, one
    answer) the R1-Zero prompt."""
    msgs = conv.messages
    if template != "chat":
        roles = [m["role"] for m in msgs]
        if "system" in roles or roles != ["user", "assistant"]:
            what = "a system message" if "system" in roles else f"{len(roles)} turns"
            raise R1kitError(
                f"{conv.where}: the r1zero template takes one question and one answer; this "
                f"example has {what} (train it with --template chat)"
            )
    # a tokenizer that carries the R1-Zero template (a model trained on it) gets the R1 chat one
    chat_tpl = None if template_of(tokenizer) == "chat" else CHAT_TEMPLATE
    out = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        if template == "chat":
            prompt = tokenizer.apply_chat_template(
                msgs[:i], tokenize=False, add_generation_prompt=True, chat_template=chat_tpl
            )
        else:
            prompt = build_prompt("r1zero", msgs[0]["content"])
        text = m["content"]
        if prompt.rstrip().endswith(THINK_OPEN) and text.lstrip().startswith(THINK_OPEN):
            text = text.lstrip()[len(THINK_OPEN) :]  # the prompt already opened the think block
            if template == "chat":
                text = text.lstrip()
        p_ids = encode_prompt(tokenizer, prompt)
        c_ids = tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        out.append(Encoded(p_ids, c_ids))
    return out


def batches(n: int, batch_size: int, seed: int, epoch: int) -> Iterator[list[int]]:
    """Index batches of one epoch, shuffled from (seed, epoch): a resumed run sees the same."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    it = iter(order)
    while chunk := list(itertools.islice(it, batch_size)):
        yield chunk
