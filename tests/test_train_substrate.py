"""The training substrate every job shares: the micro-batch plan (train/plan.py) and the run
skeleton (train/run.py)."""

from __future__ import annotations

import json

import pytest

from r1kit import dist
from r1kit.errors import R1kitError
from r1kit.train import plan
from r1kit.train.run import Run, read_metrics


def test_plan_one_process_is_consecutive_rows_of_the_length_order():
    lengths = [5, 1, 9, 3, 7, 2, 8]
    got = plan.micro_batches(range(len(lengths)), 3, lambda i: lengths[i])
    assert got == [([1, 5, 3], 1.0), ([0, 4, 6], 1.0), ([2], 1.0)]


@pytest.mark.parametrize("n_rows", [0, 1, 2, 5, 7, 16])
@pytest.mark.parametrize("world", [2, 3])
def test_plan_over_ranks_covers_each_row_once_with_equal_pass_counts(monkeypatch, n_rows, world):
    """Under W ranks every row is trained exactly once at weight W (FSDP averages gradients
    over ranks), every rank runs the same number of passes (collectives line up), and a rank
    short of rows pads with weight-0 passes."""
    lengths = [(7 * i) % 11 for i in range(n_rows)] or [0]
    rows = list(range(n_rows)) or [0]  # a generation batch always has a row
    monkeypatch.setattr(dist, "world", lambda: world)
    seen, counts = [], set()
    for r in range(world):
        monkeypatch.setattr(dist, "rank", lambda r=r: r)
        p = plan.micro_batches(rows, 2, lambda i: lengths[i])
        counts.add(len(p))
        for mb, w in p:
            assert w in (0.0, float(world))
            assert len(mb) >= 1
            if w:
                seen += mb
    assert len(counts) == 1
    assert sorted(seen) == rows


def test_run_trims_metrics_on_resume_and_writes_its_files(tmp_path):
    out = tmp_path / "run"
    with Run(out, "test", progress=False) as run:
        assert run.resume_from(None) == 0
        run.write_config({"lr": 1.0})
        for step in (1, 2, 3):
            run.log({"step": step, "loss": 1.0 / step})
        assert [m["step"] for m in run.metrics()] == [1, 2, 3]
        run.finish({"steps": 3})
    assert json.loads((out / "summary.json").read_text()) == {"steps": 3}
    assert json.loads((out / "config.json").read_text()) == {"lr": 1.0}

    # a job that keeps no checkpoints continues its directory without one
    with Run(out, "test", resume=True, progress=False, checkpoints=False) as again:
        assert again.checkpoint is None  # no checkpoints/latest written by this test
        start = again.resume_from({"step": 2, "wall_s": 12.5})
        assert start == 2 and again.wall() >= 12.5
        assert [m["step"] for m in read_metrics(out / "metrics.jsonl")] == [1, 2]
        assert again.read_json("config.json") == {"lr": 1.0}
    with Run(out, "test", progress=False, overwrite=True) as fresh:
        assert fresh.read_json("config.json") is None  # not resuming: the old run is gone
    assert sorted(p.name for p in out.iterdir()) == ["run.lock"]


def test_run_save_policy_and_time_limit(tmp_path):
    due = [s for s in range(1, 11) if Run.due(s, 10, 4)]
    assert due == [4, 8, 10]
    assert Run.due(3, 10, 4, stopping=True)
    with Run(tmp_path / "r", "test", progress=False) as run:
        assert not run.stopping(0)  # 0: no limit
        assert run.stopping(1e-9)
        assert not run.stopping(3600)


def test_run_out_that_is_a_file_is_one_line_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(R1kitError, match="is not writable"):
        Run(tmp_path / "file" / "run", "test", progress=False)
