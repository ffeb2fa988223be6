"""The prompt templates, THE reasoning/answer parser (DESIGN.md section 3) and the tokenizer's
chat template."""

from __future__ import annotations

import random

import pytest

from r1kit.chat import (
    ASSISTANT,
    BOS,
    EOS,
    MARKUP_TOKENS,
    MATH_INSTRUCTION,
    PAD,
    SPECIAL_TOKENS,
    USER,
    build_prompt,
    chat_prompt,
    extract_answer,
    last_boxed,
    parse_completion,
    r1zero_prompt,
    split_reasoning,
)

# --------------------------------------------------------------------------- split_reasoning


@pytest.mark.parametrize(
    "text, expected",
    [
        # a leading <think> is dropped, both sides stripped
        ("<think>reason</think>answer", ("reason", "answer")),
        ("  <think>\n  reason here \n</think>\n\n  the answer  ", ("reason here", "the answer")),
        # the R1-Zero completion continues after the prompt's <think>, so it has none
        (" 2 + 2 = 4. </think> <answer> 4 </answer>", ("2 + 2 = 4.", "<answer> 4 </answer>")),
        # no </think>: everything is reasoning, the answer is None
        ("just thinking", ("just thinking", None)),
        ("<think> still thinking ", ("still thinking", None)),
        ("", ("", None)),
        ("<think>", ("", None)),
        # split at the FIRST </think>
        ("a </think> b </think> c", ("a", "b </think> c")),
        # a closed but empty answer is "", not None
        ("reason </think>   ", ("reason", "")),
        ("</think>answer", ("", "answer")),
        # only a LEADING <think> is dropped
        ("x <think> y </think> z", ("x <think> y", "z")),
    ],
)
def test_split_reasoning(text, expected):
    assert split_reasoning(text) == expected


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize(
    "content, expected",
    [
        ("<answer> 42 </answer>", "42"),
        ("<answer>\n-7\n</answer>", "-7"),
        ("The answer is <answer>(8 - 6) * 11</answer>.", "(8 - 6) * 11"),
        ("<answer>\\frac{1}{2}</answer>", "\\frac{1}{2}"),
        ("The answer is 42.", None),
        ("<answer> 42", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_answer_r1zero(content, expected):
    assert extract_answer(content, "r1zero") == expected
    if content is not None and "<answer>" not in content:
        assert extract_answer(content) is None  # r1zero is the default


@pytest.mark.parametrize(
    "content, expected",
    [
        ("So the answer is \\boxed{42}.", "42"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("nested \\boxed{\\frac{\\sqrt{2}}{2}} done", "\\frac{\\sqrt{2}}{2}"),
        ("\\boxed{ {a}{b} }", "{a}{b}"),
        # the LAST boxed wins
        ("first \\boxed{1}, then \\boxed{2}", "2"),
        # an unbalanced last box falls back to the earlier complete one
        ("\\boxed{3} and \\boxed{4", "3"),
        ("\\boxed{4", None),
        ("no box here: 42", None),
        # <answer> tags mean nothing to the chat template
        ("<answer>5</answer>", None),
        (None, None),
    ],
)
def test_extract_answer_chat(content, expected):
    assert extract_answer(content, "chat") == expected


def test_last_boxed_matches_extract_answer_chat():
    text = "Work... \\boxed{x^{2}+\\frac{1}{2}}"
    assert last_boxed(text) == extract_answer(text, "chat") == "x^{2}+\\frac{1}{2}"


def test_r1zero_prompt():
    p = r1zero_prompt("  Compute 1 + 2.  \n")
    assert p.endswith("<think>")
    assert "User: Compute 1 + 2.\nAssistant:" in p  # question stripped
    assert "<think> </think>" in p and "<answer> </answer>" in p
    assert build_prompt("r1zero", "Compute 1 + 2.") == p
    with pytest.raises(ValueError, match="r1zero"):
        build_prompt("nosuch", "q")


@pytest.mark.parametrize(
    "text, template, expected",
    [
        (
            " 2 + 2 = 4. </think> <answer> 4 </answer>",
            "r1zero",
            {"reasoning": "2 + 2 = 4.", "content": "<answer> 4 </answer>", "answer": "4"},
        ),
        (
            "<think>\nhalf of one</think>\n\nThe answer is \\boxed{\\frac{1}{2}}.",
            "chat",
            {
                "reasoning": "half of one",
                "content": "The answer is \\boxed{\\frac{1}{2}}.",
                "answer": "\\frac{1}{2}",
            },
        ),
        # no </think>: an answer inside the reasoning does not count
        (
            "thinking <answer> 4 </answer>",
            "r1zero",
            {"reasoning": "thinking <answer> 4 </answer>", "content": None, "answer": None},
        ),
        (
            "thinking \\boxed{4}",
            "chat",
            {"reasoning": "thinking \\boxed{4}", "content": None, "answer": None},
        ),
        # closed think, but no answer tags
        (
            "r </think> The answer is 4.",
            "r1zero",
            {"reasoning": "r", "content": "The answer is 4.", "answer": None},
        ),
    ],
)
def test_parse_completion(text, template, expected):
    assert parse_completion(text, template) == expected


# --------------------------------------------------------------------------- tokenizer

MULTILINGUAL = "héllo 日本語 Привет 🙂 <think> 2+2=4 </think>"


@pytest.fixture(scope="module")
def tokenizer():
    from r1kit.pretrain.tokenizer import train_tokenizer

    rng = random.Random(0)
    words = ["compute", "solve", "for", "x", "the", "answer", "is", "wait", "check", "try"]
    texts = []
    for _ in range(200):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        texts.append(f"{rng.choice(words)} {a} + {b} = {a + b}. {' '.join(rng.sample(words, 3))}")
    return train_tokenizer(texts, vocab_size=300)


@pytest.fixture(scope="module")
def reloaded(tokenizer, tmp_path_factory):
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("tok")
    tokenizer.save_pretrained(d)
    return AutoTokenizer.from_pretrained(d)


CONVERSATION = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "<think>\nTwo and two make four.\n</think>\n\nIt is 4."},
    {"role": "user", "content": "And 3+3?"},
]


def _ids(out):
    """apply_chat_template(tokenize=True) returns ids or a BatchEncoding, by version."""
    return list(out["input_ids"]) if hasattr(out, "keys") else list(out)


def test_chat_template_rendering(tokenizer):
    s = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert s.startswith(BOS + USER + "What is 2+2?")
    # earlier assistant turns without their reasoning: only the content after </think>
    assert ASSISTANT + "It is 4." + EOS in s
    assert "Two and two" not in s and "</think>" not in s
    assert s.endswith(USER + "And 3+3?" + ASSISTANT + "<think>\n")
    assert s.count(BOS) == 1

    # an assistant turn without reasoning is kept whole
    plain = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    s2 = tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=False)
    assert s2 == BOS + USER + "hi" + ASSISTANT + "hello" + EOS

    # tokenized: exactly one BOS at the start (the template's, not a second from the processor)
    ids = _ids(
        tokenizer.apply_chat_template(
            CONVERSATION, tokenize=True, add_generation_prompt=True, return_dict=False
        )
    )
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert ids[1] == tokenizer.convert_tokens_to_ids(USER)
    assert ids[-2] == tokenizer.convert_tokens_to_ids("<think>")


def test_chat_prompt(tokenizer):
    p = chat_prompt(tokenizer, "  What is 1/2 + 1/2?  ")
    assert p == BOS + USER + "What is 1/2 + 1/2?\n" + MATH_INSTRUCTION + ASSISTANT + "<think>\n"
    assert build_prompt("chat", "What is 1/2 + 1/2?", tokenizer) == p


def test_special_tokens_are_single_ids(tokenizer, reloaded):
    for tok in (tokenizer, reloaded):
        ids = []
        for t in SPECIAL_TOKENS + MARKUP_TOKENS:
            enc = tok.encode(t, add_special_tokens=False)
            assert len(enc) == 1, (t, enc)
            assert tok.convert_ids_to_tokens(enc[0]) == t
            ids.append(enc[0])
        assert len(set(ids)) == len(ids)
        # also inside running text
        enc = tok.encode("x<think>y</think>z", add_special_tokens=False)
        assert tok.convert_tokens_to_ids("<think>") in enc
        assert tok.convert_tokens_to_ids("</think>") in enc
        assert tok.bos_token == BOS and tok.eos_token == EOS and tok.pad_token == PAD
    assert reloaded.convert_tokens_to_ids(USER) == tokenizer.convert_tokens_to_ids(USER)


def test_skip_special_tokens_keeps_markup(tokenizer, reloaded):
    for tok in (tokenizer, reloaded):
        ids = tok.encode("<think> a </think> <answer> b </answer>" + EOS)
        assert ids[0] == tok.bos_token_id  # encode adds BOS
        assert ids[-1] == tok.eos_token_id
        text = tok.decode(ids, skip_special_tokens=True)
        assert text == "<think> a </think> <answer> b </answer>"
        assert tok.decode(ids, skip_special_tokens=False).startswith(BOS)
        # the role markers are control tokens too
        chat = _ids(
            tok.apply_chat_template(
                CONVERSATION, tokenize=True, add_generation_prompt=True, return_dict=False
            )
        )
        assert tok.decode(chat, skip_special_tokens=True) == "What is 2+2?It is 4.And 3+3?<think>\n"


def test_roundtrip_multilingual(tokenizer, reloaded):
    for tok in (tokenizer, reloaded):
        ids = tok.encode(MULTILINGUAL, add_special_tokens=False)
        assert tok.decode(ids) == MULTILINGUAL
        with_bos = tok.encode(MULTILINGUAL)
        assert with_bos == [tok.bos_token_id] + ids
        assert tok.decode(with_bos, skip_special_tokens=True) == MULTILINGUAL
        # digits stay one token each (Qwen2 pre-tokenizer)
        digits = tok.encode("12345", add_special_tokens=False)
        assert len(digits) == 5
    assert reloaded.encode(MULTILINGUAL) == tokenizer.encode(MULTILINGUAL)


def test_reload_keeps_chat_template(tokenizer, reloaded):
    a = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    b = reloaded.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert a == b
    assert len(reloaded) == len(tokenizer)
