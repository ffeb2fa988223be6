"""SFT data: rows from a chat JSONL file, a hub dataset, or worked traces of the procedural
tasks, rendered into (prompt ids, completion ids) by the prompt template.

Row formats (one JSON object per line):
  {"messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": A}, ...]}
  {"prompt" | "question" | "problem": Q, "completion" | "response": A}
The loss is on the last assistant turn only; earlier turns are context. A is written the way
the model should produce it: `<think>reasoning</think>` then the answer part. With the r1zero
template the prompt is R1_ZERO_TEMPLATE (it ends in `<think>`); with the chat template it is
the tokenizer's chat template over the earlier messages with the generation prompt (ending in
`<｜Assistant｜><think>\\n`), so the leading `<think>` of A is the prompt's, not the model's.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1kit.chat import THINK_OPEN, build_prompt
from r1kit.data.datasets import jsonl_objects, task_names, task_spec
from r1kit.data.tasks import TASKS, stream, zh
from r1kit.errors import R1kitError

PROMPT_KEYS = ("prompt", "question", "problem")
COMPLETION_KEYS = ("completion", "response")
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


def trace_rows(spec: str, n: int, seed: int) -> list[Conversation]:
    """n readable cold-start examples: careful (and some self-correcting) worked traces of the
    tasks' train split, in the R1-Zero answer format (the role of R1's cold-start data)."""
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
        msgs = [{"role": "user", "content": ex["question"]},
                {"role": "assistant", "content": r1zero_completion(reasoning, answer)}]  # fmt: skip
        rows.append(Conversation(msgs, f"{TRACES}{spec}#{i}"))
    return rows


def _conversation(row: dict[str, Any], where: str) -> Conversation:
    msgs = row.get("messages")
    if isinstance(msgs, list):
        if not msgs or not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in msgs
        ):
            raise R1kitError(f"{where}: messages must be a list of {{role, content}} objects")
        if msgs[-1]["role"] != "assistant":
            raise R1kitError(f"{where}: the last message must be the assistant's (it is trained)")
        if not any(m["role"] == "user" for m in msgs):
            raise R1kitError(f"{where}: no user message")
        return Conversation(
            [{"role": m["role"], "content": str(m["content"])} for m in msgs], where
        )
    q = next((row[k] for k in PROMPT_KEYS if isinstance(row.get(k), str)), None)
    a = next((row[k] for k in COMPLETION_KEYS if isinstance(row.get(k), str)), None)
    if q is None or a is None:
        raise R1kitError(
            f"{where}: needs 'messages', or a prompt ({'/'.join(PROMPT_KEYS)}) and a completion "
            f"({'/'.join(COMPLETION_KEYS)})"
        )
    return Conversation(
        [{"role": "user", "content": q}, {"role": "assistant", "content": a}], where
    )


def load_conversations(spec: str, split: str = "train", limit: int = 0, seed: int = 0) -> list:
    """Conversations from `traces:TASKS`, a .jsonl file, or a hub dataset id; several sources
    joined by ',' are concatenated (R1's second SFT mixes sampled reasoning with other data),
    `limit` applying to each."""
    if "," in spec:
        return [
            c
            for part in spec.split(",")
            for c in load_conversations(part.strip(), split, limit, seed)
        ]
    if spec.startswith(TRACES):
        return trace_rows(spec[len(TRACES) :], limit or 2000, seed)
    if spec.endswith(".jsonl") or Path(spec).exists():
        rows = jsonl_objects(spec, "SFT data file")
    else:
        rows = _hub_rows(spec, split)
    rows = rows[:limit] if limit else rows
    return [_conversation(r, w) for r, w in rows]


def _hub_rows(name: str, split: str) -> list[tuple[dict, str]]:
    if name.count("/") != 1:
        raise R1kitError(f"SFT data not found: {name} (a .jsonl file, traces:TASKS or a hub id)")
    try:
        import datasets

        ds = datasets.load_dataset(name, split=split)
    except Exception as err:  # offline, unknown id, bad split: one line
        msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise R1kitError(f"cannot load hub dataset {name!r} (split {split!r}): {msg}") from None
    return [(dict(r), f"{name}[{split}]#{i}") for i, r in enumerate(ds)]


def encode(conv: Conversation, tokenizer: Any, template: str) -> Encoded:
    """Prompt ids (no loss) and completion ids (loss), the completion ending in EOS."""
    *context, last = conv.messages
    if template == "chat":
        prompt = tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True)
    else:
        user = [m["content"] for m in context if m["role"] == "user"][-1]
        prompt = build_prompt("r1zero", user)
    text = last["content"]
    if prompt.rstrip().endswith(THINK_OPEN) and text.lstrip().startswith(THINK_OPEN):
        text = text.lstrip()[len(THINK_OPEN) :]  # the prompt already opened the think block
        if template == "chat":
            text = text.lstrip()
    p_ids = tokenizer(prompt, add_special_tokens=template != "chat").input_ids
    c_ids = tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    return Encoded(p_ids, c_ids)


def batches(n: int, batch_size: int, seed: int, epoch: int) -> Iterator[list[int]]:
    """Index batches of one epoch, shuffled from (seed, epoch): a resumed run sees the same."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    it = iter(order)
    while chunk := list(itertools.islice(it, batch_size)):
        yield chunk
