"""One sample's text as it streams: incremental detokenizing (never half a UTF-8 character),
stop strings (cut there; held back while they may still be forming) and the reasoning/answer
split by `r1kit.chat.ReasoningStream`, which never emits a partial tag."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from r1kit.chat import THINK_CLOSE, THINK_OPEN, AnswerTagStream, ReasoningStream


@dataclass
class Delta:
    index: int
    reasoning: str = ""
    content: str = ""


@dataclass
class SampleText:
    """One sample's tokens, its text so far and what of it went out as reasoning / answer."""

    tok: Any
    think: bool | None  # True: split reasoning; False: answer only; None: raw text
    stop: tuple[str, ...]
    answer_tags: bool = False  # an R1-Zero model: the answer is what it writes inside <answer>
    stop_at_answer: bool = True  # with answer_tags: `</answer>` ends the sample (a stop)
    ids: list[int] = field(default_factory=list)
    text: str = ""  # decoded so far (cut at a stop string)
    fed: int = 0  # chars of `text` handed to the splitter
    finish_reason: str | None = None
    _p: int = 0  # incremental detokenizing: ids[_p:_r] is the last decoded window
    _r: int = 0

    def __post_init__(self) -> None:
        self.split = ReasoningStream()
        self.tags = AnswerTagStream() if self.answer_tags else None
        self.reasoning, self.content = "", ""

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, ids: list[int], finish: str | None) -> Delta | None:
        if self.finish_reason is not None:  # already cut at a stop string
            return None
        self.ids += ids
        prefix = self._decode(self.ids[self._p : self._r])
        new = self._decode(self.ids[self._p :])
        if len(new) > len(prefix) and (finish or not new.endswith("\ufffd")):
            self.text += new[len(prefix) :]
            self._p, self._r = self._r, len(self.ids)
        safe = len(self.text)
        for s in self.stop:
            i = self.text.find(s, max(0, self.fed - len(s) + 1))
            if i >= 0 and i < safe:
                safe, finish = i, "stop"
        if finish == "stop" and safe < len(self.text):
            self.text = self.text[:safe]
        elif not finish:
            safe -= max((_held(self.text, s) for s in self.stop), default=0)
        self.finish_reason = finish
        r, c = self._feed(self.text[self.fed : safe])
        self.fed = safe
        if not finish and self.stop_at_answer and self.tags is not None and self.tags.done:
            finish = self.finish_reason = "stop"  # the R1-Zero answer is complete
        if finish:
            r2, c2 = self.split.close() if self.think else ("", "")
            r, c = r + r2, c + self._tag(c2)
            if self.tags is not None and self.think is not None:
                c += self.tags.close()
        self.reasoning += r
        self.content += c
        return Delta(0, r, c) if r or c or finish else None

    def _feed(self, text: str) -> tuple[str, str]:
        if self.think is None:  # raw text (/v1/completions)
            return "", text
        if not self.think:
            return "", self._tag(text.lstrip() if not self.content else text)
        r, c = self.split.feed(text)
        return r, self._tag(c)

    def _tag(self, content: str) -> str:
        if self.tags is None or self.think is None or not content:
            return content
        return self.tags.feed(content)

    @property
    def answer(self) -> str | None:
        """The answer (None when the reasoning never closed), as `split_reasoning` gives it."""
        if not self.think:
            return self.content if self.think is None else self.content.strip()
        return self.content if self.split.answer_started else None

    def reasoning_tokens(self, close_id: int | None) -> int:
        if not self.think:
            return 0
        if close_id is not None and close_id in self.ids:
            return self.ids.index(close_id) + 1
        if close_id is None and self.split.answer_started:
            return len(self.tok.encode(THINK_OPEN + self.reasoning + THINK_CLOSE))
        return len(self.ids)


def _held(text: str, stop: str) -> int:
    """Chars at the end of `text` that may be the start of `stop`."""
    for k in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:k]):
            return k
    return 0
