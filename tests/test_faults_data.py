"""Data that can never crash or silently corrupt a run (issue 18): an over-long question is
dropped at load instead of crashing the step that draws it; null/empty gold answers and
repeated held-out questions are dropped with a warning naming file:line; a file that is not
UTF-8 or not JSON is a one-line file:line error; a dataset changed before --resume is refused
unless --allow-data-change; SFT examples over the length limit are dropped from their batch and
counted. Real runs of the embedded model, tiny settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from r1kit.cli import main
from r1kit.config import SFTConfig, ZeroConfig
from r1kit.data.datasets import heldout, read_jsonl
from r1kit.data.fit import PromptFit
from r1kit.errors import R1kitError
from r1kit.rl.zero import run_zero
from r1kit.sampling.rollout import prompt
from r1kit.sft.data import HubConversations, load_conversations
from r1kit.sft.train import run_sft

pytestmark = pytest.mark.usefixtures("one_thread")

LONG = "What is 1 + 1? " + "Consider the following carefully. " * 300  # ~2,000 tokens


def write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def one_line(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.startswith("r1kit: error")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_prompt_length_is_the_rollouts(tiny_tokenizer):
    """The check counts the tokens the engine would be given, in both prompt formats."""
    questions = ["What is 2 + 3?", "  Solve 3x = 9.  ", LONG]
    for template in ("r1zero", "chat"):
        fit = PromptFit(tiny_tokenizer, template, 1024, 8)
        expect = [len(prompt(tiny_tokenizer, q, template)[1]) for q in questions]
        assert fit.lengths(questions) == expect
    assert fit.lengths(questions)[2] > 1024  # the long one really is over the context
    with pytest.raises(R1kitError, match="--max-tokens 1024 leaves no room"):
        PromptFit(tiny_tokenizer, "r1zero", 1024, 1024)


def test_overlong_question_is_dropped_and_a_changed_dataset_is_refused_on_resume(tmp_path, capfd):
    """One 2,000-token question among six (context 1,024): the run draws the whole epoch and
    trains; the log counts the drop. Then the data changes: --resume refuses it in one line,
    and goes on with --allow-data-change."""
    rows = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(5)]
    data = write(
        tmp_path / "train.jsonl", rows[:2] + [{"question": LONG, "answer": "2"}] + rows[2:]
    )
    evals = write(tmp_path / "eval.jsonl", [{"question": "What is 7 + 8?", "answer": "15"}] * 2)
    out = tmp_path / "run"
    cfg = ZeroConfig.of(
        dataset=str(data),
        eval_data=str(evals),
        out=str(out),
        steps=2,
        prompts_per_step=3,  # two steps draw every problem of the epoch
        group_size=2,
        eval_problems=2,
        eval_k=1,
        max_tokens=8,
        save_every=1,
    )
    summary = run_zero(cfg, progress=False)
    err = capfd.readouterr().err
    assert summary["steps"] == 2
    # the file's train split (split_of: hash-selected) holds the long question
    drop = re.search(r"dropped 1 of (\d+) training problems longer than the context \(1024", err)
    assert drop and f"8 kept for --max-tokens): {data}:3" in err
    # the eval file's repeated row counts once
    assert summary["eval_problems"] == 1 and f"{evals}:2" in err
    recorded = json.loads((out / "data.json").read_text())
    assert recorded["heldout"]["problems"] == 1 and len(recorded["train"]["sha256"]) == 64

    with data.open("a") as f:  # the dataset is edited before the resume
        f.write(json.dumps({"question": "What is 9 + 9?", "answer": "18"}) + "\n")
    assert main(["zero", "--resume", str(out), "--quiet"]) == 2
    line = one_line(capfd.readouterr().err)
    assert "the training data" in line and "changed" in line and "--allow-data-change" in line
    assert json.loads((out / "data.json").read_text()) == recorded  # nothing overwritten

    assert main(["zero", "--resume", str(out), "--quiet", "--allow-data-change"]) == 0
    assert "continuing on changed data" in capfd.readouterr().err
    assert json.loads((out / "data.json").read_text())["train"] != recorded["train"]
    # the flag is not carried over: the next change is refused again
    with data.open("a") as f:
        f.write(json.dumps({"question": "What is 4 + 9?", "answer": "13"}) + "\n")
    assert main(["zero", "--resume", str(out), "--quiet"]) == 2
    assert "changed" in one_line(capfd.readouterr().err)


def test_null_and_empty_answers_are_dropped_naming_the_line(tmp_path, capsys):
    rows = [
        {"question": "What is 1 + 1?", "answer": "2"},
        {"question": "What is 2 + 2?", "answer": None},
        {"question": "What is 3 + 3?", "answer": "  "},
        {"question": "What is 4 + 4?", "answer": 8},
        # graded by other rewards than accuracy, or by tests: no gold answer needed
        {"question": "Write a poem.", "answer": "", "rewards": ["reward_model", "format"]},
        {"question": "Write f.", "answer": None, "tests": ["assert f() == 1"]},
    ]
    path = write(tmp_path / "a.jsonl", rows)
    got = read_jsonl(path)
    assert [r["answer"] for r in got] == ["2", "8", "", ""]
    assert all(r["answer"] != "None" for r in got)  # null is never the string "None"
    err = capsys.readouterr().err
    assert f"dropped 2 row(s) of {path} with a null or empty answer: {path}:2, {path}:3" in err
    every = write(tmp_path / "none.jsonl", [{"question": "q", "answer": None}] * 2)
    with pytest.raises(R1kitError, match=r"every answer is null or empty .*none.jsonl:1"):
        read_jsonl(every)


def test_repeated_heldout_questions_count_once(tmp_path, capsys):
    q = [{"question": f"What is {i} * 3?", "answer": str(3 * i)} for i in range(4)]
    path = write(tmp_path / "eval.jsonl", [q[0], q[1], q[0], q[2], q[1], q[3]])
    got = heldout("arith", 10, eval_file=str(path))
    assert [r["question"] for r in got] == [r["question"] for r in q]
    err = capsys.readouterr().err
    assert "2 held-out row(s) repeat an earlier question" in err
    assert f"{path}:3, {path}:5" in err
    assert len(heldout("arith", 3, eval_file=str(path))) == 3  # 3 distinct, not 3 rows


@pytest.mark.parametrize(
    "line, what",
    [
        (b'{"question": "caf\xe9", "answer": "1"}', "not valid UTF-8 (byte 0xe9 at column 18)"),
        (b'{"question": "q", "answer": ', "not valid JSON"),
    ],
)
@pytest.mark.parametrize("job", ["zero", "sft"])
def test_bad_bytes_are_one_line_naming_file_line(tmp_path, capsys, line, what, job):
    good = json.dumps({"question": "What is 1 + 2?", "answer": "3"}).encode()
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join([good, good, line, good]) + b"\n")
    args = ["--data", str(path)]
    if job == "zero":  # held-out problems from elsewhere: the training file is checked itself
        evals = write(tmp_path / "eval.jsonl", [{"question": "What is 2 + 2?", "answer": "4"}])
        args = ["--dataset", str(path), "--eval-data", str(evals)]
    assert main([job, *args, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    msg = one_line(capsys.readouterr().err)
    assert f"{path}:3: {what}" in msg
    assert not (tmp_path / "o").exists()  # a failed start leaves no directory


def test_sft_drops_overlong_examples_from_their_batch_and_checks_its_data(tmp_path, capfd):
    """An example over --max-len is dropped when its batch is drawn and counted (the file is
    read lazily); the data's hash is recorded and a changed file refused on --resume."""
    rows = [{"prompt": f"What is {i} + 1?", "completion": f"It is {i + 1}."} for i in range(7)]
    rows.insert(4, {"prompt": LONG, "completion": "2"})
    data = write(tmp_path / "sft.jsonl", rows)
    out = tmp_path / "sft"
    cfg = SFTConfig.of(
        data=str(data),
        out=str(out),
        max_len=256,
        batch_size=4,
        micro_batch=4,
        epochs=2,
        eval_problems=0,
        save_every=1,
    )
    s = run_sft(cfg, progress=False)
    assert s["steps"] == 4 and s["examples"] == 7 and s["dropped_too_long"] == 1
    rows_logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # drawn once an epoch: dropped once in each
    assert [r["dropped_too_long"] for r in rows_logged].count(1) == 2
    assert sum(r["tokens"] for r in rows_logged if r["epoch"] == 0) == s["tokens_per_epoch"]
    recorded = json.loads((out / "data.json").read_text())["train"]
    assert recorded["examples"] == 8 and recorded["source"] == str(data)
    capfd.readouterr()
    write(data, rows[:-1])
    assert main(["sft", "--resume", str(out), "--quiet"]) == 2
    line = one_line(capfd.readouterr().err)
    assert "the training data" in line and "--allow-data-change" in line


def test_hub_split_stays_in_arrow_and_reads_like_a_file(tmp_path):
    """A hub split is checked row by row at load, then converted when a row is asked for; it
    gives the same conversations as the same rows in a .jsonl file."""
    import datasets  # heavy: imported by this test only

    rows = [{"prompt": f"What is {i} + 1?", "completion": f"It is {i + 1}."} for i in range(5)]
    table = datasets.Dataset.from_list(rows)
    hub = HubConversations(table, "org/set[train]", limit=4)
    file = load_conversations(str(write(tmp_path / "s.jsonl", rows)), limit=4)
    assert len(hub) == len(file) == 4
    assert [c.messages for c in hub] == [c.messages for c in file]
    assert hub[-1].where == "org/set[train]#3"
    assert HubConversations(table, "org/set[train]", limit=4).digest() == hub.digest()
    assert HubConversations(table, "org/set[train]").digest() != hub.digest()
    bad = datasets.Dataset.from_list([rows[0], {"prompt": "q", "completion": None}])
    with pytest.raises(R1kitError, match=r"org/set\[train\]#1: completion must be a string"):
        HubConversations(bad, "org/set[train]")
