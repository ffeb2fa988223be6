"""Automatic prefix caching in the paged engine (r1kit/engine/blocks.py, scheduler.py), on CPU
with a small random-init Qwen2: exact hit counts, the same greedy tokens (and sampled log-probs)
with and without the cache, same-step sharing for RL groups, LRU eviction under memory pressure
while requests run, and invalidation when the weights change."""

from __future__ import annotations

import pytest
import torch

from r1kit.engine import SamplingParams
from r1kit.engine.paged import PagedEngine

pytestmark = pytest.mark.usefixtures("one_thread")

BS = 4  # block size: a 10-token prompt has 2 full blocks and 2 tokens in a third
SYSTEM = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
NEW = 8


@pytest.fixture(scope="module")
def model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(3)
    cfg = Qwen2Config(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.5,  # large weights: greedy output does not collapse to one token
        tie_word_embeddings=True,
    )
    m = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # non-zero biases, so the cached K/V carry them too
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape) * 0.5)
    return m


def engine(model, **kw) -> PagedEngine:
    return PagedEngine(model, **{"block_size": BS, "max_num_seqs": 16, **kw})


def greedy(n: int = NEW) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=n)


def hits(outs) -> list[int]:
    return [o.num_cached_tokens for o in outs]


def test_hit_counts_are_exact_over_turns(model):
    eng = engine(model)
    (o1,) = eng.generate([SYSTEM], greedy())
    assert o1.num_cached_tokens == 0
    # the same prompt again: its 2 full blocks hit; the last token is always recomputed
    (o2,) = eng.generate([SYSTEM], greedy())
    assert o2.num_cached_tokens == 8
    assert o2.samples[0].token_ids == o1.samples[0].token_ids
    # turn 2 resends turn 1 (10 prompt + 8 output = 18 tokens) and adds 5: the 4 full blocks
    # of turn 1 (16 tokens) were cached, the prompt's and the decoded ones
    turn2 = SYSTEM + o1.samples[0].token_ids + [20, 21, 22, 23, 24]
    (o3,) = eng.generate([turn2], greedy())
    assert o3.num_cached_tokens == 16
    # a prompt of whole blocks that is entirely cached still computes its last block
    (o4,) = eng.generate([turn2[:20]], greedy())
    assert o4.num_cached_tokens == 16
    # a different first block shares nothing after it (the hash chains the prefix)
    (o5,) = eng.generate([[1] + turn2[1:]], greedy())
    assert o5.num_cached_tokens == 0
    cold = engine(model, prefix_cache=False)
    want = cold.generate([SYSTEM, turn2, turn2[:20], [1] + turn2[1:]], greedy())
    assert hits(want) == [0, 0, 0, 0]
    got = [o1, o3, o4, o5]
    assert [o.samples[0].token_ids for o in got] == [o.samples[0].token_ids for o in want]
    assert eng.alloc.num_free == eng.alloc.num_blocks - 1  # cached blocks count as free


def test_sampled_outputs_and_logprobs_match_without_cache(model):
    """Multi-turn prompts sharing a system prompt, n=3 sampled with log-probs: the same tokens
    with the cache as without, log-probs equal to float32 rounding (the cached prefix's K/V
    are the same numbers; only the attention's summation order differs)."""
    prompts = [SYSTEM + [30 + i, 31, 32 + i] for i in range(3)]
    prompts += [SYSTEM + [30, 31, 32, 40, 41, 42, 43, 44, 45]]
    params = SamplingParams(n=3, temperature=1.0, max_tokens=NEW, seed=7, logprobs=True)
    warm, cold = engine(model), engine(model, prefix_cache=False)
    for _ in range(2):  # round 2 hits what round 1 cached
        got = [warm.generate([p], params)[0] for p in prompts]
        want = [cold.generate([p], params)[0] for p in prompts]
        for g, w in zip(got, want):
            for a, b in zip(g.samples, w.samples):
                assert a.token_ids == b.token_ids
                torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
    assert hits(got) == [12, 12, 12, 16]  # SYSTEM + 2 of its first turn's outputs, etc.
    assert hits(want) == [0, 0, 0, 0]


def test_rl_group_shares_the_prefill_of_one_step(model):
    """G copies of one prompt in one batch (an RL group): the first computes the prompt, the
    others take its full blocks in the same prefill step."""
    eng = engine(model)
    params = SamplingParams(temperature=1.0, max_tokens=NEW, seed=1)
    outs = eng.generate([SYSTEM] * 4, params)
    assert hits(outs) == [0, 8, 8, 8]
    want = engine(model, prefix_cache=False).generate([SYSTEM] * 4, params)
    assert [o.samples[0].token_ids for o in outs] == [o.samples[0].token_ids for o in want]


def test_eviction_under_pressure_never_corrupts_running_requests(model):
    """A cache of 11 usable blocks: finished requests' blocks are kept, then evicted (oldest
    first) for the running ones, with preemptions on top; every output equals a large cold
    engine's."""
    cold = engine(model, prefix_cache=False)
    per_block = 2 * 2 * BS * 2 * 8 * 4  # k+v, layers, tokens, kv heads, head dim, fp32
    small = engine(model, kv_memory=12 * per_block)
    assert small.alloc.num_blocks == 12
    prompts = [SYSTEM[: 5 + i] + [50 + i] * (i % 3 + 1) for i in range(6)]
    params = SamplingParams(n=2, temperature=1.0, max_tokens=12, seed=3, logprobs=True)
    hit = 0
    for batch in (prompts[:3], prompts[3:], prompts[:3], prompts[::2]):
        got = small.generate(batch, params)
        hit += sum(hits(got))
        want = cold.generate(batch, params)
        for g, w in zip(got, want):
            for a, b in zip(g.samples, w.samples):
                assert a.token_ids == b.token_ids
                torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
    assert hit > 0 and small.alloc.num_evicted > 0 and small.scheduler.num_preempted > 0
    assert small.alloc.num_free == small.alloc.num_blocks - 1
    # running requests' blocks are never evicted: each live block has one owner or is shared
    rid = small.add_request(prompts[0], params)
    small.step()
    live = {b for s in small.requests[rid].seqs for b in s.blocks}
    assert all(small.alloc._ref[b] > 0 for b in live) and not live & set(small.alloc._idle)
    small.abort(rid)


def _adamw_step(model) -> None:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    ids = torch.tensor([SYSTEM * 3])
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()


def test_weight_update_invalidates_the_cache():
    """Rollouts after a weight update never reuse K/V of the old weights: on the shared-tensor
    path an optimizer step is seen without any call, on the copy path at `sync_weights`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(4)
    cfg = Qwen2Config(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.5,
    )
    model = Qwen2ForCausalLM(cfg).eval()
    shared, copied = engine(model), engine(model, dtype=torch.float64)
    for eng in (shared, copied):
        eng.generate([SYSTEM], greedy())
        assert hits(eng.generate([SYSTEM], greedy())) == [8]
    _adamw_step(model)
    want = engine(model, prefix_cache=False).generate([SYSTEM], greedy())[0].samples[0]
    (o,) = shared.generate([SYSTEM], greedy())  # no sync call: the version counters moved
    assert o.num_cached_tokens == 0 and o.samples[0].token_ids == want.token_ids
    copied.sync_weights()
    (o,) = copied.generate([SYSTEM], greedy())
    assert o.num_cached_tokens == 0
    assert hits(copied.generate([SYSTEM], greedy())) == [8]  # the cache fills again
    copied.sleep()  # the KV memory goes, and the cached prefixes with it
    copied.wake()
    assert hits(copied.generate([SYSTEM], greedy())) == [0]


def test_hf_fallback_reports_no_hits(model):
    from r1kit.engine import make_engine

    eng = make_engine(model, kind="hf")
    outs = eng.generate([SYSTEM, SYSTEM], greedy(4))
    assert hits(outs) == [0, 0]
