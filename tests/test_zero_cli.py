"""`r1kit zero` end to end as a user runs it: a subprocess, tiny settings, real files.

Runs are shared per module: A (3 steps straight), B (2 steps, then resumed to 3) and C (A with
its last checkpoint removed as after a crash, then resumed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TINY = [
    "--prompts-per-step", "2",
    "--group-size", "4",
    "--eval-problems", "3",
    "--eval-k", "2",
    "--max-new-tokens", "24",
    "--save-every", "1",
    "--quiet",
]  # fmt: skip
METRIC_KEYS = {"step", "reward", "accuracy", "format", "response_len", "reflection_rate"}
METRIC_KEYS |= {"loss", "clip_ratio", "kl", "gen_s", "train_s"}
SUMMARY_KEYS = {
    "base_pass1",
    "final_pass1",
    "base_passk",
    "final_passk",
    "k",
    "steps",
    "wall_s",
    "base_formatted_accuracy",
    "final_formatted_accuracy",
}


def r1kit(*args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "r1kit.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:  # the same operations in the same order, in one process or resumed: bitwise
        assert torch.equal(wa[k], wb[k]), k


def assert_same_row(a: dict, b: dict) -> None:
    """Equal metrics apart from wall-clock timings."""
    a = {k: v for k, v in a.items() if not k.endswith("_s")}
    b = {k: v for k, v in b.items() if not k.endswith("_s")}
    assert a.keys() == b.keys()
    for k in a:  # computed the same way from bitwise-equal weights
        assert a[k] == b[k], k


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("zero")


@pytest.fixture(scope="module")
def run_a(root) -> Path:
    ok(r1kit("zero", "--steps", 3, *TINY, "--out", root / "A", cwd=root))
    return root / "A"


@pytest.fixture(scope="module")
def run_b2(root) -> Path:
    """2 steps; a snapshot of the finished run, kept before run_b3 resumes it."""
    ok(r1kit("zero", "--steps", 2, *TINY, "--out", root / "B", cwd=root))
    shutil.copytree(root / "B", root / "B2")
    return root / "B2"


@pytest.fixture(scope="module")
def run_b3(root, run_b2) -> Path:
    p = ok(r1kit("zero", "--resume", root / "B", "--steps", 3, "--quiet", cwd=root))
    assert p.stdout.count("\n") == 1 and "final_pass1=" in p.stdout  # --quiet: one line
    return root / "B"


@pytest.fixture(scope="module")
def run_c(root, run_a) -> Path:
    """A crashed after checkpoint 2 had been written (and after metrics row 3)."""
    c = root / "C"
    shutil.copytree(run_a, c)
    shutil.rmtree(c / "checkpoints" / "step-000003")
    (c / "checkpoints" / "latest").write_text("step-000002")
    shutil.rmtree(c / "final")
    for name in ("summary.json", "report.png", "samples.jsonl"):
        (c / name).unlink()
    assert len(metrics(c)) == 3  # the stale row for step 3 stays in the file
    ok(r1kit("zero", "--resume", c, "--quiet", cwd=root))
    return c


def test_zero_writes_outputs(run_b2):
    out = run_b2
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["k"] == 2 and summary["steps"] == 2 and summary["eval_problems"] == 3
    assert summary["wall_s"] > 0
    for key in SUMMARY_KEYS - {"k", "steps", "wall_s"}:
        assert 0.0 <= summary[key] <= 1.0, key
    assert summary["base_passk"] >= summary["base_pass1"]

    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert METRIC_KEYS <= r.keys()
        assert 0.0 <= r["format"] <= 1.0 and 0.0 <= r["accuracy"] <= 1.0
        assert 1 <= r["response_len"] <= 24

    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / "final")
    assert model.config.model_type == "qwen2"
    assert AutoTokenizer.from_pretrained(out / "final").eos_token_id is not None

    latest = (out / "checkpoints" / "latest").read_text().strip()
    assert latest == "step-000002"
    assert (out / "checkpoints" / latest / "trainer_state.pt").is_file()
    assert (out / "checkpoints" / "step-000001" / "model.safetensors").is_file()
    assert not list((out / "checkpoints").glob(".tmp*"))
    assert_same_weights(out / "final", out / "checkpoints" / latest)

    assert len((out / "samples.jsonl").read_text().splitlines()) == 3 * 2
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["run"]["steps"] == 2 and cfg["algo"]["group_size"] == 4
    assert (out / "base_eval.json").is_file()


def test_resume_matches_straight_run(run_a, run_b2, run_b3):
    """2 steps + resume to 3 == 3 steps straight: same data order, RNG and optimizer state."""
    ra, rb = metrics(run_a), metrics(run_b3)
    assert [r["step"] for r in rb] == [1, 2, 3]
    for a, b in zip(ra, rb):
        assert_same_row(a, b)
    assert_same_weights(run_a / "final", run_b3 / "final")
    assert json.loads((run_b3 / "summary.json").read_text())["steps"] == 3
    assert (run_b3 / "checkpoints" / "latest").read_text().strip() == "step-000003"


def test_resume_after_crash(run_a, run_c):
    rows = metrics(run_c)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert_same_row(rows[2], metrics(run_a)[2])
    assert_same_weights(run_a / "final", run_c / "final")
    for name in ("summary.json", "report.png", "samples.jsonl", "final/config.json"):
        assert (run_c / name).is_file(), name


# --------------------------------------------------------------------------- bad input


def _bad_jsonl(tmp: Path, line3: str) -> Path:
    p = tmp / "data.jsonl"
    rows = [{"question": "Compute 1 + 1.", "answer": "2"}, {"question": "2 + 2?", "answer": 4}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows) + line3 + "\n")
    return p


def _train_only(tmp: Path) -> Path:
    """Two rows that both hash to the train split: nothing is left to evaluate on."""
    p = tmp / "train_only.jsonl"
    rows = [
        {"question": "Compute 1 + 1.", "answer": "2"},
        {"question": "Compute 2 + 2.", "answer": 4},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def _afile(tmp: Path) -> Path:
    (tmp / "afile").write_text("not a directory")
    return tmp / "afile" / "sub"


def _no_config(tmp: Path) -> Path:
    (tmp / "run").mkdir()
    return tmp / "run"


BAD = {
    "missing-dataset": (lambda t: ["zero", "--dataset", "missing.jsonl"], "missing.jsonl"),
    "jsonl-bad-json": (
        lambda t: ["zero", "--dataset", _bad_jsonl(t, '{"question": "x", ')],
        "data.jsonl:3:",
    ),
    "jsonl-no-answer": (
        lambda t: ["zero", "--dataset", _bad_jsonl(t, '{"question": "x"}')],
        "data.jsonl:3:",
    ),
    "unknown-reward": (lambda t: ["zero", "--rewards", "nosuchreward"], "nosuchreward"),
    "missing-model": (
        lambda t: ["zero", "--model", "/nonexistent/model"],
        "model path does not exist",
    ),
    "out-under-file": (lambda t: ["zero", "--out", _afile(t)], "not writable"),
    "resume-no-config": (lambda t: ["zero", "--resume", _no_config(t)], "nothing to resume"),
    "group-size-1": (lambda t: ["zero", "--group-size", "1"], "--group-size must be >= 2"),
    "save-every-0": (lambda t: ["zero", "--save-every", "0"], "--save-every must be >= 1"),
    "no-heldout-rows": (lambda t: ["zero", "--dataset", _train_only(t)], "no held-out problems"),
    "unknown-preset": (lambda t: ["pretrain", "--preset", "nosuch"], "unknown preset"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_error(case, tmp_path):
    make_args, expected = BAD[case]
    args = make_args(tmp_path)
    if args[0] == "zero" and "--out" not in args and "--resume" not in args:
        args += ["--out", tmp_path / "out"]
    t0 = time.perf_counter()
    proc = r1kit(*args, "--quiet", cwd=tmp_path, timeout=120)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("r1kit: error: ")
    assert expected in lines[0]
    assert not (tmp_path / "out" / "base_eval.json").exists()  # failed before evaluating
    assert elapsed < 60, f"{case} took {elapsed:.1f}s to fail"


@pytest.mark.parametrize("args", [["--help"], ["zero", "--help"], ["pretrain", "--help"]])
def test_help(args, tmp_path):
    proc = ok(r1kit(*args, cwd=tmp_path, timeout=60))
    assert "usage: r1kit" in proc.stdout
    if args[0] == "zero":
        for flag in ("--group-size", "--resume", "--model", "--dataset", "--rewards", "--beta"):
            assert flag in proc.stdout


def test_console_script(tmp_path):
    exe = shutil.which("r1kit") or str(Path(sys.executable).parent / "r1kit")
    if not Path(exe).exists():
        pytest.skip("the r1kit console script is not installed")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("r1kit ")


@pytest.mark.parametrize(
    "field, value",
    [
        ("steps", 0),
        ("prompts_per_step", 0),
        ("group_size", 1),
        ("mu", 0),
        ("save_every", 0),
        ("eval_problems", 0),
        ("eval_k", 0),
        ("max_tokens", 0),
        ("lr", 0.0),
        ("temperature", 0.0),
        ("eval_temperature", -0.1),
        ("top_p", 0.0),
        ("eval_top_p", 1.5),
        ("scale_rewards", "rank"),
        ("loss_agg", "mean"),
        ("dtype", "float16"),
        ("template", "alpaca"),
    ],
)
def test_config_validation(field, value):
    """Every bad setting is a one-line R1kitError naming its flag, before anything runs."""
    from r1kit.config import ZeroConfig
    from r1kit.errors import R1kitError

    ZeroConfig().validate()
    with pytest.raises(R1kitError, match="--" + field.replace("_", "-")):
        ZeroConfig.of(**{field: value}).validate()


def test_run_dir_as_model(run_b2):
    """`--model OUT` of a finished run means its final model."""
    from r1kit.modeling import load_model, resolve_model

    assert resolve_model(str(run_b2)) == str(run_b2 / "final")
    assert load_model(str(run_b2)).config.model_type == "qwen2"
