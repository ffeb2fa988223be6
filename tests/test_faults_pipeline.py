"""Stage caches of `r1kit pipeline` and `r1kit distill` (issue 18), with real tiny runs of the
embedded model: an edited recipe reruns exactly the changed stage and the ones after it; a 0-byte
stage.json reruns its stage with a warning; a stage interrupted after its training, or stopped
mid-training by SIGTERM, resumes from its checkpoint instead of starting over; an unwritable or
live --out is one line, and so is an --out of another job's run or of other files (nothing
there touched); a stage whose final/ lost its weights is not reused but written again from its
checkpoint; distill with a changed --lr trains the student again and reuses the teacher's
traces, and a local teacher retrained since is asked again."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from r1kit.cli import main
from r1kit.modeling import resolve_model
from r1kit.pipeline import run as pipeline_run
from r1kit.sft import train as sft_train
from r1kit.train.lock import RunLock

pytestmark = pytest.mark.usefixtures("one_thread")

# three SFT stages of one optimizer step each; held-out evaluation of 2 problems x 1 sample
RECIPE = """\
out: {out}
eval: {{dataset: arith, problems: 2, k: 1, max_new_tokens: 16}}
stages:
  - {{name: first, kind: sft, data: "traces:arith", max_examples: 8, batch_size: 8, lr: 1.0e-3}}
  - {{name: second, kind: sft, data: "traces:arith", max_examples: 8, batch_size: 8,
      lr: {lr}}}
  - {{name: third, kind: sft, data: "traces:arith", max_examples: 8, batch_size: 8,
      lr: 1.0e-3}}
"""


def _stage_lines(text: str) -> dict[int, str]:
    """The pipeline's plan line of every stage: {1: 'stage 1 (first, sft): reused: ...'}."""
    return {int(m.group(1)): m.group(0) for m in re.finditer(r"^stage (\d) \(.*$", text, re.M)}


def _keys(out: Path) -> dict[str, str]:
    return {p.parent.name: json.loads(p.read_text())["output_id"] for p in out.glob("*/stage.json")}


def test_pipeline_reruns_from_the_first_changed_stage(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(out=out, lr="1.0e-3"))
    assert main(["pipeline", str(recipe), "--quiet"]) == 0
    assert main(["pipeline", str(recipe)]) == 0  # unchanged: every stage reused, none trained
    lines = _stage_lines(capsys.readouterr().out)
    assert all("reused: config and inputs unchanged" in lines[i] for i in (1, 2, 3)), lines
    before = _keys(out)

    # the recipe's second stage edited: it and the third rerun, the first is reused
    recipe.write_text(RECIPE.format(out=out, lr="2.0e-3"))
    assert main(["pipeline", str(recipe)]) == 0
    lines = _stage_lines(capsys.readouterr().out)
    assert "reused" in lines[1]
    assert lines[2] == (
        "stage 2 (second, sft): config changed (lr 0.001 -> 0.002): rerunning stages 2-3"
    )
    assert "run: stage 2 (second) before it was re-run" in lines[3]
    after = _keys(out)
    assert after["01-first"] == before["01-first"]
    assert after["02-second"] != before["02-second"] and after["03-third"] != before["03-third"]
    # the rerun replaced the old output whole: one run's metrics, its config, no stale files
    second = out / "02-second"
    assert json.loads((second / "config.json").read_text())["optim"]["lr"] == 2e-3
    assert [m["step"] for m in map(json.loads, (second / "metrics.jsonl").open())] == [1]
    assert not (out / "attempts").exists()  # no stage is running

    # a 0-byte stage.json (a full disk under the old in-place write): that stage reruns
    (out / "03-third" / "stage.json").write_bytes(b"")
    assert main(["pipeline", str(recipe)]) == 0
    cap = capsys.readouterr()
    lines = _stage_lines(cap.out)
    assert "reused" in lines[1] and "reused" in lines[2]
    assert "no complete stage record" in lines[3] and "rerunning stage 3" in lines[3]
    warning = [x for x in cap.err.splitlines() if "stage.json" in x]
    assert len(warning) == 1 and "is empty" in warning[0]
    assert json.loads((out / "03-third" / "stage.json").read_text())["done"] is True

    # interrupted after its training, before its stage.json: the same key resumes its checkpoint
    real = pipeline_run.evaluate_path

    def power_cut(path, problems, **kw):
        if "03-third" in str(path):
            raise RuntimeError("power cut")
        return real(path, problems, **kw)

    (out / "03-third" / "stage.json").write_text('{"done": tru')  # garbled: reruns
    monkeypatch.setattr(pipeline_run, "evaluate_path", power_cut)
    with pytest.raises(RuntimeError, match="power cut"):
        main(["pipeline", str(recipe), "--quiet"])
    monkeypatch.setattr(pipeline_run, "evaluate_path", real)
    third = out / "03-third"
    assert not (third / "stage.json").exists() and (third / "checkpoints").is_dir()
    rows = (third / "metrics.jsonl").read_text()
    saved = {p: p.stat().st_ino for p in (third / "checkpoints").glob("step-*")}
    assert saved
    capsys.readouterr()
    assert main(["pipeline", str(recipe)]) == 0
    cap = capsys.readouterr()
    assert "interrupted, same key" in _stage_lines(cap.out)[3]
    assert "resuming it from its checkpoint" in _stage_lines(cap.out)[3]
    # the checkpoint it resumed from is still the one written before (a restart removes it)
    assert {p: p.stat().st_ino for p in (third / "checkpoints").glob("step-*")} == saved
    assert (third / "metrics.jsonl").read_text() == rows  # no step trained twice
    assert json.loads((third / "stage.json").read_text())["done"] is True

    # interrupted again, and then its checkpoint damaged: it starts over rather than failing
    (third / "stage.json").write_text("")
    monkeypatch.setattr(pipeline_run, "evaluate_path", power_cut)
    with pytest.raises(RuntimeError, match="power cut"):
        main(["pipeline", str(recipe), "--quiet"])
    monkeypatch.setattr(pipeline_run, "evaluate_path", real)
    (weights,) = (third / "checkpoints").glob("step-*/model.safetensors")
    with weights.open("r+b") as f:  # 4 KiB of other bytes in the middle of the weights
        f.seek(weights.stat().st_size // 2)
        f.write(bytes(range(256)) * 16)
    capsys.readouterr()
    assert main(["pipeline", str(recipe)]) == 0
    cap = capsys.readouterr()
    assert "none of its checkpoints is intact: rerunning stage 3" in _stage_lines(cap.out)[3]
    assert "no intact checkpoint" in cap.err
    assert json.loads((third / "stage.json").read_text())["done"] is True

    # --only reruns one stage; the stages after it are then out of date, and say so
    assert main(["pipeline", str(recipe), "--only", "second"]) == 0
    assert "stage 3 is now out of date" in capsys.readouterr().out
    assert main(["pipeline", str(recipe)]) == 0
    lines = _stage_lines(capsys.readouterr().out)
    assert "reused" in lines[2] and "the stage before it was re-run since" in lines[3]


@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGTERM, 143), (signal.SIGINT, 130)],  # a scheduler's stop; Ctrl-C
)
def test_pipeline_stage_stopped_mid_training_resumes(tmp_path, capsys, monkeypatch, sig, code):
    """SIGTERM (a scheduler's stop) or Ctrl-C during the first of two steps: the stage saves
    step 1 and stops with the signal's exit code; the next pipeline run resumes it and trains
    step 2 only."""
    recipe = tmp_path / "r.yaml"
    out = tmp_path / "run"
    recipe.write_text(
        f"out: {out}\neval: {{dataset: arith, problems: 2, k: 1, max_new_tokens: 16}}\n"
        "stages:\n  - {name: only, kind: sft, data: 'traces:arith', max_examples: 8,\n"
        "      batch_size: 8, epochs: 2, save_every: 1}\n"
    )
    real = sft_train.lr_at

    def sigterm_once(step, total, optim):
        if step == 0:
            os.kill(os.getpid(), sig)  # handled by the run: stop after this step
        return real(step, total, optim)

    monkeypatch.setattr(sft_train, "lr_at", sigterm_once)
    assert main(["pipeline", str(recipe), "--quiet"]) == code
    monkeypatch.setattr(sft_train, "lr_at", real)
    err = capsys.readouterr().err
    said = f"stopped by {signal.Signals(sig).name} after step 1"
    assert said in err and f"`r1kit pipeline {recipe}` again" in err
    stage = out / "01-only"
    assert not (stage / "stage.json").exists()
    assert [m["step"] for m in map(json.loads, (stage / "metrics.jsonl").open())] == [1]
    capsys.readouterr()
    assert main(["pipeline", str(recipe)]) == 0
    line = _stage_lines(capsys.readouterr().out)[1]
    assert "interrupted, same key" in line and "resuming it from its checkpoint" in line
    assert [m["step"] for m in map(json.loads, (stage / "metrics.jsonl").open())] == [1, 2]
    assert json.loads((stage / "stage.json").read_text())["done"] is True


def test_pipeline_out_unwritable_held_or_failed_start(tmp_path, capsys):
    """An unwritable --out, an OUT a live pipeline holds and a failed start: one line each, and
    nothing left behind."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path / "x", lr="1.0e-3"))
    (tmp_path / "file").write_text("not a directory")
    assert main(["pipeline", str(recipe), "--out", str(tmp_path / "file" / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not writable" in err[0]
    # a second pipeline on a live one's OUT is refused in one line, before anything is touched
    live = RunLock(tmp_path / "live", "pipeline")
    (tmp_path / "live").mkdir()
    live.acquire()
    try:
        assert main(["pipeline", str(recipe), "--out", str(tmp_path / "live")]) == 2
    finally:
        live.release()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is in use by another run (pipeline, pid" in err[0]
    assert [p.name for p in (tmp_path / "live").iterdir()] == ["run.lock"]
    # a failed start (here: an unknown held-out dataset) leaves no directory behind
    recipe.write_text(
        RECIPE.format(out=tmp_path / "x", lr="1.0e-3").replace("dataset: arith", "dataset: nope")
    )
    assert main(["pipeline", str(recipe)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_distill_changed_lr_trains_the_student_again_and_reuses_traces(tmp_path, capsys):
    out = tmp_path / "d"
    args = [
        "distill",
        *("--prompts", "24", "--k", "2", "--max-tokens", "64", "--epochs", "1"),
        *("--batch-size", "16", "--eval-problems", "2", "--eval-k", "1", "--out", str(out)),
    ]
    assert main(args) == 0
    traces = (out / "traces.jsonl").read_text()
    first = json.loads((out / "summary.json").read_text())
    weights = _sha(out / "student" / "final" / "model.safetensors")
    capsys.readouterr()

    assert main([*args, "--lr", "5e-3"]) == 0
    text = capsys.readouterr().out
    assert "student: config changed (lr 0.002 -> 0.005): training it" in text
    s = json.loads((out / "summary.json").read_text())
    assert s["usage"]["requests_now"] == 0 and s["usage"]["cached"] == 48  # teacher not asked
    assert (out / "traces.jsonl").read_text() == traces
    # the same traces and starting weights: the first loss (before any update) is bit-identical
    assert s["student"]["first_loss"] == first["student"]["first_loss"]
    assert _sha(out / "student" / "final" / "model.safetensors") != weights  # the new student
    assert json.loads((out / "student" / "config.json").read_text())["optim"]["lr"] == 5e-3
    assert "student base evaluation: reused" in text  # the starting student is the same

    assert main([*args, "--lr", "5e-3"]) == 0  # unchanged now: nothing trained or evaluated
    text = capsys.readouterr().out
    assert "student: reused: config and inputs unchanged" in text
    assert "student final evaluation: reused" in text
    assert json.loads((out / "summary.json").read_text())["student"] == s["student"]
    # --resume OUT: the saved settings (lr 5e-3 included), so again nothing to train
    key = json.loads((out / "student.json").read_text())["key"]
    assert main(["distill", "--resume", str(out)]) == 0
    assert "student: reused" in capsys.readouterr().out
    assert json.loads((out / "student.json").read_text())["key"] == key
    # another --eval-k: the same student, evaluated again (before and after), not trained again
    assert main([*args, "--lr", "5e-3", "--eval-k", "2"]) == 0
    text = capsys.readouterr().out
    assert "student: reused" in text and "evaluating the fine-tuned student" in text
    assert json.loads((out / "student.json").read_text())["key"] == key


def test_distill_bad_student_fails_before_the_teacher(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["distill", "--student", str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model path does not exist" in err[0]
    assert not out.exists()  # no teacher answer asked for, nothing written


def test_distill_local_teacher_retrained_since_is_asked_again(tmp_path, capsys):
    teacher = tmp_path / "teacher"
    shutil.copytree(resolve_model(None), teacher)
    out = tmp_path / "d"
    args = ["distill", "--teacher", str(teacher), "--prompts", "4", "--k", "1"]
    args += ["--max-tokens", "16", "--epochs", "0", "--out", str(out)]
    assert main(args) == 0
    assert main(args) == 0  # the same teacher: every answer from the cache
    assert json.loads((out / "summary.json").read_text())["usage"]["cached"] == 4
    # the teacher's weights rewritten in place (a pipeline that reran its stage): stale answers
    weights = teacher / "model.safetensors"
    weights.write_bytes(weights.read_bytes())
    capsys.readouterr()
    assert main(args) == 0
    assert "its cached answers are dropped" in capsys.readouterr().out
    u = json.loads((out / "summary.json").read_text())["usage"]
    assert u["requests_now"] == 4 and u["cached"] == 0


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (run.lock included), by relative path, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _refused(code: int, err: str, match: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and match in lines[0], err


def test_pipeline_and_distill_take_out_as_every_run_does(tmp_path, capsys):
    """--out of a finished `r1kit zero` run, or of user files: pipeline and distill refuse it in
    one line (exit 2), and every file there, run.lock included, is byte for byte as it was. A
    distill run's OUT is replaced by --overwrite (the teacher asked again)."""
    zero = tmp_path / "zero"
    args = ["zero", "--quiet", "--dataset", "arith", "--steps", "1", "--prompts-per-step", "1"]
    args += ["--group-size", "2", "--max-new-tokens", "8", "--eval-problems", "1"]
    assert main([*args, "--eval-k", "1", "--out", str(zero)]) == 0
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("my notes\n")
    (user / "data").mkdir()
    (user / "data" / "train.jsonl").write_text('{"question": "1+1", "answer": "2"}\n')
    before = {d: _tree(d) for d in (zero, user)}
    assert "run.lock" in before[zero] and "summary.json" in before[zero]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path / "p", lr="1.0e-3"))
    capsys.readouterr()

    code = main(["pipeline", str(recipe), "--out", str(zero)])
    _refused(code, capsys.readouterr().err, f"{zero} holds a zero run, not a pipeline run")
    dargs = ["distill", "--prompts", "4", "--k", "1", "--max-tokens", "16", "--epochs", "0"]
    code = main([*dargs, "--out", str(zero)])
    _refused(code, capsys.readouterr().err, f"{zero} holds a zero run, not a distill run")
    code = main(["pipeline", str(recipe), "--out", str(user)])  # pipeline has no --overwrite
    _refused(code, capsys.readouterr().err, f"{user} is not empty and holds no r1kit run")
    for extra in ([], ["--overwrite"]):  # other files: refused whatever the flags
        code = main([*dargs, "--out", str(user), *extra])
        _refused(code, capsys.readouterr().err, "is not empty and holds no r1kit run")
    assert {d: _tree(d) for d in (zero, user)} == before
    assert not (tmp_path / "p").exists()

    # a distill run: a re-run continues it (its answers from the cache), --overwrite replaces it
    d = tmp_path / "d"
    assert main([*dargs, "--out", str(d)]) == 0
    assert main([*dargs, "--out", str(d)]) == 0
    assert json.loads((d / "summary.json").read_text())["usage"]["cached"] == 4
    assert main([*dargs, "--out", str(d), "--overwrite"]) == 0
    usage = json.loads((d / "summary.json").read_text())["usage"]
    assert usage["requests_now"] == 4 and usage["cached"] == 0
    assert json.loads((d / "run.lock").read_text())["job"] == "distill"


TWO = """\
out: {out}
eval: {{dataset: arith, problems: 2, k: 1, max_new_tokens: 16}}
stages:
  - {{name: first, kind: sft, data: "traces:arith", max_examples: 8, batch_size: 8, lr: 1.0e-3}}
  - {{name: second, kind: sft, data: "traces:arith", max_examples: 8, batch_size: 8,
      lr: {lr}}}
"""


def test_pipeline_stage_whose_final_lost_its_weights_is_not_reused(tmp_path, capsys):
    """A complete stage whose final/ lost its weights since (deleted, a torn copy) is not
    reused (the next stage could not load it): it writes final/ again from its checkpoint at the
    last step, the same weights, no step trained twice; with no checkpoint either, it reruns."""
    out = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TWO.format(out=out, lr="1.0e-3"))
    assert main(["pipeline", str(recipe), "--quiet"]) == 0
    first = out / "01-first"
    weights = first / "final" / "model.safetensors"
    sha, rows = _sha(weights), (first / "metrics.jsonl").read_text()
    weights.unlink()
    recipe.write_text(TWO.format(out=out, lr="2.0e-3"))  # and the stage after it edited
    capsys.readouterr()
    assert main(["pipeline", str(recipe)]) == 0
    lines = _stage_lines(capsys.readouterr().out)
    assert lines[1] == (
        "stage 1 (first, sft): its final/ is incomplete (model.safetensors: missing): resuming "
        "it from its checkpoint; stage 2 after it"
    )
    assert "run: stage 1 (first) before it was re-run" in lines[2]
    assert _sha(weights) == sha and (first / "metrics.jsonl").read_text() == rows
    assert resolve_model(str(first)) == str(first / "final")  # complete again
    assert json.loads((out / "02-second" / "config.json").read_text())["optim"]["lr"] == 2e-3

    # final/ truncated and no checkpoint left: the stage trains again
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    shutil.rmtree(first / "checkpoints")
    assert main(["pipeline", str(recipe)]) == 0
    line = _stage_lines(capsys.readouterr().out)[1]
    assert "its final/ is incomplete (model.safetensors: " in line and "truncated?" in line
    assert line.endswith(": rerunning stages 1-2")
    assert _sha(weights) == sha  # the same seed and data: the same weights
