"""Chunked completion log-probs equal a full log-softmax over the whole logits, with gradients."""

from __future__ import annotations

import pytest
import torch

from r1kit.rl.batch import collate, token_logprobs
from r1kit.rl.rollout import Rollout


def _full(model, batch, temperature):
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logp = (logits[:, :-1].float() / temperature).log_softmax(-1)
    return logp.gather(-1, batch.input_ids[:, 1:, None])[..., 0] * batch.completion_mask


@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_chunked_logprobs_match_full_softmax(tiny_model, chunk):
    rollouts = [
        Rollout({}, [1, 5, 6, 7], [8, 9, 10, 11, 12], None, "", "stop"),
        Rollout({}, [1, 5], [3, 4], None, "", "length"),
        Rollout({}, [1, 9, 9, 9, 9, 9, 2], [30], None, "", "stop"),
    ]
    batch = collate(rollouts, pad_id=0)
    got = token_logprobs(tiny_model, batch, 0.7, chunk=chunk)
    want = _full(tiny_model, batch, 0.7)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got[batch.completion_mask == 0] == 0).all()
    w = tiny_model.model.embed_tokens.weight  # tied with the LM head: both paths carry grads
    g_got = torch.autograd.grad(got.sum(), w)[0]
    g_want = torch.autograd.grad(want.sum(), w)[0]
    torch.testing.assert_close(g_got, g_want, atol=1e-4, rtol=1e-3)
    with torch.no_grad():
        torch.testing.assert_close(
            token_logprobs(tiny_model, batch, 0.7, chunk=chunk), got.detach()
        )


@pytest.mark.parametrize("pack", [1, 12, 64])
def test_packed_logprobs_match_padded(tiny_model, pack):
    """Padding-free rows (several sequences per row, restarting positions) give the padded
    result, values and gradients."""
    rollouts = [
        Rollout({}, [1, 5, 6, 7], [8, 9, 10, 11, 12], None, "", "stop"),
        Rollout({}, [1, 5], [3, 4], None, "", "length"),
        Rollout({}, [1, 9, 9, 9, 9, 9, 2], [30], None, "", "stop"),
        Rollout({}, [1, 40, 41], [42, 43, 44], None, "", "stop"),
    ]
    batch = collate(rollouts, pad_id=0)
    want = token_logprobs(tiny_model, batch, 0.9)
    got = token_logprobs(tiny_model, batch, 0.9, pack=pack)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    w = tiny_model.model.layers[0].mlp.up_proj.weight
    g_got = torch.autograd.grad(got.sum(), w)[0]
    g_want = torch.autograd.grad(want.sum(), w)[0]
    torch.testing.assert_close(g_got, g_want, atol=1e-4, rtol=1e-3)
