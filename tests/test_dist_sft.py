"""Data-parallel SFT under torchrun, on CPU with gloo and 2 processes (tests/dist_sft_worker.py):
one sharded optimizer step equals the single-process step on the same batch (loss, token
count, gradient norm, updated weights), and `r1kit sft` on 2 ranks writes sharded checkpoints
that resume in one plain process to the 2-rank run's final weights."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from launch import torchrun
from numerics import adam_grad_bound, adam_step_tol, assert_within, decoder_terms, diff_tol

from r1kit.config import SFTConfig
from r1kit.modeling import load_model
from r1kit.sft.data import encode, load_conversations
from r1kit.sft.train import make_optimizer, train_step
from r1kit.train.checkpoint import load_trainer_state

pytestmark = pytest.mark.usefixtures("one_thread")
WORKER = Path(__file__).with_name("dist_sft_worker.py")
LR = 1e-3


def test_sharded_sft_step_equals_single_process(tmp_path, tiny_model_base, tiny_tokenizer):
    tok = tiny_tokenizer
    data = [encode(c, tok, "r1zero") for c in load_conversations("traces:mix", limit=7, seed=5)]
    # 7 rows, 2 per micro-batch, padded: shares of 4 and 3 rows, 2 passes on each rank;
    # 3 rows one at a time, packed: rank 1 runs a zero-weight pass to match rank 0's two;
    # 1 row: rank 1 has none and only runs the zero-weight pass
    cases = [
        (dict(micro_batch=2, pack_tokens=0), LR, data),
        (dict(micro_batch=1, pack_tokens=256), LR, data[:3]),
        (dict(micro_batch=4), LR, data[3:4]),
    ]
    job, res_path = tmp_path / "job.pt", tmp_path / "res.pt"
    torch.save({"pad_id": tok.pad_token_id, "cases": cases}, job)
    torchrun(2, WORKER, job, res_path)
    res = torch.load(res_path, weights_only=False)
    assert res["world"] == 2
    base = tiny_model_base.state_dict()
    for (cfg_d, lr, rows), ((loss2, tok2, gn2), w2) in zip(cases, res["cases"]):
        model = copy.deepcopy(tiny_model_base).train()
        cfg = SFTConfig.of(**cfg_d)
        opt = make_optimizer(model, cfg.optim)
        loss1, tok1, gn1 = train_step(model, opt, rows, cfg.optim, tok.pad_token_id, lr)
        assert tok1 == tok2 == sum(len(e.completion_ids) for e in rows)
        # float32 sums in another order (shards, micro-batches, packed rows): the loss is a mean
        # of log-probs, the norm a sum of squared gradients over every weight
        T = max(len(e.prompt_ids) + len(e.completion_ids) for e in rows)
        fwd = decoder_terms(model.config, T) + tok1
        bwd = decoder_terms(model.config, T, backward=True, tokens=tok1) + 2  # + the all-reduce
        n_w = sum(p.numel() for p in model.parameters())
        assert abs(loss2 - loss1) <= diff_tol(torch.float32, abs(loss1), fwd), cfg_d
        assert abs(gn2 - gn1) <= diff_tol(torch.float32, gn1, bwd + n_w), cfg_d
        w1 = model.state_dict()
        assert w1.keys() == w2.keys()
        assert max((w1[k] - base[k]).abs().max() for k in w1) > 1e-4  # the step moved weights
        params = dict(model.named_parameters(remove_duplicate=False))  # the tied head too
        hp = opt.param_groups[0]
        loose = 0
        for k in w1:
            g = params[k].grad  # clipped, as Adam took it
            g_tol = diff_tol(torch.float32, g.abs().max(), bwd)
            bound = adam_step_tol(opt.state[params[k]], g_tol, w1[k], lr, hp["betas"], hp["eps"])
            assert_within(w2[k], w1[k], bound, f"{cfg_d}: {k}")
            loose += int(((bound > lr / 10) & (g != 0)).sum())
        # a gradient within its rounding of zero may step either way (so may an unused
        # embedding row's, exactly 0 on both sides); two thirds of the weights are held to a tenth of a step
        n_all = sum(v.numel() for v in w1.values())
        assert loose < n_all / 3, (cfg_d, loose, n_all)


def test_sft_under_torchrun_then_resume_in_one_process(tmp_path):
    """`r1kit sft` on 2 gloo ranks end to end (rank 0 writes the files, checkpoints sharded);
    cut back to its step-1 checkpoint and resumed in one plain process, it ends at the 2-rank
    run's weights and metrics."""
    from safetensors.torch import load_file

    from r1kit.cli import main

    rows = [{"messages": c.messages} for c in load_conversations("traces:arith", limit=10, seed=3)]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "dp"
    sft = ["-m", "r1kit.cli", "sft", "--device", "cpu", "--data", data, "--out", run]
    sft += ["--batch-size", "5", "--micro-batch", "2", "--save-every", "1", "--eval-problems", "0"]
    torchrun(2, *sft, "--lr", str(LR), "--quiet")
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
    hist = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in hist] == [1, 2]  # one writer: no duplicated rows
    ck1 = run / "checkpoints" / "step-000001"
    assert (ck1 / "dcp" / ".metadata").exists() and (ck1 / "trainer_state.pt").exists()

    cut = tmp_path / "cut"  # as if stopped after step 1
    shutil.copytree(run, cut, ignore=shutil.ignore_patterns("final", "summary.json"))
    (cut / "checkpoints" / "latest").write_text("step-000001")
    shutil.rmtree(cut / "checkpoints" / "step-000002")
    assert main(["sft", "--resume", str(cut), "--quiet"]) == 0
    a = load_file(run / "final" / "model.safetensors")  # a plain HF model
    b = load_file(cut / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    hist_b = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in hist_b] == [1, 2]
    # step 2 ran on 2 ranks in one run and in one process in the other: float32 sums in another
    # order, bounded through the 2-rank run's optimizer state after step 2 (read back here)
    model = load_model(None).train()
    cfg = SFTConfig.of(**json.loads((run / "config.json").read_text()))
    opt = make_optimizer(model, cfg.optim)
    load_trainer_state(run / "checkpoints" / "step-000002", opt, model)
    n_tok, lr = hist[1]["tokens"], hist[1]["lr"]
    fwd = decoder_terms(model.config, cfg.max_len) + n_tok
    bwd = decoder_terms(model.config, cfg.max_len, backward=True, tokens=n_tok) + 2
    assert abs(hist_b[1]["loss"] - hist[1]["loss"]) <= diff_tol(torch.float32, hist[1]["loss"], fwd)
    hp = opt.param_groups[0]
    params = dict(model.named_parameters())  # the tied LM head is saved as the embedding
    assert a.keys() == params.keys()
    loose = 0
    for k, p in params.items():
        state = opt.state[p]
        g_tol = diff_tol(torch.float32, adam_grad_bound(state, hp["betas"][1]), bwd)
        bound = adam_step_tol(state, g_tol, a[k], lr, hp["betas"], hp["eps"])
        assert_within(b[k], a[k], bound, k)
        loose += int((bound > lr / 10).sum())
    assert loose < sum(v.numel() for v in a.values()) / 3, loose  # most held to a tenth of a step
