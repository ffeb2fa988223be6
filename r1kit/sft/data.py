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

Large files stream: loading a .jsonl makes one pass over it that checks every row (UTF-8, JSON,
the file's format: `file:line` errors before training starts) and keeps only where each row
starts; a batch's rows are read back, parsed and tokenized when the batch is drawn
(`Examples.take`), so the first step comes after one cheap pass, not after tokenizing the whole
file, and memory does not grow with it. An example longer than the length limit is dropped
from its batch (counted); one that cannot be encoded is dropped with a warning naming its row.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import random
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from r1kit.chat import (
    CHAT_TEMPLATE,
    THINK_OPEN,
    build_prompt,
    encode_prompt,
    template_of,
    user_message,
)
from r1kit.data.datasets import scan_jsonl, task_names, task_spec
from r1kit.data.identity import file_digest, rows_digest
from r1kit.data.notes import warn
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


class JsonlConversations(Sequence):
    """The conversations of a .jsonl file, read back from disk when asked for. Loading makes one
    streaming pass that checks every row (errors name `file:line`) and keeps, per row, where it
    starts and the shape of its conversation; nothing else stays in memory (about 25 bytes a
    row). The file stays open from then on, so a file replaced on disk (an editor's save) is
    still read as it was checked."""

    def __init__(self, path: str, limit: int = 0) -> None:
        self.path, self.fmt = path, ""
        self.offsets = array("q")  # byte offset of each row's line
        self.lines = array("q")  # its line number, for messages
        self.turns = array("l")  # assistant turns of its conversation
        self.plain = bytearray()  # 1: one user turn, then one assistant turn (r1zero's shape)
        for row, n, offset in scan_jsonl(path, "SFT data file"):
            where = f"{path}:{n}"
            self.fmt = self.fmt or detect(row, where)
            shape = _shape(to_messages(row, self.fmt, where))
            self.offsets.append(offset)
            self.lines.append(n)
            self.turns.append(shape[0])
            self.plain.append(shape[1])
            if limit and len(self.offsets) == limit:
                break
        self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 -- held for the run's reads

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> Conversation:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        where = f"{self.path}:{self.lines[i]}"
        self._file.seek(self.offsets[i])
        try:  # checked at load; only a file edited since then fails here
            row = json.loads(self._file.readline().decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise R1kitError(f"{where}: changed since the data loaded") from None
        if not isinstance(row, dict):
            raise R1kitError(f"{where}: changed since the data loaded")
        return Conversation(to_messages(row, self.fmt, where), where)

    def shapes(self) -> Iterator[tuple[int, bool]]:
        return zip(self.turns, map(bool, self.plain))

    def digest(self) -> str:
        return file_digest(self.path)


class HubConversations(Sequence):
    """The conversations of a hub split, left in the `datasets` library's memory-mapped Arrow
    table and converted when asked for. Loading makes one pass that checks every row (errors
    name `NAME[SPLIT]#ROW`) and hashes it; only each row's conversation shape stays in memory."""

    def __init__(self, table: Any, name: str, limit: int = 0) -> None:
        self.table = table.select(range(limit)) if 0 < limit < len(table) else table
        self.name, self.fmt = name, ""
        self.turns, self.plain = array("l"), bytearray()
        h = hashlib.sha256()
        for i, row in enumerate(self.table):
            where = f"{name}#{i}"
            self.fmt = self.fmt or detect(row, where)
            turns, plain = _shape(to_messages(row, self.fmt, where))
            self.turns.append(turns)
            self.plain.append(plain)
            h.update(json.dumps(row, sort_keys=True, default=str).encode() + b"\n")
        self._digest = h.hexdigest()

    def __len__(self) -> int:
        return len(self.turns)

    def __getitem__(self, i: int) -> Conversation:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        where = f"{self.name}#{i}"
        return Conversation(to_messages(dict(self.table[i]), self.fmt, where), where)

    def shapes(self) -> Iterator[tuple[int, bool]]:
        return zip(self.turns, map(bool, self.plain))

    def digest(self) -> str:
        return self._digest


class Joined(Sequence):
    """Several sources' conversations, one after the other (`--data a.jsonl,traces:mix`)."""

    def __init__(self, parts: list[Sequence]) -> None:
        self.parts = parts
        self.ends = list(itertools.accumulate(len(p) for p in parts))

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def __getitem__(self, i: int) -> Conversation:  # type: ignore[override]
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = bisect.bisect_right(self.ends, i)
        return self.parts[k][i - (self.ends[k - 1] if k else 0)]

    def shapes(self) -> Iterator[tuple[int, bool]]:
        return itertools.chain.from_iterable(shapes(p) for p in self.parts)

    def digest(self) -> str:
        return rows_digest(digest(p) for p in self.parts)


def _shape(msgs: list[dict[str, str]]) -> tuple[int, bool]:
    """(assistant turns, whether it is one user turn then one assistant turn)."""
    roles = [m["role"] for m in msgs]
    return roles.count("assistant"), roles == ["user", "assistant"]


def shapes(convs: Sequence) -> Iterator[tuple[int, bool]]:
    """`_shape` of each conversation, without reading a file's rows again."""
    if hasattr(convs, "shapes"):
        return convs.shapes()
    return (_shape(c.messages) for c in convs)


def digest(convs: Sequence) -> str:
    """The content hash of the conversations: a file's bytes, or the rows made in memory."""
    if hasattr(convs, "digest"):
        return convs.digest()
    return rows_digest(c.messages for c in convs)


def load_conversations(
    spec: str, split: str = "train", limit: int = 0, seed: int = 0, template: str = "r1zero"
) -> Sequence:
    """Conversations from `traces:TASKS`, a .jsonl file (read lazily: `JsonlConversations`),
    or a hub dataset id; several sources joined by ',' are concatenated (R1's second SFT mixes
    sampled reasoning with other data), `limit` applying to each."""
    if "," in spec:
        return Joined(
            [
                load_conversations(part.strip(), split, limit, seed, template)
                for part in spec.split(",")
            ]
        )
    if spec.startswith(TRACES):
        return trace_rows(spec[len(TRACES) :], limit or 2000, seed, template)
    if spec.endswith(".jsonl") or Path(spec).exists():
        return JsonlConversations(spec, limit)
    return HubConversations(_hub_table(spec, split), f"{spec}[{split}]", limit)


def _hub_table(name: str, split: str) -> Any:
    """The split as the `datasets` library loads it (an Arrow table on disk, memory-mapped)."""
    if name.count("/") != 1:
        raise R1kitError(f"SFT data not found: {name} (a .jsonl file, traces:TASKS or a hub id)")
    hub_check(name, "dataset")  # unreachable hub: offline at once, not a minute of retries
    try:
        import datasets

        ds = datasets.load_dataset(name, split=split)
    except Exception as err:  # offline, unknown id, bad split: one line
        msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise R1kitError(f"cannot load hub dataset {name!r} (split {split!r}): {msg}") from None
    return ds


def encode(conv: Conversation, tokenizer: Any, template: str) -> Encoded:
    """The last assistant turn as prompt ids (no loss) and completion ids (loss)."""
    return encode_turns(conv, tokenizer, template)[-1]


def check_template(conv: Conversation, template: str) -> None:
    """The r1zero template takes one question and one answer: anything else is an error."""
    roles = [m["role"] for m in conv.messages]
    if template != "chat" and ("system" in roles or roles != ["user", "assistant"]):
        what = "a system message" if "system" in roles else f"{len(roles)} turns"
        raise R1kitError(
            f"{conv.where}: the r1zero template takes one question and one answer; this "
            f"example has {what} (train it with --template chat)"
        )


def encode_turns(conv: Conversation, tokenizer: Any, template: str) -> list[Encoded]:
    """One (prompt ids, completion ids) example per assistant turn, the completion ending in EOS:
    with the chat template the prompt is the conversation before the turn (system messages
    included) as the template renders it at generation time; with r1zero (one question, one
    answer) the R1-Zero prompt."""
    n = sum(m["role"] == "assistant" for m in conv.messages)
    return [encode_turn(conv, tokenizer, template, k) for k in range(n)]


def encode_turn(conv: Conversation, tokenizer: Any, template: str, k: int) -> Encoded:
    """The k-th assistant turn of `conv` as one example (see `encode_turns`)."""
    check_template(conv, template)
    msgs = conv.messages
    i = [j for j, m in enumerate(msgs) if m["role"] == "assistant"][k]
    # a tokenizer that carries the R1-Zero template (a model trained on it) gets the R1 chat one
    chat_tpl = None if template_of(tokenizer) == "chat" else CHAT_TEMPLATE
    if template == "chat":
        prompt = tokenizer.apply_chat_template(
            msgs[:i], tokenize=False, add_generation_prompt=True, chat_template=chat_tpl
        )
    else:
        prompt = build_prompt("r1zero", msgs[0]["content"])
    text = msgs[i]["content"]
    if prompt.rstrip().endswith(THINK_OPEN) and text.lstrip().startswith(THINK_OPEN):
        text = text.lstrip()[len(THINK_OPEN) :]  # the prompt already opened the think block
        if template == "chat":
            text = text.lstrip()
    p_ids = encode_prompt(tokenizer, prompt)
    c_ids = tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    return Encoded(p_ids, c_ids)


class Examples:
    """Every assistant reply of the conversations as one training example, encoded when its
    batch is drawn (`take`). Built in one pass over the conversations' shapes (no file is read
    again): an r1zero-incompatible conversation is an error here, before training starts."""

    def __init__(self, convs: Sequence, tokenizer: Any, template: str, max_len: int) -> None:
        self.convs, self.tokenizer, self.template = convs, tokenizer, template
        self.max_len = max_len  # the most tokens an example may have (prompt + completion)
        self.conv, self.turn = array("q"), array("l")  # per example: its conversation, turn
        for i, (turns, plain) in enumerate(shapes(convs)):
            if template != "chat" and not plain:
                check_template(convs[i], template)  # raises, naming the row
            self.conv.extend([i] * turns)
            self.turn.extend(range(turns))

    def __len__(self) -> int:
        return len(self.conv)

    def take(self, indices: Sequence[int]) -> tuple[list[Encoded], int]:
        """The examples at `indices` that fit `max_len`, and how many did not. An example that
        cannot be encoded (a file edited since loading, a chat template refusing the
        conversation) is dropped with a warning instead of ending the run."""
        out, long = [], 0
        for k in indices:
            where = f"example {k}"
            try:
                conv = self.convs[self.conv[k]]
                where = conv.where
                e = encode_turn(conv, self.tokenizer, self.template, self.turn[k])
            except Exception as err:  # any encoding failure: the row is named, the run goes on
                msg = str(err).splitlines()[0] if str(err) else type(err).__name__
                warn(f"{where}: cannot be encoded ({msg}); dropped from its batch")
                continue
            if len(e.prompt_ids) + len(e.completion_ids) > self.max_len:
                long += 1
            else:
                out.append(e)
        return out, long


def batches(n: int, batch_size: int, seed: int, epoch: int) -> Iterator[list[int]]:
    """Index batches of one epoch, shuffled from (seed, epoch): a resumed run sees the same."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    it = iter(order)
    while chunk := list(itertools.islice(it, batch_size)):
        yield chunk
