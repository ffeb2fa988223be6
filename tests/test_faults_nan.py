"""Faults: non-finite training steps (train/finite.py, `--nan-policy stop|skip`).

Real small runs of the embedded model. A learning rate of 1000 is the real cause: the first step
moves every weight by ~1000 (finite), the next forward overflows and its gradient norm is NaN.
For "skip, then go on" the cause is a reward of NaN (what a user's reward function returning NaN
gives the trainer) in one batch of real rollouts.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from launch import torchrun
from safetensors.torch import load_file

from r1kit.cli import main
from r1kit.config.parts import GRPO, GRPOOptim
from r1kit.data.datasets import heldout
from r1kit.engine import SamplingParams, make_engine
from r1kit.pretrain.train import PretrainConfig, pretrain
from r1kit.rl import report as zero_report
from r1kit.rl.trainer import GRPOTrainer
from r1kit.sampling.rollout import generate
from r1kit.sft.data import encode, load_conversations
from r1kit.train.finite import NonFiniteError, NonFiniteGuard, all_finite
from r1kit.train.lora import add_lora
from r1kit.train.run import Run

pytestmark = pytest.mark.usefixtures("one_thread")
LR_LINE = "the learning rate 1000 is likely too high"
SKIPPED = "non-finite loss or gradients"  # the end-of-run line of a run that skipped steps


def _chat_file(path: Path, n: int) -> Path:
    rows = [{"messages": c.messages} for c in load_conversations("traces:arith", limit=n, seed=3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _all_finite_files(out: Path) -> list[Path]:
    """Every safetensors file under `out`, each loaded and checked finite; returns them."""
    files = sorted(out.rglob("*.safetensors"))
    for f in files:
        for k, t in load_file(f).items():
            assert torch.isfinite(t).all(), f"{f}: {k}"
    return files


def _latest(out: Path) -> str:
    return (out / "checkpoints" / "latest").read_text().strip()


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_weights_check_sees_nan_and_inf_but_not_large_finite_values():
    """max |x| per tensor: a 2-norm of float32 3e38 values would overflow to inf; the largest
    finite bfloat16 and float16 values are finite too."""
    big = [
        torch.full((4, 4), 3e38),
        torch.full((3,), 3.3e38).bfloat16(),
        torch.full((2,), 6e4).half(),
    ]
    assert all_finite(big)
    for bad in (math.nan, math.inf, -math.inf):
        for dtype in (torch.float32, torch.bfloat16):
            t = torch.zeros(5, dtype=dtype)
            t[2] = bad
            assert not all_finite([*big, t]), (bad, dtype)
    assert all_finite([])


def test_sft_huge_lr_stops_before_the_nan_step(tmp_path, capsys):
    data, out = _chat_file(tmp_path / "chat.jsonl", 8), tmp_path / "run"
    args = ["sft", "--data", data, "--out", out, "--batch-size", "2", "--micro-batch", "2"]
    args += ["--save-every", "1", "--eval-problems", "0", "--lr", "1e3", "--quiet"]
    assert main(list(map(str, args))) == 2
    err = _one_error_line(capsys)
    assert "step 2: the gradient norm is nan" in err, err
    assert LR_LINE in err and "no checkpoint was written after step 1" in err, err
    assert not (out / "final").exists() and not (out / "summary.json").exists()
    assert _latest(out) == "step-000001"  # the only checkpoint: written before the NaN step
    assert _all_finite_files(out) == [out / "checkpoints" / "step-000001" / "model.safetensors"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]  # the step that was not applied is not logged


def _no_constants(name: str) -> None:
    raise AssertionError(f"{name} is not JSON: jq and JavaScript reject it")


def test_sft_skip_policy_counts_skips_then_stops(tmp_path, capsys):
    """lr 1000 never recovers: step 1 applies, steps 2-5 are skipped (their weights are step 1's)
    and the 5th skip in a row, step 6, stops the run."""
    data, out = _chat_file(tmp_path / "chat.jsonl", 14), tmp_path / "run"
    args = ["sft", "--data", data, "--out", out, "--batch-size", "2", "--micro-batch", "2"]
    args += ["--save-every", "1", "--eval-problems", "0", "--lr", "1e3", "--quiet"]
    assert main(list(map(str, [*args, "--nan-policy", "skip"]))) == 2
    err = _one_error_line(capsys)
    assert "step 6: the gradient norm is nan (5 steps in a row skipped" in err, err
    assert "no checkpoint was written after step 5" in err, err
    lines = (out / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(x, parse_constant=_no_constants) for x in lines]  # standard JSON
    assert rows[1]["grad_norm"] is None  # a skipped step's NaN norm is written as null
    assert [(r["step"], r["nonfinite_skipped"]) for r in rows] == [
        (1, 0),
        (2, 1),
        (3, 1),
        (4, 1),
        (5, 1),
    ]
    assert _latest(out) == "step-000005" and not (out / "final").exists()
    files = _all_finite_files(out)  # the checkpoints --keep-last kept, steps 5, 4, ...
    assert len(files) >= 2 and files[-1].parent.name == "step-000005"
    w_old, w5 = load_file(files[0]), load_file(files[-1])
    assert all(torch.equal(w_old[k], w5[k]) for k in w5)  # skipped steps left the weights alone


def test_sft_skip_policy_run_that_ends_totals_its_skips(tmp_path, capsys):
    """lr 1000 over 5 steps: step 1 applies, steps 2-5 are skipped (4 in a row: not enough to
    stop), the run ends, and summary.json and the last lines total what was skipped."""
    data, out = _chat_file(tmp_path / "chat.jsonl", 10), tmp_path / "run"
    args = ["sft", "--data", data, "--out", out, "--batch-size", "2", "--micro-batch", "2"]
    args += ["--epochs", "1", "--eval-problems", "0", "--lr", "1e3", "--quiet"]
    assert main(list(map(str, [*args, "--nan-policy", "skip"]))) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 5 and summary["nonfinite_skipped"] == 4, summary
    assert summary["nonfinite_skipped_steps"] == [2, 3, 4, 5]
    said = capsys.readouterr().out
    assert f"{SKIPPED}: 4 updates skipped (--nan-policy skip), at steps 2, 3, 4, 5" in said


def test_zero_skip_policy_run_that_ends_totals_its_skips(tmp_path, capsys):
    """The same for GRPO (lr 1000: steps 2 and 3 skipped): summary.json, the --quiet line, and
    the end-of-run table (printed here from the run's summary.json, as `zero` without --quiet
    prints it)."""
    args = ["zero", "--prompts-per-step", "2", "--group-size", "4", "--eval-problems", "1"]
    args += ["--eval-k", "1", "--max-new-tokens", "16", "--steps", "3", "--nan-policy", "skip"]
    out = tmp_path / "zero"
    assert main(list(map(str, [*args, "--out", out, "--lr", "1e3", "--quiet"]))) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nonfinite_skipped"] == 2 and summary["nonfinite_skipped_steps"] == [2, 3]
    assert " nonfinite_skipped=2 k=1 steps=3 " in capsys.readouterr().out
    zero_report.print_summary(summary, str(out))
    said = " ".join(capsys.readouterr().out.split())  # rich wraps the line at 80 columns
    assert f"{SKIPPED}: 2 updates skipped (--nan-policy skip), at steps 2, 3" in said


def test_zero_huge_lr_stops_and_latest_stays_finite(tmp_path, capsys):
    out = tmp_path / "zero"
    args = ["zero", "--out", out, "--prompts-per-step", "2", "--group-size", "4"]
    args += ["--eval-problems", "1", "--eval-k", "1", "--max-new-tokens", "16"]
    args += ["--save-every", "1", "--steps", "4", "--lr", "1e3", "--quiet"]
    assert main(list(map(str, args))) == 2
    err = _one_error_line(capsys)
    assert err.startswith("r1kit: error: step 2: the gradient norm is nan"), err
    assert LR_LINE in err and "no checkpoint was written after step 1" in err, err
    assert _latest(out) == "step-000001" and not (out / "final").exists()
    assert len(_all_finite_files(out)) == 1


def test_pretrain_huge_lr_stops_and_writes_no_model(tmp_path):
    """Pretraining (no checkpoints): the run stops at the first non-finite step and never
    writes its model."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    out = tmp_path / "pt"
    cfg = PretrainConfig(
        out=str(out), steps=4, tokenizer_docs=500, batch_size=2, block_len=32, lr=1e3, warmup=0
    )
    cfg.threads = 1
    try:
        with pytest.raises(NonFiniteError, match=r"^step 2: the (loss|gradient norm) is nan; "):
            pretrain(cfg, progress=False)
    finally:  # pretrain() sets both process-wide
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
    assert not list(out.rglob("*.safetensors"))


def _rollout_batches(model, tok, n: int) -> list:
    """n batches of real rollouts (2 prompts x 4 samples) with rewards 1, 0, 1, 0, ... in every
    group, sampled once from `model` so two trainers can be fed the same batches."""
    engine = make_engine(model, tok.pad_token_id)
    problems = heldout("arith", 2 * n)
    batches = []
    for i in range(n):
        sp = SamplingParams(
            n=4, temperature=1.0, max_tokens=12, stop_token_ids=(tok.eos_token_id,), seed=i
        )
        rollouts = generate(engine, tok, problems[2 * i : 2 * i + 2], "r1zero", sp)
        for j, r in enumerate(rollouts):
            r.reward = float(j % 2)
        batches.append(rollouts)
    return batches


def _trainer(model, tok, policy: str, **algo) -> GRPOTrainer:
    return GRPOTrainer(
        model,
        GRPO(group_size=4, **algo),
        GRPOOptim(lr=1e-3),
        temperature=1.0,
        max_tokens=12,
        pad_id=tok.pad_token_id,
        guard=NonFiniteGuard(policy, lr=1e-3),
    )


def _opt_state(trainer: GRPOTrainer) -> list[dict]:
    return [trainer.optimizer.state[p] for p in trainer.optimizer.param_groups[0]["params"]]


def test_skipped_step_leaves_no_trace_in_weights_or_adam(tiny_model, tiny_tokenizer):
    """A NaN reward in batch 2: under skip the step is not applied and training goes on; the
    weights and Adam's moments and step count then equal a run that never saw batch 2."""
    tok = tiny_tokenizer
    b1, b2, b3 = _rollout_batches(tiny_model, tok, 3)
    b2[1].reward = math.nan  # group 0's advantages, hence the loss, are NaN
    a, b = tiny_model, copy.deepcopy(tiny_model)
    ta, tb = _trainer(a, tok, "skip"), _trainer(b, tok, "skip")
    assert ta.update(b1)["nonfinite_skipped"] == 0
    m2 = ta.update(b2)
    assert m2["nonfinite_skipped"] == 1 and math.isnan(m2["loss"])
    assert ta.update(b3)["nonfinite_skipped"] == 0
    tb.update(b1)
    tb.update(b3)
    # the same operations in the same order: bitwise equal
    wa, wb = a.state_dict(), b.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    for sa, sb in zip(_opt_state(ta), _opt_state(tb), strict=True):
        assert sa.keys() == sb.keys() == {"step", "exp_avg", "exp_avg_sq"}
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert float(_opt_state(ta)[0]["step"]) == 2


def test_stop_policy_under_lora_leaves_adapters_and_state(tiny_model, tiny_tokenizer):
    """LoRA (the optimizer holds only the adapters) with μ = 2: a NaN reward stops at the first
    inner step; the adapters and Adam's state are those of the last applied step."""
    tok = tiny_tokenizer
    b1, b2 = _rollout_batches(tiny_model, tok, 2)
    model = add_lora(tiny_model, rank=4)
    trainer = _trainer(model, tok, "stop", mu=2)
    trainer.update(b1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = [{k: v.clone() for k, v in s.items()} for s in _opt_state(trainer)]
    b2[0].reward = math.inf
    with pytest.raises(NonFiniteError, match=r"^step 2\.1: the loss is nan; "):
        trainer.update(b2)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    for s0, s1 in zip(state, _opt_state(trainer), strict=True):
        assert all(torch.equal(s0[k], s1[k]) for k in s0)
    assert all(p.grad is None for p in model.parameters())  # the NaN gradients were dropped
    # the weights check covers exactly what the optimizer updates: the adapters
    adapters = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    assert adapters and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        adapters[0].view(-1)[0] = math.nan
    with pytest.raises(NonFiniteError, match=r"^step 3: the updated weights are not finite; "):
        trainer.guard.check_weights(3, trainer.optimizer)


def test_no_checkpoint_or_final_from_non_finite_weights(tmp_path, tiny_model, tiny_tokenizer):
    """Run.save refuses a model holding a NaN (one line, nothing written); so does final/."""
    from torch.optim import AdamW

    out = tmp_path / "run"
    with Run(out, "sft") as run:
        opt = AdamW(tiny_model.parameters())
        run.save(1, tiny_model, tiny_tokenizer, opt, {"data_pos": 1})
        with torch.no_grad():
            tiny_model.model.norm.weight[3] = -math.inf
        with pytest.raises(NonFiniteError, match="^refusing to write checkpoint step-000002: "):
            run.save(2, tiny_model, tiny_tokenizer, opt, {"data_pos": 2})
        with pytest.raises(NonFiniteError, match=f"^refusing to write {out / 'final'}: "):
            run.save_final(tiny_model, tiny_tokenizer)
    assert _latest(out) == "step-000001"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step-000001"]
    assert not (out / "final").exists()


def test_ranks_agree_under_torchrun(tmp_path, tiny_tokenizer):
    """2 gloo ranks, FSDP2-sharded: a NaN only one rank sees (its loss share, its weight shard)
    skips or stops both at the same step; lr 1000 stops both at step 2 with the same line."""
    tok = tiny_tokenizer
    rows = [encode(c, tok, "r1zero") for c in load_conversations("traces:arith", limit=4, seed=3)]
    job = tmp_path / "job.pt"
    torch.save({"pad_id": tok.pad_token_id, "rows": rows}, job)
    torchrun(2, Path(__file__).with_name("dist_nan_worker.py"), job, tmp_path)
    r0, r1 = (json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1, (r0, r1)  # every verdict and every error line the same on both ranks
    assert r0["skip"] is False
    assert r0["stop"].startswith("step 7: the loss is ")
    assert r0["weights"].startswith("step 8: the updated weights are not finite; ")
    assert r0["save"].startswith("refusing to write checkpoint step-000008: ")
    step, line = r0["lr"]
    assert step == 2 and line.startswith("step 2: the gradient norm is nan; ") and LR_LINE in line
    assert r0["finite_after"] is True
