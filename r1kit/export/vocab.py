"""A byte-level BPE tokenizer as llama.cpp reads it from a GGUF file.

llama.cpp's "gpt2" tokenizer model takes: the token strings by id (normal tokens in the
byte-to-unicode alphabet, e.g. "Ġlet"; added tokens as their literal text), a type per token
(NORMAL, CONTROL for special added tokens, USER_DEFINED for the others, UNUSED for ids the
embedding has but the tokenizer does not), the merges in rank order as "left right", and a
pre-tokenizer *name* that selects a split regex compiled into llama.cpp. The name is found here by
matching the tokenizer.json regex against the ones llama.cpp implements (its own converter hashes
a tokenization of a test string instead; a regex match is the same decision, stated openly).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from r1kit.errors import R1kitError

# tokenizer.json split regex -> llama.cpp pre-tokenizer name (src/llama-vocab.cpp). Qwen2's is
# also DeepSeek-R1-Distill-Qwen's; Llama 3's is R1-Distill-Llama's.
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS = {QWEN2_REGEX: "qwen2", LLAMA3_REGEX: "llama-bpe"}
GPT2_PRE = "gpt-2"  # a ByteLevel pre-tokenizer with its own (GPT-2) regex and no Split

# gguf.TokenType values (kept as ints so this module imports without gguf)
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass
class GGUFVocab:
    tokens: list[str]  # by id, len == the model's embedding rows
    types: list[int]  # gguf.TokenType per id
    merges: list[str]  # "left right", rank order
    pre: str  # llama.cpp pre-tokenizer name
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    add_bos: bool  # the tokenizer puts BOS in front of encoded text
    add_eos: bool
    chat_template: str | None


def vocab_from_tokenizer(tok: Any, vocab_size: int | None = None) -> GGUFVocab:
    """The GGUF view of a `transformers` fast tokenizer; `vocab_size` pads to the model's
    embedding rows (Qwen2.5 has more rows than tokens) with UNUSED "[PAD{id}]" entries."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise R1kitError("GGUF export needs a fast (tokenizers) tokenizer; this one is slow")
    spec = json.loads(backend.to_str())
    model = spec["model"]
    if model.get("type") != "BPE" or not _is_byte_level(spec):
        kind = model.get("type", "?") + (
            " with byte fallback" if model.get("byte_fallback") else ""
        )
        raise R1kitError(
            f"GGUF export supports byte-level BPE tokenizers (GPT-2 / Qwen2 / Llama 3 style); "
            f"this one is {kind}"
        )
    pre = pre_tokenizer_name(spec.get("pre_tokenizer"))

    added = {int(t["id"]): t for t in spec.get("added_tokens", [])}
    by_id = {int(i): s for s, i in model["vocab"].items()}
    by_id.update({i: t["content"] for i, t in added.items()})
    n = max(vocab_size or 0, max(by_id) + 1)
    tokens, types = [], []
    for i in range(n):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(CONTROL if added[i].get("special") else USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)

    # tokenizers writes merges as "a b" strings (older) or ["a", "b"] pairs (newer)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    probe = "a"
    with_special = list(tok(probe, add_special_tokens=True)["input_ids"])
    plain = list(tok(probe, add_special_tokens=False)["input_ids"])
    bos, eos = tok.bos_token_id, tok.eos_token_id
    add_bos = bos is not None and len(with_special) > len(plain) and with_special[0] == bos
    add_eos = eos is not None and len(with_special) > len(plain) and with_special[-1] == eos
    template = getattr(tok, "chat_template", None)
    if isinstance(template, dict):  # several named templates: llama.cpp takes the default
        template = template.get("default")
    return GGUFVocab(
        tokens, types, merges, pre, bos, eos, tok.pad_token_id, add_bos, add_eos, template or None
    )


def _is_byte_level(spec: dict) -> bool:
    """ByteLevel in the pre-tokenizer or decoder (the byte-to-unicode alphabet)."""
    text = json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")])
    return '"ByteLevel"' in text


def _splits(pre: dict | None) -> list[dict]:
    if not pre:
        return []
    if pre.get("type") == "Sequence":
        return [p for q in pre.get("pretokenizers", []) for p in _splits(q)]
    return [pre]


def pre_tokenizer_name(pre: dict | None) -> str:
    """llama.cpp's name for the tokenizer.json pre-tokenizer, or an error naming those known."""
    parts = _splits(pre)
    regexes = [p["pattern"].get("Regex") for p in parts if p.get("type") == "Split"]
    if len(regexes) == 1 and regexes[0] in PRE_TOKENIZERS:
        return PRE_TOKENIZERS[regexes[0]]
    if not regexes and any(p.get("type") == "ByteLevel" and p.get("use_regex") for p in parts):
        return GPT2_PRE
    known = ", ".join(sorted({*PRE_TOKENIZERS.values(), GPT2_PRE}))
    raise R1kitError(
        f"the tokenizer's pre-tokenizer ({', '.join(map(str, regexes)) or 'none'}) is not one "
        f"llama.cpp implements; supported: {known}"
    )


def write_vocab(writer: Any, v: GGUFVocab) -> None:
    """Add the tokenizer.ggml.* and tokenizer.chat_template keys to a gguf.GGUFWriter."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(v.pre)
    writer.add_token_list(v.tokens)
    writer.add_token_types(v.types)
    writer.add_token_merges(v.merges)
    if v.bos_id is not None:
        writer.add_bos_token_id(v.bos_id)
    if v.eos_id is not None:
        writer.add_eos_token_id(v.eos_id)
    if v.pad_id is not None:
        writer.add_pad_token_id(v.pad_id)
    writer.add_add_bos_token(v.add_bos)
    writer.add_add_eos_token(v.add_eos)
    if v.chat_template:
        writer.add_chat_template(v.chat_template)
