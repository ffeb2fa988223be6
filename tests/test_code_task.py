"""The procedural code task: references pass their hidden tests in the sandbox, slips fail,
splits are disjoint, and its worked traces feed a corpus only when asked for."""

from __future__ import annotations

import itertools
import random

import pytest

from r1kit.data.corpus import documents
from r1kit.data.datasets import heldout, train_stream
from r1kit.data.tasks import TASKS, split_of
from r1kit.rewards.code import CODE
from r1kit.sandbox import available

pytestmark = pytest.mark.skipif(not available(), reason="neither bubblewrap nor unshare works")
TASK = TASKS["code"]


def _passes(codes: list[str], examples: list[dict]) -> list[bool]:
    jobs = [(c, tuple(ex["tests"])) for c, ex in zip(codes, examples)]
    CODE.prepare_jobs(jobs)  # one parallel batch
    return [CODE.run(j).all_passed for j in jobs]


def test_traces_by_style():
    """careful/corrected traces end in passing code, slips in failing code, guesses mostly
    fail; the reference answer passes and the checker reads it from <answer>."""
    rng = random.Random(0)
    exs = [TASK.generate(rng) for _ in range(8)]
    assert len({ex["question"] for ex in exs}) > 5
    styles = ("careful", "corrected", "slip", "guess")
    traces = {s: [TASK.trace(ex, rng, s) for ex in exs] for s in styles}
    codes = [ex["answer"] for ex in exs] + [a for s in styles for _, a in traces[s]]
    ok = _passes(codes, exs * 5)
    n = len(exs)
    assert all(ok[: 3 * n])  # references, careful, corrected
    assert not any(ok[3 * n : 4 * n])  # slips
    assert sum(ok[4 * n :]) < n // 2  # guesses
    assert all("Wait" in r for r, _ in traces["corrected"])
    assert TASK.check(exs[0]["answer"], exs[0])
    assert TASK.check(f"```python\n{exs[0]['answer']}\n```", exs[0])
    assert not TASK.check(None, exs[0]) and not TASK.check("", exs[0])


def test_tests_are_type_strict():
    rng = random.Random(1)
    ex = next(ex for ex in iter(lambda: TASK.generate(rng), None) if ex["result"] == "sum")
    as_float = ex["answer"].replace("return sum(", "return float(sum(") + ")"
    assert _passes([ex["answer"], as_float], [ex, ex]) == [True, False]


def test_splits_disjoint_and_mix_unchanged():
    held = heldout("code", 150)
    assert len({ex["question"] for ex in held}) == 150
    assert all(split_of(ex["question"]) == "test" for ex in held)
    train = {ex["question"] for ex in itertools.islice(train_stream("code", 0), 2000)}
    assert not train & {ex["question"] for ex in held}
    assert all(ex["task"] != "code" for ex in itertools.islice(train_stream("mix", 0), 300))


def test_corpus_has_code_traces_only_when_asked():
    docs = list(itertools.islice(documents(0, ("code",)), 40))
    assert all("Write f(xs)" in d for d in docs)
    assert any("<answer> def f(xs): return" in d for d in docs)
    assert not any("Write f(xs)" in d for d in itertools.islice(documents(0), 200))


def test_rejection_sampling_keeps_only_passing_code():
    from r1kit.pipeline.sample import select
    from r1kit.sampling.filters import Limits
    from r1kit.sampling.rollout import Rollout

    ex = {**TASK.generate(random.Random(5)), "template": "r1zero"}
    wrong = TASK.trace(ex, random.Random(0), "slip")[1]
    texts = [
        f" Keep it simple. </think> <answer> {ex['answer']} </answer>",
        f" Keep it simple. </think> <answer> {wrong} </answer>",
        " Keep it simple. </think> <answer> def f(xs): return xs[0] </answer>",
        " Keep it simple. </think> <answer> import os; os._exit(0) </answer>",
    ]
    rollouts = [Rollout(ex, [1], [1] * 20, None, t, "stop") for t in texts]
    res = select(rollouts, Limits(), keep_per_prompt=4, k=4)
    assert [r["completion"] for r in res["kept"]] == texts[:1]
    assert all(r["failed"][0] == "incorrect" for r in res["rejected"])
