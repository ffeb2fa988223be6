"""The sandbox's contract: a status per test with its reason, parallel runs in order, the code
reward's extraction and scoring, and the unshare fallback's isolation."""

from __future__ import annotations

import os
import socket

import pytest

from r1kit.rewards.code import CodeReward, extract_code, program_of
from r1kit.sandbox import Limits, Sandbox, available

BACKENDS = available()
pytestmark = pytest.mark.skipif(not BACKENDS, reason="neither bubblewrap nor unshare works here")
LIMITS = Limits(wall_s=5, cpu_s=2, memory_mb=256, processes=16, output_kb=64, tmp_mb=8)


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(LIMITS, workers=2) as sb:
        yield sb


def test_status_per_test(sandbox):
    program = "import os\ndef f(x):\n    return x * 2\nprint('hello from the program')\n"
    tests = ["assert f(2) == 4", "assert f(3) == 7", "f(None) + 1", "assert os.getcwd() == '/tmp'"]
    res = sandbox.run(program, tests)
    assert res.tests == ["pass", "wrong_answer", "error", "pass"]
    assert "TypeError" in res.details[2]
    assert res.reason == "ok" and res.passed == 2 and res.fraction == 0.5
    assert not res.all_passed
    assert "hello from the program" in res.output


def test_program_errors_fail_every_test(sandbox):
    res = sandbox.run("def f(x):\n    return x +\n", ["assert f(1) == 1", "assert True"])
    assert res.tests == ["error", "error"]
    assert "SyntaxError" in res.details[0]


def test_private_tmp_is_writable_and_fresh(sandbox):
    program = "import os\nopen('/tmp/mine', 'w').write('x')\nleft = os.listdir('/tmp')\n"
    assert sandbox.run(program, ["assert left == ['mine']"]).all_passed
    assert sandbox.run("import os\nleft = os.listdir('/tmp')", ["assert left == []"]).all_passed


def test_run_many_keeps_order(sandbox):
    jobs = [
        (f"def f():\n    return {i}\n", [f"assert f() == {i}", "assert f() == 3"]) for i in range(6)
    ]
    res = sandbox.run_many(jobs)
    assert [r.tests[0] for r in res] == ["pass"] * 6
    assert [r.tests[1] == "pass" for r in res] == [i == 3 for i in range(6)]


def test_extract_code():
    two = "think\n</think>\nFirst:\n```python\nx = 1\n```\nthen\n```py\ndef f():\n    pass\n```"
    assert extract_code(two) == "def f():\n    pass\n"
    assert extract_code("no closing think ```python\nx=1\n```") is None
    assert extract_code(" t </think> <answer> def f(): return 1 </answer>") == "def f(): return 1"
    assert extract_code(" t </think> <answer>1</answer>", template="chat") is None
    unclosed = "t</think>\n```python\ndef g():\n    return 2\n"
    assert extract_code(unclosed).rstrip() == "def g():\n    return 2"
    ex = {"entry_point": "add", "prefix": "def add(a, b):\n"}
    assert program_of("    return a + b\n", ex) == "def add(a, b):\n    return a + b\n"
    assert program_of("def add(a, b):\n    return b + a\n", ex).count("def add") == 1


def test_code_reward_all_or_fraction(sandbox):
    ex = {"tests": ["assert f(1) == 1", "assert f(2) == 4"], "template": "r1zero"}
    half = "ok </think> <answer> def f(x): return x </answer>"
    assert CodeReward(sandbox)(half, ex) == 0.0
    assert CodeReward(sandbox, fraction=True)(half, ex) == 0.5
    assert CodeReward(sandbox)("ok </think> <answer> def f(x): return x * x </answer>", ex) == 1.0
    assert CodeReward(sandbox)("ok </think> no code", ex) == 0.0
    assert CodeReward(sandbox)(half, {"template": "r1zero"}) == 0.0  # no tests: nothing passes


def test_prepare_runs_a_batch_once(sandbox):
    reward = CodeReward(sandbox)
    ex = {"tests": ["assert f() == 1"], "template": "chat"}
    texts = [f"</think>\n```python\ndef f():\n    return {i % 2}\n```" for i in range(6)]
    reward.prepare(texts, [ex] * 6)
    assert len(reward._cache) == 2  # two distinct programs
    assert [reward(t, ex) for t in texts] == [0.0, 1.0] * 3


@pytest.mark.skipif("unshare" not in BACKENDS, reason="unshare with namespaces does not work here")
def test_unshare_fallback_isolates(monkeypatch):
    monkeypatch.setenv("R1KIT_TEST_SECRET", "sk-unshare-secret")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    program = (
        "import os, socket\n"
        f"net = socket.socket().connect_ex(('127.0.0.1', {port}))\n"
        "secret = os.environ.get('R1KIT_TEST_SECRET')\n"
        "tmp = os.listdir('/tmp')\n"
        "home = os.path.isdir('/root/.ssh') and os.access('/root', os.R_OK)\n"
    )
    tests = ["assert net != 0", "assert secret is None", "assert tmp == []", "assert not home"]
    with Sandbox(LIMITS, backend="unshare", workers=1) as sb:
        assert sb.run(program, tests).tests == ["pass"] * 4
    server.close()
    assert os.environ["R1KIT_TEST_SECRET"] == "sk-unshare-secret"
