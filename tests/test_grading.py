"""The one grader (`r1kit.grading`): a table of answer pairs graded with identical verdicts by the
accuracy reward (a completion in each prompt format) and by `r1kit eval`'s grading (`run_eval`:
samples -> worker pool -> samples.jsonl), the rule for what is graded in each format, and
`zero`'s held-out pass@1 equal to `r1kit eval`'s on the same samples of the embedded model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from r1kit.config import EvalConfig
from r1kit.eval.backends import Params, Request
from r1kit.eval.run import run_eval
from r1kit.eval.scoring import split_output
from r1kit.grading import as_fraction, compare, extract
from r1kit.rewards.rules import accuracy

pytestmark = pytest.mark.usefixtures("one_thread")

# (answer, gold, correct): what a mathematician would say
TABLE = [
    # fractions and decimals
    (r"\frac{1}{2}", "0.5", True),
    ("0.75", r"\frac{3}{4}", True),
    (r"\dfrac{3}{4}", r"\frac{3}{4}", True),
    (r"\dfrac{2}{3}", "0.67", False),
    ("1/3", "0.333", False),
    (r"\frac{2}{4}", r"\frac{1}{2}", True),
    ("1.50", "1.5", True),
    # intervals
    ("[2, 5)", "[2,5)", True),
    ("(2, 5]", "[2,5)", False),
    ("[2, 5]", "[2,5)", False),
    (r"(-\infty, 3)", r"(-\infty,3)", True),
    (r"(-\infty, 3]", r"(-\infty, 3)", False),
    (r"x \in [2, 5)", "[2,5)", True),
    # sets and unordered lists
    (r"\{1, 2, 3\}", r"\{3,2,1\}", True),
    ("3, 2", "2, 3", True),
    ("7, 5, 3", "3, 5, 7", True),
    (r"\{1,2\}", r"\{1,2,3\}", False),
    ("12", "1, 2", False),
    ("1, 2", "12", False),
    ("357", "3, 5, 7", False),
    # ordered tuples
    ("(1, 2, 3)", "(1,2,3)", True),
    ("(3, 2, 1)", "(1,2,3)", False),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})", True),
    ("(2, 1)", "(1, 2)", False),
    # vectors and matrices
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
    (r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", False),
    (
        r"\begin{pmatrix} \frac{1}{2} \\ -1 \end{pmatrix}",
        r"\begin{pmatrix} 0.5 \\ -1 \end{pmatrix}",
        True,
    ),
    (
        r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
        r"\begin{pmatrix}1&2\\3&4\end{pmatrix}",
        True,
    ),
    (
        r"\begin{pmatrix} 1 & 3 \\ 2 & 4 \end{pmatrix}",
        r"\begin{pmatrix}1&2\\3&4\end{pmatrix}",
        False,
    ),
    # choices
    ("(C)", r"\text{(C)}", True),
    ("C", r"\text{(C)}", True),
    (r"\textbf{(C)}", "C", True),
    ("(B)", r"\text{(C)}", False),
    # text answers
    (r"\text{Monday}", r"\text{Monday}", True),
    ("Monday", r"\text{Monday}", True),
    (r"\text{Tuesday}", r"\text{Monday}", False),
    # units
    (r"5 \text{ cm}", "5", True),
    (r"6\text{ cm}", "5", False),
    (r"\$18.90", r"\$18.90", True),
    (r"\$18.90", "18.9", True),
    # percent
    (r"50\%", "50", True),
    (r"25\%", r"\frac{1}{4}", True),
    (r"40\%", "50", False),
    # degrees
    (r"30^\circ", "30", True),
    (r"30^{\circ}", r"30^\circ", True),
    (r"60^\circ", "30", False),
    # scientific notation
    ("6.02e23", r"6.02 \times 10^{23}", True),
    (r"6.02\times10^{23}", r"6.02 \times 10^{23}", True),
    (r"6.02 \times 10^{23}", "6.02e23", True),
    ("6.02e22", r"6.02 \times 10^{23}", False),
    ("1.5E-3", "0.0015", True),
    # thousands separators
    ("1,000", "1000", True),
    ("12,345,678", "12345678", True),
    ("1,000,000", "10^6", True),
    ("1{,}000", "1000", True),
    ("1,234", "1.234", False),
    # signs
    ("-3", "3", False),
    ("+3", "3", True),
    (r"-\frac{1}{2}", r"\frac{-1}{2}", True),
    (r"-\frac12", r"\frac12", False),
    # radicals in different forms
    (r"2\sqrt{3}", r"\sqrt{12}", True),
    (r"\sqrt{12}", r"2\sqrt{3}", True),
    (r"3\sqrt{2}", r"\sqrt{18}", True),
    (r"\sqrt{12}", r"3\sqrt{2}", False),
    (r"\frac{\sqrt{3}}{3}", r"\frac{1}{\sqrt{3}}", True),
    (r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}", True),
    # other
    ("x^2+2x+1", "(x+1)^2", True),
    ("025", "25", True),
    ("x = 3", "3", True),
    (r"\infty", r"\infty", True),
    (r"\pi", "3.14159", False),
    (r"2\frac{1}{2}", "0.5", False),
]


# whole completions, for what is graded in each format: (template, completion, gold, correct)
FORMAT_CASES = [
    ("r1zero", " 2 + 3 = 5. </think> <answer> 5 </answer>", "5", True),
    ("r1zero", " 2 + 3 = 5. </think> <answer> \\boxed{5} </answer>", "5", True),
    ("r1zero", " half </think> <answer>The answer is $\\frac{1}{2}$.</answer>", "0.5", True),
    ("r1zero", " 2 + 3 = 5. </think> The answer is 5.", "5", False),  # no <answer>
    ("r1zero", " 2 + 3 = 5. <answer> 5 </answer>", "5", False),  # no </think>
    ("r1zero", " 2 + 3 = 5. </think> <answer></answer>", "5", False),
    ("r1zero", " 2 + 3 = 5. </think> \\boxed{5}", "5", False),  # a box is not an <answer>
    ("chat", "2 + 3 = 5.\n</think>\n\nSo \\boxed{5}.", "5", True),
    ("chat", "w\n</think>\nfirst \\boxed{3}, then \\boxed{4}", "4", True),  # the last box
    ("chat", "w\n</think>\nfirst \\boxed{3}, then \\boxed{4}", "3", False),
    ("chat", "w\n</think>\nThe answer is 44.", "44", True),  # no box: the expression found
    ("chat", "w\n</think>\nThe answer is $(2, 3]$.", "(2,3]", True),
    ("chat", "w\n</think>\nThe answer is $(2, 3]$.", "(2,3)", False),
    ("chat", "w\n</think>\nno numbers here", "44", False),
    ("chat", "2 + 3 = 5, so \\boxed{5}", "5", False),  # reasoning never closed: no answer
    ("chat", "w\n</think>\n<answer> 4 </answer>", "4", True),  # no box: the expression found
]


def r1zero(answer: str) -> str:
    """An R1-Zero completion (it continues after the prompt's `<think>`)."""
    return f" I work it out. </think> <answer> {answer} </answer>"


def chat(answer: str) -> str:
    return f"I work it out.\n</think>\n\nThe final answer is $\\boxed{{{answer}}}$."


COMPLETION = {"r1zero": r1zero, "chat": chat}


def test_table_is_big_and_mixed():
    assert len(TABLE) >= 40
    assert {c for _, _, c in TABLE} == {True, False}


@pytest.mark.parametrize("answer, gold, correct", TABLE)
def test_reward_verdicts(answer, gold, correct):
    """The accuracy reward, a completion in each format: the verdict of the table."""
    assert compare(answer, gold).correct is correct
    for template, make in COMPLETION.items():
        ex = {"question": "q", "answer": gold, "template": template}
        assert accuracy(make(answer), ex) == float(correct), template


@pytest.mark.parametrize("template, completion, gold, correct", FORMAT_CASES)
def test_what_is_graded(template, completion, gold, correct):
    ex = {"question": "q", "answer": gold, "template": template}
    assert accuracy(completion, ex) == float(correct)


class Replay:
    """A stand-in model for `run_eval`: it "generates" the given completion texts (problem id ->
    texts), turned into sample records exactly as the local backend turns model output
    (`split_output` after a prompt that opened `<think>`)."""

    kind = "local"
    name = "replay"

    def __init__(self, texts: dict[str, list[str]], template: str) -> None:
        self.texts, self.template = texts, template

    def generate(self, requests: list[Request], params: Params) -> Iterator[list[dict]]:
        for r in requests:
            batch = []
            for j in range(r.start, r.start + r.n):
                reasoning, answer = split_output(self.texts[r.problem["id"]][j], in_think=True)
                batch.append(
                    {
                        "problem_id": r.problem["id"],
                        "sample": j,
                        "prompt": "",
                        "reasoning": reasoning,
                        "answer": answer,
                        "tokens": 1,
                        "prompt_tokens": 1,
                        "finish_reason": "stop",
                    }
                )
            yield batch

    def close(self) -> None:
        pass


def _eval(tmp: Path, rows: list[dict], texts: list[list[str]], template: str) -> tuple[dict, list]:
    """run_eval on `rows` (a --data file) with the samples `texts` (k per row); (summary,
    samples.jsonl rows in problem order)."""
    data = tmp / f"{template}.jsonl"
    data.write_text("".join(json.dumps({**r, "id": str(i)}) + "\n" for i, r in enumerate(rows)))
    cfg = EvalConfig.of(data=str(data), k=len(texts[0]), out=str(tmp / f"out-{template}"), seed=0)
    backend = Replay({str(i): t for i, t in enumerate(texts)}, template)
    summary = run_eval(cfg, progress=False, backend=backend)
    samples = [json.loads(x) for x in (tmp / f"out-{template}" / "samples.jsonl").open()]
    return summary, sorted(samples, key=lambda s: (int(s["problem_id"]), s["sample"]))


@pytest.mark.parametrize("template", ["r1zero", "chat"])
def test_eval_verdicts_equal_the_reward(template, tmp_path):
    """The same completions through `r1kit eval`'s grading (more than `inline_below` answers, so
    its worker pool) get the reward's verdicts: the table, then the format cases."""
    cases = [(COMPLETION[template](a), g, c) for a, g, c in TABLE]
    cases += [(text, g, c) for t, text, g, c in FORMAT_CASES if t == template]
    rows = [{"question": f"problem {i}", "answer": g} for i, (_, g, _) in enumerate(cases)]
    summary, samples = _eval(tmp_path, rows, [[text] for text, _, _ in cases], template)
    got = [s["correct"] for s in samples]
    want = [c for _, _, c in cases]
    rewards = [
        accuracy(text, {**row, "template": template}) == 1.0
        for (text, _, _), row in zip(cases, rows)
    ]
    assert got == want == rewards, [
        (text, g) for (text, g, _), a, b in zip(cases, got, want) if a != b
    ]
    assert summary["pass@1"] == pytest.approx(sum(want) / len(want), abs=1e-12)


def test_comma_fast_path_is_for_thousands_only():
    assert as_fraction("1,000") == 1000 and as_fraction("12,345,678") == 12345678
    assert as_fraction("-1,234.5") == -1234.5 and as_fraction("6.02e23") == 602 * 10**21
    for text in ("1, 2", "3,2", "1,2345", "12,34", "3 2"):
        assert as_fraction(text) is None, text


def test_extract_rule():
    assert extract(None, "r1zero") is None and extract(None, "chat") is None
    assert extract("<answer> 7 </answer> <answer> 8 </answer>", "r1zero") == "7"  # the first
    assert extract("The answer is 7.", "r1zero") is None
    assert extract("So \\boxed{7}, or \\boxed{8}", "chat") == "8"
    assert extract("The answer is 7.", "chat") == "7"
    assert extract("no numbers here", "chat") is None


def test_heldout_pass1_equals_eval(tiny_model_base, tiny_tokenizer, tmp_path):
    """zero's held-out evaluation of the embedded model (arithmetic, linear equations, Countdown:
    its default `mix`), then the same samples through `r1kit eval` on the held-out file: the
    same grade for every sample, so the same pass@1."""
    from r1kit.data.datasets import heldout
    from r1kit.engine import SamplingParams, make_engine
    from r1kit.sampling.heldout import evaluate

    problems = heldout("mix", 24)
    k = 4
    tok = tiny_tokenizer
    engine = make_engine(tiny_model_base, pad_token_id=tok.pad_token_id, kind="hf")
    params = SamplingParams(
        n=k, temperature=0.6, top_p=0.95, max_tokens=64, stop_token_ids=(tok.eos_token_id,), seed=1
    )
    held, rollouts = evaluate(engine, tok, problems, "r1zero", params)
    texts = [[r.text for r in rollouts[i : i + k]] for i in range(0, len(rollouts), k)]
    summary, samples = _eval(tmp_path, problems, texts, "r1zero")
    assert [s["correct"] for s in samples] == [r.rewards["accuracy"] > 0 for r in rollouts]
    assert summary["pass@1"] == pytest.approx(held["pass1"], abs=1e-12)
    # the samples can tell the graders apart: right and wrong ones, and some without <answer>
    assert 0 < held["pass1"] < 1 and held["format_rate"] < 1
    assert {p["task"] for p in problems} == {"arith", "linear", "countdown"}
