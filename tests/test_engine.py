"""Both engines (paged, and the simple KV-cached HF loop) against transformers' own generate,
and the sampler."""

from __future__ import annotations

import pytest
import torch
from numerics import assert_within, decoder_terms, diff_tol

from r1kit.engine import SamplingParams, make_engine
from r1kit.engine.sampler import SamplingRows, gumbel, row_keys, sample

VOCAB = 97
PAD = 0  # never appears in the prompts below
PROMPTS = [[5, 6, 7], [10, 11, 12, 13, 14, 15, 16], [20, 21, 22, 23, 24], [40]]
NEW = 12


pytestmark = pytest.mark.usefixtures("one_thread")


def _qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # GQA
        tie_word_embeddings=True,
        max_position_embeddings=128,
        initializer_range=0.5,  # large weights: greedy output does not collapse to one token
    )
    return Qwen2ForCausalLM(cfg)


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=False,
        max_position_embeddings=128,
        initializer_range=0.5,
    )
    return LlamaForCausalLM(cfg)


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def model(request):
    torch.manual_seed(0)
    m = {"qwen2": _qwen2, "llama": _llama}[request.param]().eval()
    if request.param == "qwen2":
        assert m.lm_head.weight is m.model.embed_tokens.weight
    else:
        assert m.lm_head.weight is not m.model.embed_tokens.weight
    m.generation_config.eos_token_id = None
    m.generation_config.pad_token_id = PAD
    return m


@pytest.fixture(scope="module")
def reference(model):
    """Greedy continuations from transformers' generate, one unpadded prompt at a time."""
    out = []
    for p in PROMPTS:
        ids = torch.tensor([p])
        gen = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=NEW,
            min_new_tokens=NEW,
            pad_token_id=PAD,
        )
        out.append(gen[0, len(p) :].tolist())
    for r in out:
        assert len(r) == NEW
        assert len(set(r)) >= 3, "reference is degenerate; the comparison would be weak"
    return out


@pytest.fixture(scope="module", params=["hf", "paged"])
def engine(model, request):
    kw = {"block_size": 4} if request.param == "paged" else {}  # prompts span several blocks
    eng = make_engine(model, pad_token_id=PAD, kind=request.param, **kw)
    assert type(eng).__name__ == {"hf": "HFEngine", "paged": "PagedEngine"}[request.param]
    return eng


def greedy(**kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, **{"max_tokens": NEW, **kw})


def test_greedy_matches_hf_generate(engine, reference):
    outs = engine.generate(PROMPTS, greedy())
    assert len(outs) == len(PROMPTS)
    for p, o, ref in zip(PROMPTS, outs, reference):
        assert o.prompt_ids == p
        (s,) = o.samples
        assert s.token_ids == ref
        assert s.finish_reason == "length" and s.prompt_len == len(p)
        assert s.logprobs is None
    # one prompt alone gives the same as in the padded batch
    assert engine.generate([PROMPTS[1]], greedy())[0].samples[0].token_ids == reference[1]


def test_engine_leaves_training_mode(engine, model):
    model.train()
    try:
        engine.generate([PROMPTS[0]], greedy(max_tokens=2))
        assert model.training
    finally:
        model.eval()


def test_logprobs_match_full_forward(engine, model):
    temp = 0.7
    params = SamplingParams(n=2, temperature=temp, max_tokens=NEW, seed=3, logprobs=True)
    outs = engine.generate(PROMPTS, params)
    for p, o in zip(PROMPTS, outs):
        assert len(o.samples) == 2
        for s in o.samples:
            assert len(s.logprobs) == len(s.token_ids) == NEW
            full = torch.tensor([p + s.token_ids])
            with torch.no_grad():
                logits = model(input_ids=full).logits[0].float()
            pred = logits[len(p) - 1 : -1]  # the positions that predicted each sampled token
            want = (pred / temp).log_softmax(-1).gather(1, torch.tensor(s.token_ids)[:, None])
            # KV-cached decoding: the same sums in another order, through the whole decoder
            bound = diff_tol(torch.float32, (pred / temp).abs().max(), _terms(model, full))
            assert_within(torch.tensor(s.logprobs), want.squeeze(1), bound, "log-probs")


def test_greedy_logprobs_are_of_the_unscaled_distribution(engine, model, reference):
    (s,) = engine.generate([PROMPTS[0]], greedy(logprobs=True))[0].samples
    full = torch.tensor([PROMPTS[0] + s.token_ids])
    with torch.no_grad():
        logits = model(input_ids=full).logits[0, len(PROMPTS[0]) - 1 : -1]
    want = logits.log_softmax(-1).gather(1, torch.tensor(s.token_ids)[:, None]).squeeze(1)
    bound = diff_tol(torch.float32, logits.abs().max(), _terms(model, full))
    assert_within(torch.tensor(s.logprobs), want, bound, "log-probs")


def _terms(model, ids: torch.Tensor) -> int:
    return decoder_terms(model.config, ids.shape[-1])


def _lse_tol(logits: torch.Tensor) -> float:
    """Two log-softmaxes of the same logits: the log-sum-exp over the vocabulary's terms."""
    return diff_tol(torch.float32, logits.abs().max(), logits.shape[-1])


def _freq_tol(p: torch.Tensor, n: int) -> torch.Tensor:
    """Six standard deviations of a frequency over n independent draws of probability p."""
    return 6 * (p * (1 - p) / n).sqrt()


def test_seeded_sampling_reproducible(engine):
    p = PROMPTS[2]
    params = SamplingParams(temperature=1.0, max_tokens=NEW, seed=1234)
    other = SamplingParams(temperature=1.0, max_tokens=5)  # unseeded neighbours
    alone = engine.generate([p], params)[0].samples[0].token_ids
    again = engine.generate([p], params)[0].samples[0].token_ids
    assert alone == again
    batched = engine.generate([PROMPTS[1], p, PROMPTS[3]], [other, params, other])
    assert batched[1].samples[0].token_ids == alone
    diff = engine.generate([p], SamplingParams(temperature=1.0, max_tokens=NEW, seed=4321))
    assert diff[0].samples[0].token_ids != alone


def test_n_samples_per_prompt(engine):
    params = [
        SamplingParams(n=3, temperature=1.0, max_tokens=6, seed=7),
        SamplingParams(n=1, temperature=1.0, max_tokens=6, seed=7),
        SamplingParams(n=4, temperature=1.0, max_tokens=6, seed=7),
    ]
    prompts = PROMPTS[:3]
    outs = engine.generate(prompts, params)
    assert [len(o.samples) for o in outs] == [3, 1, 4]
    for p, o in zip(prompts, outs):
        for s in o.samples:
            assert len(s.token_ids) == 6 and s.prompt_len == len(p)
            assert all(0 <= t < VOCAB for t in s.token_ids)
    # the samples of one prompt differ from each other, and are reproducible
    assert len({tuple(s.token_ids) for s in outs[2].samples}) > 1
    again = engine.generate(prompts, params)
    assert [[s.token_ids for s in o.samples] for o in again] == [
        [s.token_ids for s in o.samples] for o in outs
    ]
    with pytest.raises(ValueError):
        engine.generate(prompts, params[:2])


def test_stop_token_ids(engine, reference):
    ref = reference[0]
    i = next(i for i in range(2, NEW - 1) if ref[i] not in ref[:i])  # first emitted mid-way
    stop = ref[i]
    params = [greedy(stop_token_ids=(stop,)), greedy(), greedy(stop_token_ids=(VOCAB + 5,))]
    outs = engine.generate([PROMPTS[0], PROMPTS[1], PROMPTS[2]], params)
    s = outs[0].samples[0]
    assert s.token_ids == ref[: i + 1] and s.token_ids[-1] == stop
    assert s.finish_reason == "stop"
    # the rows that go on are unaffected by the stopped row leaving the batch
    for k in (1, 2):
        assert outs[k].samples[0].token_ids == reference[k]
        assert outs[k].samples[0].finish_reason == "length"


def test_stop_on_first_token(engine, reference):
    s = engine.generate([PROMPTS[3]], greedy(stop_token_ids=(reference[3][0], 96)))[0].samples[0]
    assert s.token_ids == reference[3][:1] and s.finish_reason == "stop"


def test_max_tokens_per_request(engine, reference):
    lens = [4, NEW, 1, 7]
    outs = engine.generate(PROMPTS, [greedy(max_tokens=m) for m in lens])
    for o, ref, m in zip(outs, reference, lens):
        (s,) = o.samples
        assert s.token_ids == ref[:m]
        assert s.finish_reason == "length"


def test_top_k_1_is_greedy(engine, reference):
    params = SamplingParams(temperature=1.0, top_k=1, max_tokens=NEW)
    outs = engine.generate(PROMPTS, params)
    assert [o.samples[0].token_ids for o in outs] == reference


def test_small_max_batch_rows_chunks(model, reference):
    eng = make_engine(model, pad_token_id=PAD, kind="hf")
    eng.max_batch_rows = 2
    outs = eng.generate(PROMPTS, greedy())
    assert [o.samples[0].token_ids for o in outs] == reference


def test_sampling_params_validation():
    for bad in (
        {"n": 0},
        {"max_tokens": 0},
        {"temperature": -1.0},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"top_k": -1},
    ):
        with pytest.raises(ValueError):
            SamplingParams(**bad)
    with pytest.raises(ValueError):
        make_engine(object(), kind="nosuch")


# --------------------------------------------------------------------------- sampler


def _rows(logits: torch.Tensor, seeds=None, step: int = 0, **kw):
    B = logits.shape[0]
    params = [SamplingParams(**kw)] * B
    seeds = list(range(B)) if seeds is None else seeds
    return sample(logits, SamplingRows.build(params, seeds, [step] * B, logits.device))


def test_sample_greedy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=g)
    tok, lp = _rows(logits, temperature=0.0)
    assert torch.equal(tok, logits.argmax(-1))
    assert_within(lp, logits.log_softmax(-1).gather(1, tok[:, None]).squeeze(1), _lse_tol(logits))


def test_sample_tiny_top_p_keeps_argmax():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 50, generator=g).repeat(25, 1)  # 200 rows
    tok, lp = _rows(logits, top_p=1e-6)
    assert torch.equal(tok, logits.argmax(-1))
    # log-probs are of the unfiltered distribution
    assert_within(lp, logits.log_softmax(-1).gather(1, tok[:, None]).squeeze(1), _lse_tol(logits))


def test_sample_min_p_filters():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(400, 1)
    torch.manual_seed(0)
    tok, lp = _rows(logits, min_p=0.5)  # keep p >= 0.25
    assert set(tok.tolist()) == {0, 1}
    assert_within(lp, probs.log()[tok], _lse_tol(logits))
    tok, _ = _rows(logits, min_p=0.2)  # keep p >= 0.1
    assert set(tok.tolist()) == {0, 1, 2}
    tok, _ = _rows(logits)
    assert set(tok.tolist()) == {0, 1, 2, 3}


def test_sample_top_k_and_top_p():
    probs = torch.tensor([0.1, 0.4, 0.05, 0.3, 0.15])
    logits = probs.log().repeat(400, 1)
    torch.manual_seed(0)
    tok, _ = _rows(logits, top_k=2)
    assert set(tok.tolist()) == {1, 3}
    tok, _ = _rows(logits, top_p=0.75)  # 0.4 + 0.3 < 0.75 <= 0.4 + 0.3 + 0.15
    assert set(tok.tolist()) == {1, 3, 4}


def test_sample_frequencies_and_seeds():
    probs = torch.tensor([0.6, 0.3, 0.1])
    logits = probs.log().repeat(4000, 1)
    torch.manual_seed(0)
    tok, _ = _rows(logits)
    freq = torch.bincount(tok, minlength=3).float() / 4000
    assert_within(freq, probs, _freq_tol(probs, 4000), "frequencies")
    # temperature flattens the distribution
    tok, lp = _rows(logits, temperature=2.0)
    flat = (probs.log() / 2).softmax(-1)
    freq = torch.bincount(tok, minlength=3).float() / 4000
    assert_within(freq, flat, _freq_tol(flat, 4000), "frequencies at T=2")
    assert_within(lp, flat.log()[tok], _lse_tol(logits / 2))
    # seeded rows repeat exactly; another step or seed draws afresh
    small = torch.randn(64, 40, generator=torch.Generator().manual_seed(2))
    a, _ = _rows(small, seeds=list(range(64)))
    assert torch.equal(a, _rows(small, seeds=list(range(64)))[0])
    assert not torch.equal(a, _rows(small, seeds=list(range(64)), step=1)[0])
    assert not torch.equal(a, _rows(small, seeds=list(range(100, 164)))[0])


def test_counter_noise_is_uniform_and_row_independent():
    """The hash behind sampling: u in (0, 1) uniform per entry, unrelated across rows, steps
    and vocabulary entries (the Gumbel-max sampler is only as good as this)."""
    keys = row_keys(torch.arange(64), torch.zeros(64, dtype=torch.long))
    g = gumbel(keys, 1000)  # [64, 1000]
    u = torch.exp(-torch.exp(-g))  # back to uniforms
    hist = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    tenth = torch.full((10,), 0.1)
    assert_within(hist, tenth, _freq_tol(tenth, u.numel()), "histogram")
    # the correlation of n independent pairs has a standard deviation of 1/sqrt(n): six of them
    r = torch.corrcoef(torch.stack([u[:, :-1].flatten(), u[:, 1:].flatten()]))[0, 1]
    assert abs(r) < 6 / u[:, 1:].numel() ** 0.5
    r = torch.corrcoef(torch.stack([u[:-1].flatten(), u[1:].flatten()]))[0, 1]
    assert abs(r) < 6 / u[1:].numel() ** 0.5
    g_next = gumbel(row_keys(torch.arange(64), torch.ones(64, dtype=torch.long)), 1000)
    assert (g_next != g).float().mean() > 0.99
    # a row's noise does not depend on the other rows in the batch: the same operations
    assert torch.equal(gumbel(keys[5:6], 1000)[0], g[5])


def test_nucleus_past_the_top_k_shortcut_is_exact():
    """Flat rows whose nucleus holds ~1,000 of 2,000 tokens take the full-sort path; peaked rows
    the top-256 shortcut; both keep exactly the brute-force nucleus."""
    from r1kit.engine.sampler import thresholds

    g = torch.Generator().manual_seed(5)
    flat = torch.randn(3, 2000, generator=g) * 0.1
    peaked = torch.randn(3, 2000, generator=g) * 4
    logits = torch.cat([flat, peaked])
    params = [SamplingParams(top_p=0.5)] * 6
    th = thresholds(logits, SamplingRows.build(params, [0] * 6, [0] * 6, "cpu"))
    for row, t in zip(logits, th):
        srt = row.sort(descending=True).values
        p = srt.softmax(-1)
        n = int(((p.cumsum(-1) - p) < 0.5).sum())
        assert int((row >= t).sum()) == n
    assert int((logits[0] >= th[0]).sum()) > 256  # the fallback really ran
