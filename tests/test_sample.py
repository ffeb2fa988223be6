"""`r1kit sample`: rejection sampling with the engine, readability filters, dedup, stats."""

from __future__ import annotations

import json

import pytest

from r1kit.cli import main
from r1kit.sampling.filters import Limits, failures

pytestmark = pytest.mark.usefixtures("one_thread")
EX = {"question": "Compute 2 + 3.", "answer": "5", "task": "arith", "template": "r1zero"}
CLEAN = " 2 + 3 = 5. </think> <answer> 5 </answer>"


@pytest.mark.parametrize(
    "text, finish, expect",
    [
        (CLEAN, "stop", []),
        (" 2 + 3 = 5. So it is 5.", "stop", ["no_final_answer"]),
        (" 2 + 3 = 5. 5 + 0 = 5. 5 + 0 = 5.", "length", ["no_final_answer", "over_length"]),
        (" </think> <answer> 5 </answer>", "stop", ["empty_reasoning"]),
        (" 我们 计算 2 + 3 = 5. </think> <answer> 5 </answer>", "stop", ["language_mixing"]),
        (" so 2 + 3 = 5" * 4 + " </think> <answer> 5 </answer>", "stop", ["repetition"]),
        (" " + " ".join(f"a{i}" for i in range(30)) + " </think> <answer> 5 </answer>", "stop",
         ["long_paragraph"]),
        (" ```\n" + "".join(f"x{i} = {i}\n" for i in range(8)) + "```\n </think> <answer> 5 </answer>", "stop",
         ["long_code_block"]),
    ],
)  # fmt: skip
def test_each_filter(text, finish, expect):
    lim = Limits(max_paragraph_words=25, max_code_lines=5)
    assert failures(text, EX, finish, lim) == expect


def test_sample_keeps_only_verified_readable_distinct(tmp_path, capsys):
    out = tmp_path / "s"
    args = [
        "sample",
        "--prompts",
        "24",
        "--k",
        "4",
        "--out",
        str(out),
        "--max-new-tokens",
        "64",
        "--keep-per-prompt",
        "2",
        "--temperature",
        "1.0",
    ]
    assert main(args) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["samples"] == stats["prompts"] * 4
    assert stats["kept"] + sum(stats["removed_first"].values()) == stats["samples"]
    assert stats["removed_first"]["incorrect"] > 0 and stats["kept"] > 0
    kept = [json.loads(x) for x in (out / "sft.jsonl").read_text().splitlines()]
    assert len(kept) == stats["kept"]
    from r1kit.rewards.rules import accuracy

    per_q: dict[str, list[str]] = {}
    for row in kept:
        ex = {k: v for k, v in row.items() if k not in ("messages", "completion", "tokens")}
        assert accuracy(row["completion"], ex) == 1.0
        assert failures(row["completion"], ex) == []
        assert row["messages"][1]["content"].startswith("<think>")
        per_q.setdefault(row["question"], []).append(" ".join(row["completion"].split()))
    assert all(len(v) == len(set(v)) <= 2 for v in per_q.values())
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) + len(kept) == stats["samples"]
    assert "kept" in capsys.readouterr().out
    assert main(["sample", "--k", "0", "--out", str(out)]) == 2
