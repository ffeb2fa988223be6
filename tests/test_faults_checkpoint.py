"""Faults in checkpoints and run files, on real `r1kit zero` runs of the embedded model: bytes
flipped in the newest checkpoint's weights or optimizer state, a truncated checkpoint, a
missing/empty/garbled `latest`, every checkpoint damaged, a torn last metrics row, a final/
without weights; and --keep-last pruning, the weights' file mode, the JSONL reader's verdicts.

One uninterrupted 4-step run (A, --save-every 1, the default --keep-last 3) is shared; each
fault is made on a copy of it, which `r1kit zero --resume` (in this process, through cli.main)
then continues to the same final weights as A.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from r1kit import cli
from r1kit.errors import R1kitError
from r1kit.manifest import MANIFEST, check
from r1kit.modeling import new_file_mode, resolve_model
from r1kit.train.checkpoint import prune, select_checkpoint
from r1kit.train.files import append_jsonl, read_jsonl, write_json

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "--steps", "4",
    "--prompts-per-step", "2",
    "--group-size", "2",
    "--eval-problems", "1",
    "--eval-k", "1",
    "--max-new-tokens", "16",
    "--save-every", "1",
    "--quiet",
]  # fmt: skip
STEP = "step-{:06d}".format


@pytest.fixture(scope="module")
def run_a(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "A"
    assert cli.main(["zero", *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture
def copy_a(run_a, tmp_path) -> Path:
    """A private copy of run A to damage."""
    return Path(shutil.copytree(run_a, tmp_path / "C"))


def resume(out: Path, capsys) -> str:
    """`r1kit zero --resume OUT`; its stderr (which must hold no traceback)."""
    capsys.readouterr()
    assert cli.main(["zero", "--resume", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def ckpt(out: Path, step: int) -> Path:
    return out / "checkpoints" / STEP(step)


def flip(path: Path, n: int = 4096) -> None:
    """n random bytes written over the middle of `path` (its size unchanged)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    noise = torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(0))
    data[mid : mid + n] = bytes(noise.tolist())
    path.write_bytes(bytes(data))


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def assert_same_final(a: Path, b: Path) -> None:
    """The same operations in the same order, straight or resumed: bitwise-equal weights."""
    wa, wb = weights(a / "final"), weights(b / "final")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def metric_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_checkpoints_carry_manifests_and_keep_last_prunes(run_a):
    ckdir = run_a / "checkpoints"
    assert sorted(p.name for p in ckdir.iterdir()) == ["latest", STEP(2), STEP(3), STEP(4)]
    assert (ckdir / "latest").read_text() == STEP(4)
    for step in (2, 3, 4):
        assert check(ckpt(run_a, step)) is None
        listed = json.loads((ckpt(run_a, step) / MANIFEST).read_text())["files"]
        assert {"model.safetensors", "trainer_state.pt", "config.json"} <= listed.keys()
    assert check(run_a / "final") is None
    assert not list(run_a.rglob(".tmp*")) and not list(run_a.rglob(".prune*"))
    # weights get the mode of every other file of the run (safetensors alone made them 0600)
    for d in (run_a / "final", ckpt(run_a, 4)):
        assert (d / "model.safetensors").stat().st_mode & 0o777 == new_file_mode()
        assert (d / "config.json").stat().st_mode & 0o777 == new_file_mode()


def test_keep_last_one_and_zero(copy_a):
    ckdir = copy_a / "checkpoints"
    assert prune(ckdir, ckpt(copy_a, 4), 0) == []  # 0: keep all
    assert prune(ckdir, ckpt(copy_a, 3), 1) == [ckpt(copy_a, 2)]  # never newer than current
    assert sorted(p.name for p in ckdir.glob("step-*")) == [STEP(3), STEP(4)]


@pytest.mark.parametrize("name", ["model.safetensors", "trainer_state.pt"])
def test_flipped_bytes_fall_back_to_the_older_checkpoint(run_a, copy_a, capsys, name):
    flip(ckpt(copy_a, 4) / name)
    err = resume(copy_a, capsys)
    assert (
        f"checkpoint {STEP(4)} is damaged ({name}: sha256 mismatch); resuming from {STEP(3)}" in err
    )
    assert_same_final(run_a, copy_a)
    assert metric_steps(copy_a) == [1, 2, 3, 4]
    assert check(ckpt(copy_a, 4)) is None  # rewritten by the resumed run


def test_truncated_checkpoint_falls_back(run_a, copy_a, capsys):
    path = ckpt(copy_a, 4) / "model.safetensors"
    size = path.stat().st_size
    os.truncate(path, size // 2)
    err = resume(copy_a, capsys)
    assert f"model.safetensors: {size // 2} bytes where {size} were written" in err
    assert f"resuming from {STEP(3)}" in err
    assert_same_final(run_a, copy_a)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "checkpoints/latest is missing"),
        (b"", "checkpoints/latest is empty"),
        (b"\x00\xffstep-9?", "checkpoints/latest is unreadable"),
        (b"step-000099", "checkpoints/latest names 'step-000099', not a checkpoint"),
    ],
)
def test_broken_latest_falls_back_to_the_newest_intact(copy_a, capsys, content, why):
    pointer = copy_a / "checkpoints" / "latest"
    pointer.unlink()
    if content is not None:
        pointer.write_bytes(content)
    assert select_checkpoint(copy_a) == ckpt(copy_a, 4)
    assert capsys.readouterr().err.strip() == f"r1kit: warning: {why}; resuming from {STEP(4)}"


def test_resume_with_latest_missing_finishes_the_run(run_a, copy_a, capsys):
    (copy_a / "checkpoints" / "latest").unlink()
    (copy_a / "final" / "model.safetensors").unlink()
    err = resume(copy_a, capsys)
    assert f"checkpoints/latest is missing; resuming from {STEP(4)}" in err
    assert_same_final(run_a, copy_a)
    assert (copy_a / "checkpoints" / "latest").read_text() == STEP(4)


def test_every_checkpoint_damaged_is_refused_in_one_line(copy_a, capsys):
    for step in (2, 3, 4):
        flip(ckpt(copy_a, step) / "model.safetensors")
    before = (copy_a / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    assert cli.main(["zero", "--resume", str(copy_a), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "no intact checkpoint" in err and f"checkpoint {STEP(2)} is damaged" in err
    assert (copy_a / "metrics.jsonl").read_bytes() == before  # nothing started over


def test_checkpoint_without_manifest_is_used_unverified(copy_a, capsys):
    """A checkpoint from before manifests: used, with a warning that it cannot be verified."""
    (ckpt(copy_a, 4) / MANIFEST).unlink()
    assert select_checkpoint(copy_a) == ckpt(copy_a, 4)
    assert "cannot be verified" in capsys.readouterr().err
    (ckpt(copy_a, 4) / "trainer_state.pt").unlink()  # ...but one missing its state is not used
    assert select_checkpoint(copy_a) == ckpt(copy_a, 3)


def test_torn_last_metrics_row_resumes_with_a_warning(run_a, copy_a, capsys):
    (copy_a / "checkpoints" / "latest").write_text(STEP(3))  # crashed mid-append after step 3
    with (copy_a / "metrics.jsonl").open("ab") as f:
        f.write(b'{"step": 5, "rew')
    err = resume(copy_a, capsys)
    assert "metrics.jsonl:5: skipping a torn last row" in err
    assert metric_steps(copy_a) == [1, 2, 3, 4]
    assert_same_final(run_a, copy_a)


def test_final_without_weights_is_skipped_by_the_model_choice(copy_a, capsys):
    """`r1kit eval RUN` (and every job given a run directory) picks its model here."""
    (copy_a / "final" / "model.safetensors").unlink()
    assert resolve_model(str(copy_a)) == str(ckpt(copy_a, 4))
    assert "final is incomplete (model.safetensors: missing)" in capsys.readouterr().err
    for step in (2, 3, 4):
        os.truncate(ckpt(copy_a, step) / "model.safetensors", 100)
    with pytest.raises(R1kitError, match="holds no complete model"):
        resolve_model(str(copy_a))


def test_jsonl_reader_names_damage_before_the_last_row(tmp_path, capsys):
    path = tmp_path / "m.jsonl"
    for step in (1, 2):
        append_jsonl(path, {"step": step})
    with path.open("ab") as f:
        f.write(b'{"step": 3, "lo\n{"step": 4}\n')  # a bad row followed by a good one
    with pytest.raises(R1kitError, match=f"{path}:3: not a JSON object"):
        read_jsonl(path)
    write_json(tmp_path / "s.json", {"a": 1})  # atomic: no temp file stays beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl", "s.json"]
    assert (tmp_path / "s.json").stat().st_mode & 0o777 == new_file_mode()
