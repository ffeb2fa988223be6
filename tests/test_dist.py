"""Data-parallel GRPO under torchrun, on CPU with gloo and 2 processes (tests/dist_worker.py):
one sharded step equals the single-process step on the same data (loss and updated weights),
and a sharded checkpoint written by 2 ranks resumes with 1 and with 2."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from launch import torchrun
from numerics import adam_grad_bound, adam_step_tol, assert_within, decoder_terms, diff_tol

from r1kit import dist
from r1kit.config import ZeroConfig
from r1kit.data.datasets import heldout
from r1kit.engine import SamplingParams, make_engine
from r1kit.errors import R1kitError
from r1kit.modeling import load_model
from r1kit.rewards.base import WeightedReward
from r1kit.rl.trainer import GRPOTrainer
from r1kit.sampling.rollout import generate, score
from r1kit.train.checkpoint import latest_checkpoint, load_trainer_state

pytestmark = pytest.mark.usefixtures("one_thread")
WORKER = Path(__file__).with_name("dist_worker.py")
BASE = dict(lr=1e-3, max_tokens=16)
# token loss + group scaling (the default); per-sequence loss + batch scaling + KL to a sharded
# reference + two updates per batch, 3 rows per micro-batch (5 groups of 3: uneven shares of 8
# and 7 rows, the same number of passes on both ranks); Dr. GRPO's constant normaliser
# with overlong filtering (the longest micro-batch may hold no loss token at all)
CASES = [
    dict(BASE, group_size=4),
    dict(
        BASE,
        group_size=3,
        loss_agg="sequence",
        scale_rewards="batch",
        beta=0.1,
        mu=2,
        micro_batch=3,
    ),
    dict(
        BASE,
        group_size=4,
        loss_agg="constant",
        scale_rewards="none",
        mask_truncated=True,
        micro_batch=2,
    ),
    # one row per pass on 8 and 7 rows: rank 1 runs out of rows first and pads with a
    # zero-weight pass (its reference forward too), or FSDP's collectives would hang
    dict(BASE, group_size=3, beta=0.1, micro_batch=1),
]


def _trainer(model, cfg: ZeroConfig, pad_id: int, ref_model=None) -> GRPOTrainer:
    """The trainer a zero run with `cfg` builds: its algorithm, optimizer and sampling."""
    s = cfg.sampling
    return GRPOTrainer(
        model,
        cfg.algo,
        cfg.optim,
        temperature=s.temperature,
        max_tokens=s.max_tokens,
        pad_id=pad_id,
        ref_model=ref_model,
    )


def _rollouts(model, tok, n_problems: int, seed: int, n: int = 4):
    """n scored rollouts per problem from the embedded model, with rewards varied within each
    group (so advantages are non-zero)."""
    params = SamplingParams(
        n=n,
        temperature=1.0,
        max_tokens=16,
        seed=seed,
        logprobs=True,
        stop_token_ids=(tok.eos_token_id,),
    )
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
    torchrun(2, WORKER, job_path, res_path)
    res = torch.load(res_path, weights_only=False)
    assert res["world"] == 2
    return res


def _single_step(base, tok, cfg_d: dict, rollouts, trainer=None):
    """The 1-process update; returns its metrics and a Bounds of what another order of the same
    float32 sums (shards, uneven passes) may change."""
    cfg = ZeroConfig.of(**cfg_d)
    if trainer is None:
        model = copy.deepcopy(base).train()
        ref = copy.deepcopy(base).eval().requires_grad_(False) if cfg.algo.beta > 0 else None
        trainer = _trainer(model, cfg, tok.pad_token_id, ref_model=ref)
    steps: list[dict] = []  # each optimizer step's state and gradients, as Adam took them

    def snapshot(opt, *_):
        steps.append(
            {
                p: ({k: v.clone() for k, v in opt.state[p].items()}, p.grad.clone())
                for p in opt.state
                if p.grad is not None
            }
        )

    hook = trainer.optimizer.register_step_post_hook(snapshot)
    m = trainer.update(rollouts)
    hook.remove()
    return m, trainer, Bounds(trainer, rollouts, steps)


class Bounds:
    """Derived tolerances for comparing an update with the 1-process one (tests/numerics.py):
    the loss and KL are token means over the forward chain, the gradient norm sums every weight's
    backward chain, and each weight moves by at most the sum over its Adam steps of that step's
    bound (a later step's gradient also sees the earlier steps' differences: first order)."""

    def __init__(self, trainer, rollouts, steps: list[dict]) -> None:
        cfg = trainer.model.config
        T = max(len(r.prompt_ids) + len(r.completion_ids) for r in rollouts)
        n_tok = sum(len(r.completion_ids) for r in rollouts)
        self.fwd = decoder_terms(cfg, T) + n_tok
        self.bwd = decoder_terms(cfg, T, backward=True, tokens=n_tok) + 2  # + the all-reduce
        self.n_w = sum(p.numel() for p in trainer.model.parameters())
        self.adv = float(trainer.advantages(rollouts).abs().max())
        hp = trainer.optimizer.param_groups[0]
        names = {p: k for k, p in trainer.model.named_parameters()}
        self.weights: dict[str, torch.Tensor] = {}
        w_now = dict(trainer.model.named_parameters())
        for snap in steps:
            for p, (state, grad) in snap.items():
                k = names[p]
                g_tol = diff_tol(torch.float32, grad.abs().max(), self.bwd)
                b = adam_step_tol(state, g_tol, w_now[k], hp["lr"], hp["betas"], hp["eps"])
                self.weights[k] = self.weights.get(k, 0) + b

    def scalar(self, magnitude: float, terms: int) -> float:
        return diff_tol(torch.float32, magnitude, terms)


def _assert_same(m1: dict, w1: dict, m2: dict, w2, what: str, bounds: Bounds) -> None:
    assert abs(m1["loss"] - m2["loss"]) <= bounds.scalar(bounds.adv + abs(m1["kl"]), bounds.fwd)
    gn_tol = bounds.scalar(m1["grad_norm"], bounds.bwd + bounds.n_w)
    assert abs(m1["grad_norm"] - m2["grad_norm"]) <= gn_tol, what
    assert abs(m1["kl"] - m2["kl"]) <= bounds.scalar(abs(m1["kl"]), bounds.fwd), what
    for k in ("clip_ratio", "zero_std_groups"):  # counted: the same unless a ratio sits on a
        assert abs(m1[k] - m2[k]) <= bounds.scalar(1.0, bounds.fwd), (what, k)  # clip edge
    assert w1.keys() == w2.keys()
    for k in w1:
        bound = bounds.weights.get(k, bounds.weights.get("model.embed_tokens.weight"))
        assert_within(w2[k], w1[k], bound, f"{what}: {k}")


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
        m1, tr, bounds = _single_step(base, tok, cfg_d, rollouts)
        w1 = tr.model.state_dict()
        moved = max((w1[k] - base.state_dict()[k]).abs().max() for k in w1)
        assert moved > 1e-4  # the step changed the weights: the comparison means something
        _assert_same(m1, w1, m2, w2, f"case {cfg_d}", bounds)

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
    trainer = _trainer(model, ZeroConfig.of(**CASES[0]), tok.pad_token_id)
    state = load_trainer_state(ckpt, trainer.optimizer, model)
    assert state["step"] == 1 and state["world_size"] == 2 and state["data_pos"] == 1
    assert len(trainer.optimizer.state) == len(list(model.parameters()))  # Adam moments back
    m1, _, bounds = _single_step(base, tok, CASES[0], b, trainer)
    _assert_same(m1, model.state_dict(), m_cont, w_cont, "resumed with 1", bounds)

    # 3. ... and with 2 ranks again
    res2 = _torchrun({"tokenizer": tok, "resume": (ck, CASES[0], b)}, tmp_path, "resume")
    m2, w2 = res2["resume"]
    _assert_same(m2, w2, m_cont, w_cont, "resumed with 2", bounds)


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


def test_shares():
    """Contiguous prompt shares cover every item once, in order, for any number of ranks."""
    for n in (0, 1, 5, 16, 17):
        for w in (1, 2, 3, 8):
            parts = [list(dist.share(n, r, w)) for r in range(w)]
            assert [i for p in parts for i in p] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_zero_under_torchrun_then_resume_in_one_process(tmp_path):
    """`r1kit zero` on 2 gloo ranks end to end (data-parallel rollouts and evaluation, sharded
    update and checkpoints, rank 0 writing the run's files); the run cut back to its step-1
    checkpoint and resumed in one plain process ends at the 2-rank run's weights and metrics."""
    import json
    import shutil

    from safetensors.torch import load_file

    from r1kit.cli import main

    flags = [
        "--dataset",
        "arith",
        "--steps",
        "2",
        "--prompts-per-step",
        "3",
        "--group-size",
        "4",
        "--eval-problems",
        "3",
        "--eval-k",
        "1",
        "--max-new-tokens",
        "16",
        "--save-every",
        "1",
        "--lr",
        "1e-3",
        "--quiet",
    ]
    run = tmp_path / "dp"
    torchrun(2, "-m", "r1kit.cli", "zero", "--device", "cpu", "--out", run, *flags)
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
    # step 2 ran on 2 ranks in one run and in one process in the other: bounded through the
    # 2-rank run's optimizer state after step 2 (read back into one process here)
    model = load_model(None).train()
    trainer = _trainer(model, ZeroConfig.of(lr=1e-3), 0)
    load_trainer_state(run / "checkpoints" / "step-000002", trainer.optimizer, model)
    cfg, hp = model.config, trainer.optimizer.param_groups[0]
    n_tok = 3 * 4 * 16  # at most: prompts x group x new tokens
    bwd = decoder_terms(cfg, cfg.max_position_embeddings, backward=True, tokens=n_tok) + 2
    params = dict(model.named_parameters())  # the tied LM head is saved as the embedding
    assert a.keys() == params.keys()
    for k, p in params.items():
        state = trainer.optimizer.state[p]
        g_tol = diff_tol(torch.float32, adam_grad_bound(state, hp["betas"][1]), bwd)
        bound = adam_step_tol(state, g_tol, a[k], hp["lr"], hp["betas"], hp["eps"])
        assert_within(b[k], a[k], bound, k)
    rows_b = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_b] == [1, 2]
    assert rows_b[1]["reward"] == rows[1]["reward"]
    assert rows_b[1]["response_len"] == rows[1]["response_len"]


def test_share_gpus_setting(monkeypatch):
    # R1KIT_SHARE_GPUS picks gloo for CUDA tensors (NCCL refuses two ranks on one GPU); a typo
    # is a one-line error, not a silent NCCL job that then fails on a duplicate GPU
    for value, want in [("", False), ("0", False), ("off", False), ("1", True), ("yes", True)]:
        monkeypatch.setenv("R1KIT_SHARE_GPUS", value)
        assert dist.sharing_gpus() is want
    monkeypatch.setenv("R1KIT_SHARE_GPUS", "2")
    with pytest.raises(R1kitError, match="R1KIT_SHARE_GPUS='2': expected 1 or 0"):
        dist.sharing_gpus()
