"""What is specific to the paged engine (r1kit/engine/paged.py and the pieces behind it), on CPU
with small random-init Qwen3 / Qwen2 / Llama models: the native decoder against transformers'
generate, KV block bookkeeping (prefix sharing, forks, preemption, abort), per-request limits,
input validation, sleep/wake, weight sync on the shared and the copy paths, the async front end
and log-probs."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch
from numerics import assert_within, decoder_terms, diff_tol

from r1kit.engine import SamplingParams, make_engine
from r1kit.engine.async_engine import AsyncEngine
from r1kit.engine.paged import PagedEngine

VOCAB = 97
PAD = 0
MAX_POS = 128
# lengths 10, 8, 1, 5, 13: partial and exactly-full last blocks at block_size 4 and 8
PROMPTS = [
    [5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
    [3, 1, 4, 1, 5, 9, 2, 6],
    [40],
    [7, 7, 8, 9, 1],
    [60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72],
]
NEW = 12


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- models


def _finish(m, seed: int):
    """Randomise what transformers initialises to constants (biases to 0, norm weights to 1),
    so that the native decoder's use of them is actually checked."""
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif "norm" in name:
                p.copy_(1 + torch.randn(p.shape, generator=g) * 0.3)
    m.eval()
    m.generation_config.eos_token_id = None
    m.generation_config.pad_token_id = PAD
    return m


COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # GQA
    max_position_embeddings=MAX_POS,
    initializer_range=0.5,  # large weights: greedy output does not collapse to one token
)


def make_model(arch: str, seed: int = 1):
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    torch.manual_seed(seed)
    if arch == "qwen3":  # q_norm/k_norm; head_dim 16 != hidden / heads
        cfg = Qwen3Config(**COMMON, head_dim=16, tie_word_embeddings=False)
        m = Qwen3ForCausalLM(cfg)
    elif arch == "qwen2":  # q/k/v biases, tied embeddings
        m = Qwen2ForCausalLM(Qwen2Config(**COMMON, tie_word_embeddings=True))
    elif arch == "llama":  # q/k/v/o and MLP biases, untied
        cfg = LlamaConfig(**COMMON, attention_bias=True, mlp_bias=True, tie_word_embeddings=False)
        m = LlamaForCausalLM(cfg)
    else:
        raise ValueError(arch)
    return _finish(m, seed)


def _lp_tol(model, magnitudes: torch.Tensor) -> float:
    """Two computations of the same log-probs (another batch, block layout, cache, or the full
    forward): the same float32 sums in another order, through the decoder over at most MAX_POS
    positions, on values of the given magnitudes."""
    return diff_tol(torch.float32, magnitudes.abs().max(), decoder_terms(model.config, MAX_POS))


@pytest.fixture(scope="module")
def qwen2():
    return make_model("qwen2")


@pytest.fixture(scope="module")
def qwen3():
    return make_model("qwen3")


def engine_for(model, **kw) -> PagedEngine:
    return PagedEngine(model, **{"block_size": 4, "max_num_seqs": 16, **kw})


def hf_greedy(model, prompt: list[int], new: int = NEW) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=new,
        min_new_tokens=new,
        pad_token_id=PAD,
    )
    return out[0, len(prompt) :].tolist()


def greedy(**kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, **{"max_tokens": NEW, **kw})


def tokens(outs) -> list[list[list[int]]]:
    return [[s.token_ids for s in o.samples] for o in outs]


def all_free(eng: PagedEngine) -> bool:
    return eng.alloc.num_free == eng.alloc.num_blocks - 1


def per_block_bytes(eng: PagedEngine) -> int:
    m = eng.model
    return 2 * m.num_layers * eng.block_size * m.num_kv_heads * m.head_dim * 4  # fp32


# --------------------------------------------------------------------------- 1. correctness


@pytest.mark.parametrize("arch", ["qwen3", "qwen2", "llama"])
def test_greedy_matches_hf_generate(arch):
    model = make_model(arch)
    ref = [hf_greedy(model, p) for p in PROMPTS]
    for r in ref:
        assert len(set(r)) >= 3, "reference is degenerate; the comparison would be weak"
    eng = engine_for(model)
    outs = eng.generate(PROMPTS, greedy(n=3))  # all prompts batched, 3 greedy samples each
    for p, o, r in zip(PROMPTS, outs, ref):
        assert o.prompt_ids == p
        assert len(o.samples) == 3
        for s in o.samples:  # the n greedy samples are identical, and equal to HF
            assert s.token_ids == r
            assert s.finish_reason == "length" and s.prompt_len == len(p)
    # one prompt at a time gives the same
    for p, r in zip(PROMPTS, ref):
        assert eng.generate([p], greedy())[0].samples[0].token_ids == r
    assert all_free(eng)


@pytest.mark.parametrize("block_size", [1, 8, 32])
def test_block_size_does_not_change_output(qwen2, block_size):
    ref = tokens(engine_for(qwen2).generate(PROMPTS, greedy(n=2)))
    eng = engine_for(qwen2, block_size=block_size)
    assert tokens(eng.generate(PROMPTS, greedy(n=2))) == ref
    assert all_free(eng)


def test_continuous_batching_matches_each_alone(qwen3):
    """With 2 sequence slots, requests are admitted as others finish (prefills between decode
    steps, the decode batch changing): each seeded request gives what it gives alone."""
    params = [
        SamplingParams(temperature=1.0, max_tokens=m, seed=100 + i, logprobs=True)
        for i, m in enumerate([3, 9, 5, 12, 7])
    ]
    eng = engine_for(qwen3, max_num_seqs=2)
    alone = [eng.generate([p], sp)[0].samples[0] for p, sp in zip(PROMPTS, params)]
    batched = eng.generate(PROMPTS, params)
    for a, b in zip(alone, batched):
        assert b.samples[0].token_ids == a.token_ids
        lp, ref = torch.as_tensor(b.samples[0].logprobs), torch.as_tensor(a.logprobs)
        assert_within(lp, ref, _lp_tol(qwen3, ref), "log-probs")
    assert all_free(eng)


# --------------------------------------------------------------------------- 2. prefix sharing


def test_prefix_sharing_and_fork(qwen2):
    eng = engine_for(qwen2)
    free0 = eng.alloc.num_free
    assert free0 == eng.alloc.num_blocks - 1
    prompt = PROMPTS[0]  # 10 tokens: 2 full blocks + 2 tokens in a third
    rid = eng.add_request(prompt, SamplingParams(n=4, temperature=1.0, max_tokens=8, seed=5))
    eng.step()  # the prefill
    seqs = eng.requests[rid].seqs
    head = seqs[0].blocks
    assert len(head) == 3
    for s in seqs:
        assert len(s.blocks) == 3 and s.blocks[:2] == head[:2]
    thirds = [s.blocks[2] for s in seqs]
    assert len(set(thirds)) == 4 and not set(thirds) & set(head[:2])
    assert 0 not in {b for s in seqs for b in s.blocks}  # block 0 is reserved
    assert [eng.alloc._ref[b] for b in head[:2]] == [4, 4]
    assert [eng.alloc._ref[b] for b in thirds] == [1, 1, 1, 1]
    assert eng.alloc.num_free == free0 - 2 - 4
    # every fork holds a copy of the prompt's partial block (its 2 cached tokens)
    k, v = eng.runner.k, eng.runner.v
    for b in thirds[1:]:
        assert torch.equal(k[:, b, :2], k[:, thirds[0], :2])
        assert torch.equal(v[:, b, :2], v[:, thirds[0], :2])
    assert k[:, thirds[0], :2].abs().sum() > 0
    shared_k = k[:, head[:2]].clone()
    # decoding writes only into each sample's own block, never the shared ones
    eng.step()
    assert torch.equal(eng.runner.k[:, head[:2]], shared_k)
    # slot 2 of each own block now holds the K of that sample's first output token
    first = [s.tokens[len(prompt)] for s in seqs]
    pairs = [(i, j) for i in range(4) for j in range(i) if first[i] != first[j]]
    assert pairs, "the samples' first tokens should differ"
    for i, j in pairs:
        assert not torch.equal(eng.runner.k[:, thirds[i], 2], eng.runner.k[:, thirds[j], 2])
    while eng.has_work:
        eng.step()
    assert rid not in eng.requests
    assert all_free(eng)
    assert all(eng.alloc._ref[b] == 0 for b in head + thirds)


def test_prompt_of_whole_blocks_shares_all_then_grows(qwen2):
    eng = engine_for(qwen2)
    free0 = eng.alloc.num_free
    rid = eng.add_request(PROMPTS[1], greedy(n=3))  # 8 tokens = 2 full blocks, no fork copy
    eng.step()
    seqs = eng.requests[rid].seqs
    assert all(s.blocks == seqs[0].blocks and len(s.blocks) == 2 for s in seqs)
    assert eng.alloc.num_free == free0 - 2
    eng.step()  # the first decode: each sample takes a block of its own
    own = [s.blocks[2] for s in seqs]
    assert len(set(own)) == 3 and eng.alloc.num_free == free0 - 2 - 3
    while eng.has_work:
        eng.step()
    assert all_free(eng)
    # generate() on the same engine ends with every block back, too
    outs = eng.generate(PROMPTS, SamplingParams(n=4, temperature=1.0, max_tokens=6, seed=1))
    assert [len(o.samples) for o in outs] == [4] * len(PROMPTS)
    assert all_free(eng) and not eng.requests and not eng.has_work


# --------------------------------------------------------------------------- 3. preemption


def test_preemption_keeps_outputs(qwen2):
    big = engine_for(qwen2)
    small = engine_for(qwen2, kv_memory=12 * per_block_bytes(big))
    assert small.alloc.num_blocks == 12  # 11 usable; the requests below need ~38 at the end
    prompts = PROMPTS[:2] + [PROMPTS[3]]
    sampled = SamplingParams(n=2, temperature=1.0, max_tokens=16, seed=11, logprobs=True)
    want = big.generate(prompts, sampled)
    got = small.generate(prompts, sampled)
    assert small.scheduler.num_preempted > 0
    assert tokens(got) == tokens(want)
    for o, w in zip(got, want):
        for s, t in zip(o.samples, w.samples):
            assert len(s.token_ids) == 16 and s.finish_reason == "length"
            ref = torch.as_tensor(t.logprobs)
            assert_within(torch.as_tensor(s.logprobs), ref, _lp_tol(qwen2, ref), "log-probs")
    assert all_free(small)
    before = small.scheduler.num_preempted
    assert tokens(small.generate(prompts, greedy(n=2, max_tokens=16))) == tokens(
        big.generate(prompts, greedy(n=2, max_tokens=16))
    )
    assert small.scheduler.num_preempted > before
    assert all_free(small) and not small.requests
    assert big.scheduler.num_preempted == 0


def test_preempted_sequence_goes_back_to_the_head_of_the_queue(qwen2):
    eng = engine_for(qwen2, kv_memory=12 * 1024)  # 11 usable blocks of 4 tokens
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[3], PROMPTS[4]]
    params = [greedy(n=2, max_tokens=10)] * 3 + [greedy(max_tokens=10)]
    rids = [eng.add_request(p, sp) for p, sp in zip(prompts, params)]
    reqs = [eng.requests[r] for r in rids]
    eng.step()  # prefills the first three (4 + 2 + 3 blocks); the fourth needs 4 of the 2 left
    assert len(eng.scheduler.running) == 6 and eng.alloc.num_free == 2
    assert [g[0] for g in eng.scheduler.waiting] == [reqs[3].seqs[0]]
    while eng.scheduler.num_preempted == 0:
        eng.step()
    # the victims are the most recently admitted sequences (both samples of the third request:
    # preempting the last alone frees only its fork block), and they wait, in admission order,
    # ahead of the request that has been waiting all along
    victims = reqs[2].seqs
    assert eng.scheduler.num_preempted == 2
    assert list(eng.scheduler.waiting) == [[victims[0]], [victims[1]], [reqs[3].seqs[0]]]
    for v in victims:
        assert v.blocks == [] and v.num_cached == 0 and v.num_output > 0 and v.epoch == 1
        assert v not in eng.scheduler.running
    while eng.has_work:
        eng.step()
    want = engine_for(qwen2).generate(prompts, params)
    assert [[s.output for s in r.seqs] for r in reqs] == tokens(want)
    assert all_free(eng) and not eng.requests


def test_request_larger_than_the_cache(qwen2):
    eng = engine_for(qwen2, kv_memory=4 * 1024)  # 3 usable blocks of 4 tokens
    assert eng.alloc.num_blocks == 4
    with pytest.raises(MemoryError):
        eng.generate([PROMPTS[0]], greedy(max_tokens=30))  # would need 10 blocks
    assert all_free(eng) and not eng.requests and not eng.has_work
    # the engine still serves what fits
    out = eng.generate([PROMPTS[3]], greedy(max_tokens=6))[0].samples[0]
    assert out.token_ids == hf_greedy(qwen2, PROMPTS[3], 6)


# --------------------------------------------------------------------------- 4. abort


def test_abort_frees_blocks(qwen2):
    eng = engine_for(qwen2)
    keep = eng.add_request(PROMPTS[0], greedy(max_tokens=20))
    drop = eng.add_request(PROMPTS[4], SamplingParams(n=2, temperature=1.0, max_tokens=20))
    for _ in range(5):  # a prefill, then 4 decodes: 17 tokens cached per sample
        eng.step()
    seqs = eng.requests[drop].seqs
    assert [len(s.blocks) for s in seqs] == [5, 5]
    held = {b for s in seqs for b in s.blocks}  # the samples share the prompt's 3 full blocks
    assert len(held) == 3 + 2 + 2  # and each has its fork of the 4th and a 5th of its own
    free = eng.alloc.num_free
    eng.abort(drop)
    assert eng.alloc.num_free == free + len(held)
    assert drop not in eng.requests
    assert all(s.finish_reason == "abort" and not s.blocks for s in seqs)
    eng.abort("no-such-request")  # unknown ids are ignored
    eng.abort(drop)  # so is a second abort
    assert eng.alloc.num_free == free + len(held)
    req = eng.requests[keep]
    while eng.has_work:
        eng.step()
    (s,) = req.seqs
    assert s.output == hf_greedy(qwen2, PROMPTS[0], 20) and s.finish_reason == "length"
    assert all_free(eng) and not eng.requests


def test_abort_waiting_request(qwen2):
    eng = engine_for(qwen2, max_num_seqs=1)
    first = eng.add_request(PROMPTS[0], greedy())
    second = eng.add_request(PROMPTS[1], greedy())
    eng.step()
    assert eng.requests[second].seqs[0].blocks == []  # no slot yet: still waiting
    eng.abort(second)
    assert not eng.scheduler.waiting
    req = eng.requests[first]
    while eng.has_work:
        eng.step()
    assert req.seqs[0].output == hf_greedy(qwen2, PROMPTS[0])
    assert all_free(eng) and not eng.requests


# --------------------------------------------------------------------------- 5. limits


def test_stop_tokens_and_max_tokens_per_request(qwen3):
    ref = [hf_greedy(qwen3, p, 20) for p in PROMPTS[:4]]
    r0 = ref[0]
    i = next(i for i in range(2, 15) if r0[i] not in r0[:i])  # first emitted mid-way
    params = [
        greedy(max_tokens=20, stop_token_ids=(r0[i], VOCAB + 3)),
        greedy(max_tokens=5),
        greedy(max_tokens=20, stop_token_ids=(ref[2][0],)),  # stops on its first token
        greedy(max_tokens=20),
    ]
    eng = engine_for(qwen3)
    outs = eng.generate(PROMPTS[:4], params)
    got = [o.samples[0] for o in outs]
    assert got[0].token_ids == r0[: i + 1] and got[0].finish_reason == "stop"
    assert got[1].token_ids == ref[1][:5] and got[1].finish_reason == "length"
    assert got[2].token_ids == ref[2][:1] and got[2].finish_reason == "stop"
    assert got[3].token_ids == ref[3] and got[3].finish_reason == "length"
    assert all_free(eng)


def test_max_model_len_ends_with_length(qwen2):
    eng = engine_for(qwen2, max_model_len=16)
    outs = eng.generate([PROMPTS[0], list(range(1, 16))], greedy(max_tokens=100))
    a, b = outs[0].samples[0], outs[1].samples[0]
    assert len(a.token_ids) == 6 and a.finish_reason == "length"  # 10 + 6 = 16
    assert a.token_ids == hf_greedy(qwen2, PROMPTS[0], 6)
    assert len(b.token_ids) == 1 and b.finish_reason == "length"
    assert all_free(eng)


# --------------------------------------------------------------------------- 6. bad input


def test_bad_requests(qwen2):
    eng = engine_for(qwen2, max_model_len=16, max_num_seqs=4)
    ok = greedy(max_tokens=2)
    for prompt, params in [
        ([], ok),
        (list(range(1, 17)), ok),  # == max_model_len
        (list(range(1, 30)), ok),
        ([1, VOCAB], ok),
        ([1, -1, 2], ok),
        ([1, 2], greedy(n=5)),  # n > max_num_seqs
    ]:
        with pytest.raises(ValueError):
            eng.add_request(prompt, params)
        with pytest.raises(ValueError):
            eng.generate([PROMPTS[1], prompt], [ok, params])
    assert not eng.requests and not eng.has_work and all_free(eng)
    eng.add_request([1, 2], ok, request_id="x")
    with pytest.raises(ValueError, match="already"):
        eng.add_request([3, 4], ok, request_id="x")
    assert eng.requests["x"].prompt_ids == [1, 2]
    with pytest.raises(RuntimeError):
        eng.sleep()  # requests in flight
    assert not eng.asleep and eng.runner.k is not None
    while eng.has_work:
        eng.step()
    eng.sleep()
    with pytest.raises(RuntimeError):
        eng.add_request([1, 2], ok)
    assert not eng.requests
    eng.wake()
    assert len(eng.generate([[1, 2]], ok)[0].samples[0].token_ids) == 2


def test_make_engine_kinds(qwen2):
    from transformers import GPT2Config, GPT2LMHeadModel

    from r1kit.engine.simple import HFEngine

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    ).eval()
    with pytest.raises(ValueError, match="gpt2"):
        make_engine(gpt2, kind="paged")
    eng = make_engine(gpt2, kind="auto", block_size=4)
    assert isinstance(eng, HFEngine)
    out = eng.generate([PROMPTS[3]], greedy(max_tokens=4))[0].samples[0].token_ids
    gpt2.generation_config.eos_token_id = None
    assert out == hf_greedy(gpt2, PROMPTS[3], 4)
    with pytest.raises(ValueError, match="nosuch"):
        make_engine(qwen2, kind="nosuch")
    assert isinstance(make_engine(qwen2, kind="auto", block_size=4), PagedEngine)
    assert isinstance(make_engine(qwen2, kind="hf"), HFEngine)
    paged = make_engine(qwen2, kind="paged", block_size=8, max_num_seqs=4)
    assert isinstance(paged, PagedEngine) and paged.block_size == 8


# --------------------------------------------------------------------------- 7. sleep / wake


def test_sleep_and_wake(qwen3):
    eng = engine_for(qwen3)
    before = tokens(eng.generate(PROMPTS, greedy(n=2)))
    kv = eng.runner.kv_bytes
    assert kv == eng.alloc.num_blocks * per_block_bytes(eng)
    eng.sleep()
    assert eng.asleep and eng.runner.k is None and eng.runner.v is None
    assert eng.runner.kv_bytes == 0
    eng.sleep()  # idempotent
    eng.wake()
    assert not eng.asleep and eng.runner.kv_bytes == kv
    assert tokens(eng.generate(PROMPTS, greedy(n=2))) == before
    eng.wake()  # a no-op when awake
    assert all_free(eng)


# --------------------------------------------------------------------------- 8. weight sync


def _adamw_step(model, lr: float = 0.05) -> None:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    ids = torch.tensor([PROMPTS[0] + PROMPTS[4]])
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()


def _perturb(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)


def test_weight_sync_shared_tensors():
    model = make_model("qwen2", seed=2)
    eng = engine_for(model)
    emb = model.model.embed_tokens.weight
    assert eng.model.embed.data_ptr() == emb.data_ptr()
    assert (
        eng.model.layers[0].wq.data_ptr()
        == model.model.layers[0].self_attn.q_proj.weight.data_ptr()
    )
    old = [eng.generate([p], greedy())[0].samples[0].token_ids for p in PROMPTS]
    _adamw_step(model)  # an optimizer step updates the parameters in place
    new = [hf_greedy(model, p) for p in PROMPTS]
    assert new != old, "the step should change greedy output, else this checks nothing"
    assert [eng.generate([p], greedy())[0].samples[0].token_ids for p in PROMPTS] == new
    assert eng.sync_weights() == 0
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    half = [hf_greedy(model, p) for p in PROMPTS]
    assert half != new
    assert tokens(eng.generate(PROMPTS, greedy())) == [[h] for h in half]


def test_weight_sync_copies_when_dtype_differs():
    model = make_model("qwen2", seed=3)
    eng = engine_for(model, dtype=torch.bfloat16)
    assert eng.model.embed.dtype == torch.bfloat16
    assert eng.model.embed.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    old = tokens(eng.generate(PROMPTS, greedy()))
    _perturb(model, seed=3)
    fresh = tokens(engine_for(model, dtype=torch.bfloat16).generate(PROMPTS, greedy()))
    assert fresh != old, "the change should show in greedy output, else this checks nothing"
    assert tokens(eng.generate(PROMPTS, greedy())) == old  # stale until synced
    n = eng.sync_weights()
    assert n == len(list(model.parameters()))  # every tensor once (embeddings are tied)
    assert tokens(eng.generate(PROMPTS, greedy())) == fresh
    assert eng.sync_weights() == n  # copying again changes nothing
    assert tokens(eng.generate(PROMPTS, greedy())) == fresh


def test_weight_sync_rebinds_to_another_model():
    a, b = make_model("qwen3", seed=3), make_model("qwen3", seed=5)
    eng = engine_for(a)
    ref_a = [hf_greedy(a, p) for p in PROMPTS]
    ref_b = [hf_greedy(b, p) for p in PROMPTS]
    assert ref_a != ref_b
    assert tokens(eng.generate(PROMPTS, greedy())) == [[r] for r in ref_a]
    assert eng.sync_weights(b) == 0  # same dtype and device: b's tensors are shared
    assert tokens(eng.generate(PROMPTS, greedy())) == [[r] for r in ref_b]
    _perturb(a, seed=5)  # the old model no longer matters
    assert tokens(eng.generate(PROMPTS, greedy())) == [[r] for r in ref_b]
    _perturb(b, seed=6)  # the new one is seen in place
    ref_b2 = [hf_greedy(b, p) for p in PROMPTS]
    assert ref_b2 != ref_b
    assert tokens(eng.generate(PROMPTS, greedy())) == [[r] for r in ref_b2]
    # the copy path re-binds too
    low = engine_for(a, dtype=torch.bfloat16)
    assert low.sync_weights(b) > 0
    want = tokens(engine_for(b, dtype=torch.bfloat16).generate(PROMPTS, greedy()))
    assert tokens(low.generate(PROMPTS, greedy())) == want


# --------------------------------------------------------------------------- 9. async engine


def _join(deltas) -> list[tuple[list[int], list[float] | None, str]]:
    out = None
    for d in deltas:
        if out is None:
            out = [[list(s.token_ids), list(s.logprobs or []), s.finish_reason] for s in d.samples]
            continue
        for acc, s in zip(out, d.samples):
            acc[0] += s.token_ids
            acc[1] += s.logprobs or []
            acc[2] = s.finish_reason
    return out


def test_async_streams_match_generate(qwen2):
    pa = SamplingParams(n=2, temperature=1.0, max_tokens=14, seed=21, logprobs=True)
    pb = SamplingParams(n=1, temperature=0.8, max_tokens=9, seed=22, stop_token_ids=(5,))
    eng = engine_for(qwen2)
    want = eng.generate([PROMPTS[0], PROMPTS[4]], [pa, pb])
    aeng = AsyncEngine(eng)

    async def collect(prompt, params):
        return [d async for d in aeng.stream(prompt, params)]

    async def main():
        return await asyncio.gather(
            collect(PROMPTS[0], pa), collect(PROMPTS[4], pb), aeng.generate(PROMPTS[3], pa)
        )

    try:
        da, db, whole = asyncio.run(main())
    finally:
        aeng.close()
    assert len(da) > 1, "deltas should arrive step by step"
    for deltas, w in [(da, want[0]), (db, want[1])]:
        joined = _join(deltas)
        assert [j[0] for j in joined] == [s.token_ids for s in w.samples]
        assert [j[2] for j in joined] == [s.finish_reason for s in w.samples]
        for j, s in zip(joined, w.samples):
            if s.logprobs is not None:
                ref = torch.as_tensor(s.logprobs)
                assert_within(torch.as_tensor(j[1]), ref, _lp_tol(qwen2, ref), "log-probs")
    assert [s.token_ids for s in whole.samples] == tokens(eng.generate([PROMPTS[3]], pa))[0]
    assert all_free(eng) and not eng.requests


def test_async_early_exit_aborts(qwen2):
    params = SamplingParams(temperature=1.0, max_tokens=110, seed=3)

    async def leave_early(aeng, eng):
        async for _ in aeng.stream(PROMPTS[0], params, request_id="long"):
            req = eng.requests["long"]
            break  # the client goes away after the first delta
        deadline = time.monotonic() + 5
        while ("long" in eng.requests or not all_free(eng)) and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        return req

    # the abort takes effect at once, not when the engine's thread would next go idle
    # (repeated: whether a waiting thread gets a busy lock is up to the OS scheduler)
    for trial in range(8):
        eng = engine_for(qwen2)
        aeng = AsyncEngine(eng)
        try:
            req = asyncio.run(leave_early(aeng, eng))
        finally:
            aeng.close()
        assert not aeng._thread.is_alive()
        (s,) = req.seqs
        assert s.finish_reason == "abort" and s.num_output <= 40, (trial, s.num_output)
        assert "long" not in eng.requests and "long" not in aeng._subs and all_free(eng)
    # and it keeps serving
    aeng = AsyncEngine(eng)
    try:
        out = asyncio.run(aeng.generate(PROMPTS[3], greedy(max_tokens=5)))
    finally:
        aeng.close()
    assert out.samples[0].token_ids == hf_greedy(qwen2, PROMPTS[3], 5)


def test_async_queue_limit_and_close(qwen2):
    eng = engine_for(qwen2)
    aeng = AsyncEngine(eng, max_waiting=0)

    async def main():
        with pytest.raises(OverflowError):
            aeng.add(PROMPTS[0], greedy())
        with pytest.raises(OverflowError):
            async for _ in aeng.stream(PROMPTS[0], greedy()):
                pass

    try:
        asyncio.run(main())
        assert not eng.requests and not eng.has_work
        assert aeng._thread.is_alive()
    finally:
        aeng.close()
    assert not aeng._thread.is_alive()


# --------------------------------------------------------------------------- 10. log-probs


def test_logprobs_of_n_samples_match_forward(qwen3):
    temp = 0.8
    eng = engine_for(qwen3)
    params = SamplingParams(n=3, temperature=temp, max_tokens=NEW, seed=9, logprobs=True)
    outs = eng.generate(PROMPTS, params)
    distinct = 0
    for p, o in zip(PROMPTS, outs):
        distinct += len({tuple(s.token_ids) for s in o.samples}) > 1
        for s in o.samples:
            assert len(s.logprobs) == len(s.token_ids) == NEW
            full = torch.tensor([p + s.token_ids])
            with torch.no_grad():
                logits = qwen3(input_ids=full).logits[0].float()
            pred = logits[len(p) - 1 : -1]  # the positions that predicted each sampled token
            want = (pred / temp).log_softmax(-1).gather(1, torch.tensor(s.token_ids)[:, None])
            bound = _lp_tol(qwen3, pred / temp)  # |logit|: what the log-sum-exp carries
            assert_within(torch.tensor(s.logprobs), want[:, 0], bound, "log-probs")
    assert distinct >= 3, "seeded samples of one prompt should differ"
    assert tokens(eng.generate(PROMPTS, params)) == tokens(outs)  # and repeat


def test_next_delta_merges_what_queued_up_and_stops_at_an_error():
    from r1kit.engine.async_engine import next_delta
    from r1kit.engine.types import RequestOutput, Sample

    def d(ids, reason="length"):
        return RequestOutput([1], [Sample(list(ids), [0.0] * len(ids), reason)])

    async def main():
        q: asyncio.Queue = asyncio.Queue()
        for item in [(d([5]), False), (d([6, 7]), False), (d([8], "stop"), True), (d([9]), True)]:
            q.put_nowait(item)
        first, done = await next_delta(q)  # three deltas up to the finished one, as one
        assert done and first.samples[0].token_ids == [5, 6, 7, 8]
        assert first.samples[0].finish_reason == "stop" and len(first.samples[0].logprobs) == 4
        q2: asyncio.Queue = asyncio.Queue()
        err = RuntimeError("boom")
        for item in [(d([5]), False), (err, True), (d([6]), False)]:
            q2.put_nowait(item)
        item, done = await next_delta(q2)
        assert item is err and done and q2.qsize() == 1

    asyncio.run(main())
