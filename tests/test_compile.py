"""`--compile-update` wiring: compiled decoder layers and LM-head chunks give the eager values
and gradients. The `aot_eager` backend traces forward and backward through the same graph capture
as inductor without a C++ toolchain, so this runs on any CPU; inductor itself is exercised by
bench/grpo_step.py on the GPU."""

from __future__ import annotations

import copy

import torch

from r1kit.rl.batch import collate, token_logprobs
from r1kit.rl.compile import compile_decoder_layers
from r1kit.rl.rollout import Rollout


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
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    got.sum().backward()
    want.sum().backward()
    for (name, p), q in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
