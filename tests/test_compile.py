"""`--compile-update` wiring: compiled decoder layers and LM-head chunks give the eager values
and gradients. The `aot_eager` backend traces forward and backward through the same graph capture
as inductor without a C++ toolchain, so this runs on any CPU; inductor itself is exercised by
bench/grpo_step.py on the GPU."""

from __future__ import annotations

import copy

import torch
from numerics import assert_within, decoder_terms, diff_tol

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
