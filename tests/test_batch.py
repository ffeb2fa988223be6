"""Chunked completion log-probs equal a full log-softmax over the whole logits, with gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from numerics import assert_within, decoder_terms, diff_tol, tol

from r1kit.sampling.rollout import Rollout
from r1kit.train import batch as batch_mod
from r1kit.train.batch import collate, token_logprobs


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
    cfg, T, n_tok = tiny_model.config, batch.input_ids.shape[1], int(batch.completion_mask.sum())
    fwd, bwd = decoder_terms(cfg, T), decoder_terms(cfg, T, backward=True, tokens=n_tok)
    assert_within(got, want, diff_tol(torch.float32, want.abs().max(), fwd), "log-probs")
    assert (got[batch.completion_mask == 0] == 0).all()
    w = tiny_model.model.embed_tokens.weight  # tied with the LM head: both paths carry grads
    g_got = torch.autograd.grad(got.sum(), w)[0]
    g_want = torch.autograd.grad(want.sum(), w)[0]
    assert_within(g_got, g_want, diff_tol(torch.float32, g_want.abs().max(), bwd), "grads")
    with torch.no_grad():  # no checkpointing: the same operations
        again = token_logprobs(tiny_model, batch, 0.7, chunk=chunk)
    assert_within(again, got, diff_tol(torch.float32, got.abs().max(), fwd), "no_grad")


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
    # both float32 paths against the padded path run in float64 (the LM head's log-sum-exp stays
    # float32 there too: inside the float32 bound)
    ref_model = copy.deepcopy(tiny_model).double()
    ref = token_logprobs(ref_model, batch, 0.9)
    w_ref = ref_model.model.layers[0].mlp.up_proj.weight
    g_ref = torch.autograd.grad(ref.sum(), w_ref)[0]
    cfg, T, n_tok = tiny_model.config, batch.input_ids.shape[1], int(batch.completion_mask.sum())
    val_tol = tol(torch.float32, ref.abs().max(), decoder_terms(cfg, T))
    grad_tol = tol(torch.float32, g_ref.abs().max(), decoder_terms(cfg, T, True, n_tok))
    w = tiny_model.model.layers[0].mlp.up_proj.weight
    for p in (0, pack):
        got = token_logprobs(tiny_model, batch, 0.9, pack=p)
        assert_within(got, ref, val_tol, f"log-probs, pack={p}")
        assert_within(torch.autograd.grad(got.sum(), w)[0], g_ref, grad_tol, f"grads, pack={p}")


@pytest.mark.parametrize("keep_positions", [4, 1000])
def test_kept_head_logits_give_the_checkpointed_gradients(tiny_model, monkeypatch, keep_positions):
    """Chunks whose logits are kept for backward (HEAD_KEEP_BYTES) and chunks recomputed there
    give the same log-probs and gradients: some kept and some recomputed, then all kept."""
    rollouts = [
        Rollout({}, [1, 5, 6, 7], [8, 9, 10, 11, 12], None, "", "stop"),
        Rollout({}, [1, 9, 9, 2], [30, 31, 32], None, "", "stop"),
    ]
    batch = collate(rollouts, pad_id=0)
    w = tiny_model.model.embed_tokens.weight  # tied with the LM head
    want = token_logprobs(tiny_model, batch, 0.8, chunk=3)
    g_want = torch.autograd.grad(want.sum(), w)[0]
    vocab = tiny_model.config.vocab_size
    monkeypatch.setattr(batch_mod, "HEAD_KEEP_BYTES", keep_positions * 4 * vocab)
    got = token_logprobs(tiny_model, batch, 0.8, chunk=3)
    g_got = torch.autograd.grad(got.sum(), w)[0]
    cfg, T, n_tok = tiny_model.config, batch.input_ids.shape[1], int(batch.completion_mask.sum())
    fwd, bwd = decoder_terms(cfg, T), decoder_terms(cfg, T, backward=True, tokens=n_tok)
    assert_within(got, want, diff_tol(torch.float32, want.abs().max(), fwd), "log-probs")
    assert_within(g_got, g_want, diff_tol(torch.float32, g_want.abs().max(), bwd), "grads")
