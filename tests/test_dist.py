"""Data-parallel GRPO under torchrun, on CPU with gloo and 2 processes (tests/dist_worker.py):
one sharded step equals the single-process step on the same data (loss and updated weights),
and a sharded checkpoint written by 2 ranks resumes with 1 and with 2."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from r1kit import dist
from r1kit.config import ZeroConfig
from r1kit.data.datasets import heldout
from r1kit.engine import SamplingParams, make_engine
from r1kit.rewards.base import WeightedReward
from r1kit.rl.checkpoint import latest_checkpoint, load_trainer_state
from r1kit.rl.rollout import generate, score
from r1kit.rl.trainer import GRPOTrainer

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("dist_worker.py")
BASE = dict(lr=1e-3, max_new_tokens=16)
# token loss + group scaling (the default); per-sequence loss + batch scaling + KL to a sharded
# reference + two updates per batch, 3 rows per micro-batch (5 groups of 3: uneven shares of 8
# and 7 rows, the same number of passes on both ranks); Dr. GRPO's constant normaliser
# with overlong filtering (the longest micro-batch may hold no loss token at all)
CASES = [
    dict(BASE, group_size=4),
    dict(BASE, group_size=3, loss_agg="sequence", scale_rewards="batch", beta=0.1, mu=2,
         micro_batch=3),
    dict(BASE, group_size=4, loss_agg="constant", scale_rewards="none", mask_truncated=True,
         micro_batch=2),
    # one row per pass on 8 and 7 rows: rank 1 runs out of rows first and pads with a
    # zero-weight pass (its reference forward too), or FSDP's collectives would hang
    dict(BASE, group_size=3, beta=0.1, micro_batch=1),
]  # fmt: skip
ATOL = 1e-5  # 1% of an Adam step (~lr = 1e-3): float32 sums in another order, and Adam
# divides each gradient by its own size, which magnifies the rounding of the smallest ones


def _rollouts(model, tok, n_problems: int, seed: int, n: int = 4):
    """n scored rollouts per problem from the embedded model, with rewards varied within each
    group (so advantages are non-zero)."""
    params = SamplingParams(n=n, temperature=1.0, max_tokens=16, seed=seed, logprobs=True,
                            stop_token_ids=(tok.eos_token_id,))  # fmt: skip
    rollouts = generate(
        make_engine(model, tok.pad_token_id), tok, heldout("arith", n_problems), "r1zero", params
    )
    score(rollouts, WeightedReward({"format": 1.0}))
    for i, r in enumerate(rollouts):
        r.reward = float(i % 2) + 0.25 * (i % 3)
    return rollouts


def _torchrun(job: dict, tmp: Path, name: str) -> dict:
    job_path, res_path = tmp / f"{name}-job.pt", tmp / f"{name}-result.pt"
    torch.save(job, job_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", str(WORKER), str(job_path), str(res_path)]  # fmt: skip
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = torch.load(res_path, weights_only=False)
    assert res["world"] == 2
    return res


def _single_step(base, tok, cfg_d: dict, rollouts, trainer=None):
    cfg = ZeroConfig(**cfg_d)
    if trainer is None:
        model = copy.deepcopy(base).train()
        ref = copy.deepcopy(base).eval().requires_grad_(False) if cfg.beta > 0 else None
        trainer = GRPOTrainer(model, cfg, tok.pad_token_id, ref_model=ref)
    m = trainer.update(rollouts)
    return m, trainer


def _assert_same(m1: dict, w1: dict, m2: dict, w2, what: str) -> None:
    assert m1["loss"] == pytest.approx(m2["loss"], abs=1e-6, rel=1e-5), what
    assert m1["grad_norm"] == pytest.approx(m2["grad_norm"], rel=1e-5), what
    for k in ("clip_ratio", "kl", "zero_std_groups"):
        assert m1[k] == pytest.approx(m2[k], abs=1e-6, rel=1e-5), (what, k)
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=ATOL, rtol=0, msg=f"{what}: {k}")


def test_sharded_step_equals_single_process_and_checkpoint_reshards(
    tmp_path, tiny_model_base, tiny_tokenizer
):
    tok, base = tiny_tokenizer, tiny_model_base
    a = _rollouts(base, tok, 4, seed=0)  # 16 rows
    odd = _rollouts(base, tok, 5, seed=1, n=3)  # 15 rows: 8 on rank 0, 7 on rank 1
    b = _rollouts(base, tok, 3, seed=2)
    assert any(r.finish_reason == "length" for r in a + odd), "overlong filtering untested"
    cases = [(CASES[0], a), (CASES[1], odd), (CASES[2], a), (CASES[3], odd)]
    ck = tmp_path / "run"
    job = {"tokenizer": tok, "cases": cases, "ckpt": (ck, CASES[0], a, b)}
    res = _torchrun(job, tmp_path, "step")

    # 1. the 2-rank step equals the 1-process step, case by case
    for (cfg_d, rollouts), (m2, w2) in zip(cases, res["cases"]):
        m1, tr = _single_step(base, tok, cfg_d, rollouts)
        w1 = tr.model.state_dict()
        moved = max((w1[k] - base.state_dict()[k]).abs().max() for k in w1)
        assert moved > 1e-4  # the step changed the weights: the comparison means something
        _assert_same(m1, w1, m2, w2, f"case {cfg_d}")

    # 2. the checkpoint saved by 2 ranks after step A resumes in one plain process: step B
    # there equals step B of the 2-rank run that went on without stopping
    ckpt = latest_checkpoint(ck)
    assert ckpt is not None and (ckpt / "dcp" / ".metadata").exists()
    assert (ckpt / "model.safetensors").exists()  # also a plain HF model directory
    assert not dist.active()
    m_cont, w_cont = res["ckpt"]
    model = copy.deepcopy(base).train()
    with torch.no_grad():  # scramble the weights: they must come from the checkpoint
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    trainer = GRPOTrainer(model, ZeroConfig(**CASES[0]), tok.pad_token_id)
    state = load_trainer_state(ckpt, trainer.optimizer, model)
    assert state["step"] == 1 and state["world_size"] == 2 and state["data_pos"] == 1
    assert len(trainer.optimizer.state) == len(list(model.parameters()))  # Adam moments back
    m1, _ = _single_step(base, tok, CASES[0], b, trainer)
    _assert_same(m1, model.state_dict(), m_cont, w_cont, "resumed with 1")

    # 3. ... and with 2 ranks again
    res2 = _torchrun({"tokenizer": tok, "resume": (ck, CASES[0], b)}, tmp_path, "resume")
    m2, w2 = res2["resume"]
    _assert_same(m2, w2, m_cont, w_cont, "resumed with 2")


def test_export_hf_from_sharded_checkpoint(tmp_path, tiny_model_base, tiny_tokenizer):
    """A DCP checkpoint (written here by one process; the format is the same for N ranks, and
    the 2-rank one is read back above) exports to a plain HF directory with its weights."""
    from transformers import AutoModelForCausalLM

    model = copy.deepcopy(tiny_model_base)
    with torch.no_grad():
        model.model.norm.weight.mul_(0.5)
    dist.save_sharded(tmp_path / "dcp", model)
    out = dist.export_hf(tmp_path / "dcp", None, tmp_path / "hf", tiny_tokenizer)
    back = AutoModelForCausalLM.from_pretrained(out)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, atol=0, rtol=0, msg=k)
    with pytest.raises(Exception, match="not a sharded checkpoint"):
        dist.load_sharded(tmp_path / "hf", model)


def test_shares_and_micro_batches():
    """Contiguous prompt shares cover every item once, in order, for any number of ranks."""
    for n in (0, 1, 5, 16, 17):
        for w in (1, 2, 3, 8):
            parts = [list(dist.share(n, r, w)) for r in range(w)]
            assert [i for p in parts for i in p] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert dist.micro_batches(100, 100, 64) == 64  # one process: the configured size


def test_zero_under_torchrun_then_resume_in_one_process(tmp_path):
    """`r1kit zero` on 2 gloo ranks end to end (data-parallel rollouts and evaluation, sharded
    update and checkpoints, rank 0 writing the run's files); the run cut back to its step-1
    checkpoint and resumed in one plain process ends at the 2-rank run's weights and metrics."""
    import json
    import shutil

    from safetensors.torch import load_file

    from r1kit.cli import main

    flags = ["--dataset", "arith", "--steps", "2", "--prompts-per-step", "3", "--group-size",
             "4", "--eval-problems", "3", "--eval-k", "1", "--max-new-tokens", "16",
             "--save-every", "1", "--lr", "1e-3", "--quiet"]  # fmt: skip
    run = tmp_path / "dp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "r1kit.cli", "zero", "--device", "cpu", "--out", str(run), *flags]  # fmt: skip
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # one writer: no duplicated rows
    assert (run / "checkpoints" / "step-000001" / "dcp" / ".metadata").exists()

    cut = tmp_path / "cut"  # as if stopped after step 1
    shutil.copytree(run, cut, ignore=shutil.ignore_patterns("final", "summary.json"))
    (cut / "checkpoints" / "latest").write_text("step-000001")
    shutil.rmtree(cut / "checkpoints" / "step-000002")
    assert main(["zero", "--resume", str(cut), "--quiet"]) == 0
    a = load_file(run / "final" / "model.safetensors")
    b = load_file(cut / "final" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=ATOL, rtol=0, msg=k)
    rows_b = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_b] == [1, 2]
    assert rows_b[1]["reward"] == rows[1]["reward"]
    assert rows_b[1]["response_len"] == rows[1]["response_len"]
