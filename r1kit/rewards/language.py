"""Language consistency (DeepSeek-R1, section 2.3.3): the share of the chain-of-thought's words
that are in the target language.

A "word" is a run of letters (any script); numbers, operators, punctuation and lone ASCII
letters (math variables: `3x = 6`) are neutral and are not counted, so `37 + 48 = 85.` neither
helps nor hurts. A word is in the target language when it is written in that language's script
(Latin for en/fr/de/..., Han for zh, Cyrillic for ru, ...); with a lexicon (a set of lower-case
words, e.g. from `load_lexicon(path)`), Latin-script words must also be in it, which separates
English from French. R1 does not say how it identified languages; script is the signal that
catches the mixing it reports (Chinese inside English reasoning and the reverse). A CJK character
counts as one word, as CJK text has no spaces.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from r1kit.chat import split_reasoning
from r1kit.rewards.base import register

# target language -> the scripts its words are written in
SCRIPTS: dict[str, frozenset[str]] = {
    **{lang: frozenset({"LATIN"}) for lang in ("en", "fr", "de", "es", "it", "pt", "nl", "vi")},
    "zh": frozenset({"CJK"}),
    "ja": frozenset({"CJK", "HIRAGANA", "KATAKANA"}),
    "ko": frozenset({"HANGUL", "CJK"}),
    "ru": frozenset({"CYRILLIC"}),
    "uk": frozenset({"CYRILLIC"}),
    "ar": frozenset({"ARABIC"}),
    "el": frozenset({"GREEK"}),
    "hi": frozenset({"DEVANAGARI"}),
}
_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)  # letters only, any script


@lru_cache(maxsize=4096)
def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    if name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL")):
        return name.split()[0] if not name.startswith("CJK") else "CJK"
    return name.split(" ")[0] if name else "UNKNOWN"


def words(text: str) -> list[str]:
    """The words language is judged on: letter runs, each CJK/kana/hangul character on its own.
    A lone ASCII letter is a math variable (`3x = 6`, `x = 2`), neutral like the numbers."""
    out: list[str] = []
    for w in _WORD.findall(text):
        pieces = _CJK_CHAR.split(w)
        out.extend(p for p in pieces if p and not (len(p) == 1 and p.isascii()))
        out.extend(_CJK_CHAR.findall(w))
    return out


def word_script(word: str) -> str:
    """The script most of a word's letters are written in ('LATIN', 'CJK', 'CYRILLIC', ...)."""
    counts: dict[str, int] = {}
    for ch in word:
        s = _script(ch)
        counts[s] = counts.get(s, 0) + 1
    return max(counts, key=counts.get)


def load_lexicon(path: str | Path) -> frozenset[str]:
    """One word per line (case-insensitive); blank lines and '#' comments ignored."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return frozenset(w.strip().lower() for w in lines if w.strip() and not w.startswith("#"))


def consistency(text: str, language: str = "en", lexicon: frozenset[str] | None = None) -> float:
    """Share of `text`'s words in `language`; 1.0 when it has no words (nothing is mixed)."""
    scripts = SCRIPTS.get(language)
    if scripts is None:
        raise ValueError(f"unknown language {language!r}; known: {', '.join(sorted(SCRIPTS))}")
    ws = words(text)
    if not ws:
        return 1.0
    ok = 0
    for w in ws:
        s = word_script(w)
        if s in scripts and (lexicon is None or s != "LATIN" or w.lower() in lexicon):
            ok += 1
    return ok / len(ws)


@register("language")
def language_consistency(completion: str, example: Mapping[str, Any]) -> float:
    """R1's language-consistency reward on the reasoning (the text before `</think>`); the target
    language is the example's "language" field, English by default."""
    reasoning, _ = split_reasoning(completion)
    return consistency(reasoning, example.get("language", "en"))
