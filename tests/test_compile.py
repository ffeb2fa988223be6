"""`--compile-update` wiring: compiled decoder layers and LM-head chunks give the eager values
and gradients. The `aot_eager` backend traces forward and backward through the same graph capture
as inductor without a C++ toolchain, so this runs on any CPU; inductor itself is exercised by
bench/grpo_step.py on the GPU."""

from __future__ import annotations

import copy

import pytest
import torch
from numerics import assert_within, decoder_terms, diff_tol

from r1kit.config.parts import GRPO, GRPOOptim
from r1kit.rl.trainer import GRPOTrainer
from r1kit.sampling.rollout import Rollout
from r1kit.train.batch import collate, token_logprobs
from r1kit.train.compile import compile_decoder_layers


def test_compiled_update_matches_eager(tiny_model):
    rollouts = [
        Rollout({}, [1, 5, 6, 7], [8, 9, 10, 11, 12], None, "", "stop"),
        Rollout({}, [1, 5], [3, 4], None, "", "length"),
        Rollout({}, [1, 9, 9, 9, 9, 9, 2], [30], None, "", "stop"),
    ]
    batch = collate(rollouts, pad_id=0)
    eager = copy.deepcopy(tiny_model)
    compiled = copy.deepcopy(tiny_model)
    assert compile_decoder_layers(compiled, backend="aot_eager") == len(compiled.model.layers)
    want = token_logprobs(eager, batch, 0.7, chunk=5)
    got = token_logprobs(compiled, batch, 0.7, chunk=5, compile_backend="aot_eager")
    # traced graphs run the same maths through other kernels and fusions: float32 sums in
    # another order, for the forward chain and, for a weight's gradient, back over every token
    cfg, T, n_tok = tiny_model.config, batch.input_ids.shape[1], int(batch.completion_mask.sum())
    fwd, bwd = decoder_terms(cfg, T), decoder_terms(cfg, T, backward=True, tokens=n_tok)
    assert_within(got, want, diff_tol(torch.float32, want.abs().max(), fwd), "log-probs")
    got.sum().backward()
    want.sum().backward()
    for (name, p), q in zip(compiled.named_parameters(), eager.parameters()):
        assert_within(p.grad, q.grad, diff_tol(torch.float32, q.grad.abs().max(), bwd), name)


def _scored(n: int) -> list[Rollout]:
    """n rollouts of distinct lengths, rewards alternating within each group of 2."""
    out = []
    for i in range(n):
        r = Rollout({}, [1, 5 + i, 6], [8 + j for j in range(2 + i)], None, "", "stop")
        r.reward = float(i % 2)
        out.append(r)
    return out


@pytest.mark.parametrize("ckpt", [False, True])
def test_compiled_trainer_is_opt_in_on_cpu_and_reports_its_compile_once(tiny_model_base, ckpt):
    """Auto (the default) leaves the CPU eager; an explicit --compile-update compiles, its first
    update reports the compile seconds and the later ones do not, with the eager gradients, also
    under activation checkpointing (the checkpoint then reruns the compiled layer)."""
    optim = dict(lr=1e-3, micro_batch=2, max_grad_norm=1e9, grad_checkpoint=ckpt)
    kw = dict(temperature=1.0, max_tokens=8, pad_id=0)
    model = copy.deepcopy(tiny_model_base).train()
    eager = GRPOTrainer(model, GRPO(group_size=2), GRPOOptim(**optim), **kw)
    assert GRPOOptim().compile_update is None and not eager.compiled
    assert eager.compile_backend is None
    torch._dynamo.reset()  # a graph another test compiled for these layers would be reused
    compiled = GRPOTrainer(
        copy.deepcopy(tiny_model_base).train(),
        GRPO(group_size=2),
        GRPOOptim(**optim, compile_update=True),
        compile_backend="aot_eager",
        **kw,
    )
    assert compiled.compiled
    rollouts = _scored(4)
    want, got = eager.update(rollouts), compiled.update(rollouts)
    assert got["compile_s"] > 0 and "compile_s" not in want
    # the step's gradients (left on the weights; max_grad_norm too large to clip them)
    cfg, T = (
        tiny_model_base.config,
        max(len(r.prompt_ids) + len(r.completion_ids) for r in rollouts),
    )
    bwd = decoder_terms(cfg, T, backward=True, tokens=sum(len(r.completion_ids) for r in rollouts))
    for (name, p), q in zip(compiled.model.named_parameters(), model.parameters()):
        assert_within(p.grad, q.grad, diff_tol(torch.float32, q.grad.abs().max(), bwd), name)
    assert "compile_s" not in compiled.update(rollouts)  # compiled once: shapes are dynamic
