"""SFT data formats (r1kit/sft/formats.py): OpenAI messages, ShareGPT, Alpaca, TRL
prompt/completion (plain and conversational) and question/answer files read into the same
conversations; one format per file with one-line errors; every assistant turn trained, in the
context the chat template gives it, and nothing else; R1-Zero refuses what it cannot render."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1kit.cli import main
from r1kit.errors import R1kitError
from r1kit.sft.data import encode_turns, load_conversations
from r1kit.sft.train import collate

Q, A = "Compute 2 + 3.", "<think> 2 + 3 = 5. </think> <answer> 5 </answer>"
SINGLE = [{"role": "user", "content": Q}, {"role": "assistant", "content": A}]
SYSTEM = "You are a careful calculator."
MULTI = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Compute 2 + 3."},
    {"role": "assistant", "content": "<think>\n2 + 3 = 5.\n</think>\n\nThe sum is 5."},
    {"role": "user", "content": "And times 4?"},
    {"role": "assistant", "content": "<think>\n5 * 4 = 20.\n</think>\n\nIt is 20."},
]


def _write(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize(
    "row",
    [
        {"messages": SINGLE},
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": Q}]},
                {"role": "assistant", "content": A},
            ]
        },
        {"conversations": [{"from": "human", "value": Q}, {"from": "gpt", "value": A}]},
        {"instruction": Q, "input": "", "output": A},
        {"prompt": Q, "completion": A},
        {"prompt": [SINGLE[0]], "completion": [SINGLE[1]]},
        {"question": Q, "answer": A},
        {"problem": Q, "response": A},
    ],
    ids=["openai", "openai-parts", "sharegpt", "alpaca", "trl", "trl-conv", "qa", "problem"],
)
def test_every_format_reads_to_the_same_conversation(tmp_path, row):
    path = _write(tmp_path / "d.jsonl", [row, row])
    convs = load_conversations(path)
    assert [c.messages for c in convs] == [SINGLE, SINGLE]
    assert convs[1].where == f"{path}:2"


def test_multi_turn_formats_keep_system_and_turns(tmp_path):
    roles = {"system": "system", "user": "human", "assistant": "gpt"}
    share = [{"from": roles[m["role"]], "value": m["content"]} for m in MULTI]
    alpaca = {"instruction": "Add these.", "input": "2 and 3", "output": "5"}
    trl = {"prompt": MULTI[:4], "completion": MULTI[4:]}
    assert (
        load_conversations(_write(tmp_path / "s.jsonl", [{"conversations": share}]))[0].messages
        == MULTI
    )
    assert load_conversations(_write(tmp_path / "t.jsonl", [trl]))[0].messages == MULTI
    (c,) = load_conversations(_write(tmp_path / "a.jsonl", [alpaca]))
    assert c.messages == [
        {"role": "user", "content": "Add these.\n\n2 and 3"},
        {"role": "assistant", "content": "5"},
    ]


@pytest.mark.parametrize(
    "rows, expect",
    [
        ([{"text": "hello", "label": 1}], ":1: not an SFT row (fields: label, text)"),
        (
            [{"messages": SINGLE}, {"prompt": Q, "completion": A}],
            ":2: not in this file's format messages (detected from its first row); "
            "fields: completion, prompt",
        ),
        ([{"conversations": [{"from": "bard", "value": Q}]}], "ShareGPT speaker 'bard'"),
        ([{"messages": [{"role": "tool", "content": "x"}]}], "message role 'tool'"),
        ([{"messages": SINGLE[:1]}], "the last message must be the assistant's"),
        ([{"question": Q, "answer": 5}], "answer must be a string, got int"),
    ],
)
def test_bad_rows_are_one_line_errors(tmp_path, rows, expect):
    path = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(R1kitError) as err:
        load_conversations(path)
    msg = str(err.value)
    assert expect in msg and "\n" not in msg and msg.startswith(path)


def _trained_text(tok, e) -> str:
    """The text of the tokens that carry loss, read back through the collated mask."""
    b = collate([e], tok.pad_token_id)
    targets = b.input_ids[0, 1:][b.completion_mask[0] == 1]
    return tok.decode(targets.tolist())


def test_chat_trains_every_assistant_turn_and_nothing_else(tmp_path, tiny_tokenizer):
    tok = tiny_tokenizer
    (conv,) = load_conversations(_write(tmp_path / "m.jsonl", [{"messages": MULTI}]))
    ex = encode_turns(conv, tok, "chat")
    assert len(ex) == 2  # one example per assistant turn
    eos = tok.eos_token
    assert _trained_text(tok, ex[0]) == "2 + 3 = 5.\n</think>\n\nThe sum is 5." + eos
    assert _trained_text(tok, ex[1]) == "5 * 4 = 20.\n</think>\n\nIt is 20." + eos
    p0, p1 = tok.decode(ex[0].prompt_ids), tok.decode(ex[1].prompt_ids)
    assert SYSTEM in p0 and p0.endswith("<｜User｜>Compute 2 + 3.<｜Assistant｜><think>\n")
    # the second turn's context: system, the first exchange as served (reasoning dropped)
    assert p1.endswith(
        "<｜User｜>Compute 2 + 3.<｜Assistant｜>The sum is 5.<｜end▁of▁sentence｜>"
        "<｜User｜>And times 4?<｜Assistant｜><think>\n"
    )
    assert SYSTEM in p1 and "2 + 3 = 5." not in p1
    for e in ex:  # no user or system text carries loss
        trained = _trained_text(tok, e)
        assert SYSTEM not in trained and "Compute" not in trained and "times 4" not in trained
        assert collate([e], tok.pad_token_id).completion_mask.sum() == len(e.completion_ids)


@pytest.mark.parametrize(
    "messages, what",
    [(MULTI, "a system message"), (MULTI[1:], "4 turns")],
)
def test_r1zero_refuses_system_and_multi_turn(tmp_path, tiny_tokenizer, messages, what):
    (conv,) = load_conversations(_write(tmp_path / "m.jsonl", [{"messages": messages}]))
    with pytest.raises(R1kitError, match=f"m.jsonl:1: the r1zero template .* has {what}"):
        encode_turns(conv, tiny_tokenizer, "r1zero")
    (single,) = load_conversations(_write(tmp_path / "s.jsonl", [{"messages": SINGLE}]))
    (e,) = encode_turns(single, tiny_tokenizer, "r1zero")
    assert _trained_text(tiny_tokenizer, e).strip().startswith("2 + 3 = 5.")


def test_cli_names_the_line_and_fields(tmp_path, capsys):
    path = _write(tmp_path / "d.jsonl", [{"messages": SINGLE}, {"input": "x", "output": "y"}])
    rc = main(["sft", "--data", path, "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert err.count("\n") == 0 and f"{path}:2:" in err and "fields: input, output" in err
