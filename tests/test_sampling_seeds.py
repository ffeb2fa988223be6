"""Seeded sampling draws from the right distribution, and held-out problems get their own seeds.

The paged engine samples by Gumbel-max with counter-based noise (engine/sampler.py: the noise of
sample j, step t, token v hashes (row_seed(seed, j), t, v)). Over many independent requests its
samples must follow softmax(logits / T) cut to the top-p nucleus, computed here exactly with
transformers on each sample's own prefix, at every step; consecutive tokens of one sample and
the n samples of one request must not share noise. Each check compares an empirical mean with
its exact expectation, with a tolerance of 4 standard errors from the number of draws.
"""

from __future__ import annotations

import math

import pytest
import torch

from r1kit.engine import SamplingParams
from r1kit.engine.paged import PagedEngine
from r1kit.engine.sampler import U_MAX, gumbel, row_keys, row_seed
from r1kit.sampling.heldout import eval_params, evaluate, per_problem

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 97
PROMPT = [5, 6, 7, 8, 9]
STEPS = 6  # tokens per sample; the checks look at t = 0, 1 and 5
DRAWS = 4000  # samples per configuration (requests x n)


@pytest.fixture(scope="module")
def model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(5)
    cfg = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.5,
    )
    return Qwen2ForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def engine(model):
    return PagedEngine(model, block_size=4, max_num_seqs=512, kv_memory=64 << 20)


def exact(model, seqs: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """[N, L] token ids -> [N, L, V] the distribution each next token is drawn from: softmax of
    the logits / T, cut to the smallest prefix (by probability) whose mass reaches top_p."""
    with torch.no_grad():
        p = (model(seqs).logits.double() / temperature).softmax(-1)
    s, order = p.sort(-1, descending=True)
    keep = (s.cumsum(-1) - s) < top_p  # the top token always stays
    p = p * torch.zeros_like(keep).scatter(-1, order, keep)
    return p / p.sum(-1, keepdim=True)


def within(x: torch.Tensor, what: str) -> None:
    """x [N]: per-draw differences (observation - its exact expectation), independent across
    draws under a correct sampler: their mean must be within 4 standard errors of 0."""
    se = x.std().item() / math.sqrt(len(x))
    tol = 4 * max(se, 1 / len(x))  # 1/N: an empirical frequency's resolution
    assert abs(x.mean().item()) <= tol, f"{what}: mean difference {x.mean():.4f} > {tol:.4f}"


CONFIGS = [
    # (temperature, top_p, top_k, seeded, n): the held-out protocol (T=0.6, top-p 0.95) seeded
    # with n=1 and n=4 and unseeded; then a flat distribution over 4 tokens (T=5, top-k 4),
    # where noise reused from one step to the next would repeat tokens far above 1/4
    (0.6, 0.95, 0, True, 1),
    (0.6, 0.95, 0, True, 4),
    (0.6, 0.95, 0, False, 4),
    (5.0, 1.0, 4, True, 4),
]


@pytest.mark.parametrize("temperature,top_p,top_k,seeded,n", CONFIGS)
def test_samples_follow_the_distribution(engine, model, temperature, top_p, top_k, seeded, n):
    reqs = DRAWS // n
    params = [
        SamplingParams(
            n=n,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_tokens=STEPS,
            seed=r if seeded else None,
        )
        for r in range(reqs)
    ]
    outs = engine.generate([PROMPT] * reqs, params)
    toks = torch.tensor([s.token_ids for o in outs for s in o.samples])  # [N, STEPS]
    assert toks.shape == (DRAWS, STEPS)
    seqs = torch.cat([torch.tensor(PROMPT).expand(DRAWS, -1), toks], 1)
    if top_k:  # the exact law of top-k: the top_p cut at the mass of the top k tokens
        with torch.no_grad():
            p = (model(seqs).logits.double() / temperature).softmax(-1)
        kth = p.topk(top_k, -1).values[..., -1:]
        p = torch.where(p >= kth, p, 0.0)
        law = p / p.sum(-1, keepdim=True)
    else:
        law = exact(model, seqs, temperature, top_p)
    rows = torch.arange(DRAWS)
    at = len(PROMPT) - 1  # position whose logits give output token 0

    # step 0: every draw has the same prefix: total variation from the exact law, bounded by
    # E[TV] <= 1/2 sum_v sqrt(p_v (1 - p_v) / N), with a factor 4 of margin
    p0 = law[0, at]
    emp = torch.bincount(toks[:, 0], minlength=VOCAB).double() / DRAWS
    tv = 0.5 * (emp - p0).abs().sum().item()
    bound = 0.5 * (p0 * (1 - p0) / DRAWS).sqrt().sum().item()
    assert tv <= 4 * bound, f"step 0: TV {tv:.4f} > {4 * bound:.4f}"

    for t in (0, 1, 5):
        pt = law[rows, at + t]  # [N, V] the law of each draw's token t given its own prefix
        # not closer to greedy: P(token) of the drawn token has expectation sum_v p_v^2
        within(pt[rows, toks[:, t]] - (pt**2).sum(-1), f"step {t}: p(drawn token)")
        # the most likely token as often as its probability says
        top = pt.argmax(-1)
        within((toks[:, t] == top).double() - pt[rows, top], f"step {t}: P(top token)")
        if t:  # no noise carried from step t-1: P(tok_t == tok_{t-1}) = p_t(tok_{t-1})
            prev = toks[:, t - 1]
            within((toks[:, t] == prev).double() - pt[rows, prev], f"step {t}: repeats")
    if n > 1:  # samples of one request do not share noise: P(a == b) = sum_v p_a(v) p_b(v)
        a, b = rows.view(reqs, n)[:, 0], rows.view(reqs, n)[:, 1]
        for t in (0, 1, 5):
            pa, pb = law[a, at + t], law[b, at + t]
            same = (toks[a, t] == toks[b, t]).double()
            within(same - (pa * pb).sum(-1), f"step {t}: samples 0 and 1 agree")


def test_seeded_requests_repeat(engine):
    """The same seed gives the same samples, whatever else is in the batch."""
    sp = SamplingParams(n=4, temperature=0.6, top_p=0.95, max_tokens=STEPS, seed=7)
    alone = engine.generate([PROMPT], sp)[0]
    other = SamplingParams(n=3, temperature=1.0, max_tokens=STEPS, seed=8)
    mixed = engine.generate([[3, 1, 4], PROMPT], [other, sp])[1]
    assert [s.token_ids for s in alone.samples] == [s.token_ids for s in mixed.samples]


def test_top_hash_value_gives_finite_noise(engine, model):
    """At seed 41516's first step the hash of token 94 is the top 24-bit value, whose uniform
    rounded to 1 in float32: the noise was +inf, so a greedy request (noise * 0 = NaN, which
    argmax takes) emitted token 94 instead of the most likely token, and so did any unfiltered
    sampled row. Now it is the largest finite draw."""
    seed, token = 41516, 94
    g = gumbel(row_keys(torch.tensor([row_seed(seed, 0)]), torch.tensor([0])), VOCAB)[0]
    assert torch.isfinite(g).all()
    assert g[token].item() == pytest.approx(-math.log(-math.log(U_MAX)), rel=1e-6)  # the top
    with torch.no_grad():
        top = int(model(torch.tensor([PROMPT])).logits[0, -1].argmax())
    assert top != token
    greedy = SamplingParams(temperature=0.0, max_tokens=1, seed=seed)
    assert engine.generate([PROMPT], greedy)[0].samples[0].token_ids == [top]


def test_heldout_problems_draw_their_own_noise(tiny_model_base, tiny_tokenizer):
    """Two copies of one problem in a seeded held-out evaluation get different samples (one
    seed for all used to give every problem's j-th sample the same noise), and the evaluation
    repeats exactly (base and final models of a run see the same draws per problem)."""
    from r1kit.data.datasets import heldout
    from r1kit.engine import make_engine

    tok = tiny_tokenizer
    problem = heldout("mix", 1)[0]
    engine = make_engine(tiny_model_base, pad_token_id=tok.pad_token_id, kind="paged")
    params = eval_params(4, 48, tok.eos_token_id, seed=1)
    assert per_problem(params, 0).seed != per_problem(params, 1).seed
    assert per_problem(params, 3) == per_problem(params, 3)
    _, first = evaluate(engine, tok, [problem, problem], "r1zero", params)
    _, again = evaluate(engine, tok, [problem, problem], "r1zero", params)
    ids = [r.completion_ids for r in first]
    assert ids == [r.completion_ids for r in again]
    assert ids[:4] != ids[4:]
