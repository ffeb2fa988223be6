"""Loading models and tokenizers: the embedded default, local directories, run dirs, hub ids."""

from __future__ import annotations

import json

import pytest
import torch

from r1kit.config import ZeroConfig
from r1kit.errors import R1kitError
from r1kit.modeling import EMBEDDED_DIR, load_model, load_tokenizer, resolve_model


def test_embedded_loads_with_plain_transformers():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(EMBEDDED_DIR)
    model = AutoModelForCausalLM.from_pretrained(EMBEDDED_DIR)
    assert model.config.model_type == "qwen2"
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = tok(
        "Compute 2 + 3. <think> 5 </think> <answer> 5 </answer>", return_tensors="pt"
    ).input_ids
    assert ids[0, 0].item() == tok.bos_token_id
    assert int(ids.max()) < vocab
    for t in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id):
        assert t is not None and 0 <= t < vocab
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape[:2] == ids.shape
    assert torch.isfinite(logits).all()


def test_embedded_tokenizer_fits_model_vocab():
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(EMBEDDED_DIR)
    assert len(tok) <= AutoConfig.from_pretrained(EMBEDDED_DIR).vocab_size


def test_embedded_dir_is_small():
    total = sum(p.stat().st_size for p in EMBEDDED_DIR.rglob("*") if p.is_file())
    assert (EMBEDDED_DIR / "config.json").is_file()
    assert total < 20 * 2**20, f"{EMBEDDED_DIR} holds {total / 2**20:.1f} MiB"


@pytest.mark.parametrize("spec", [None, "tiny", "r1kit-tiny", "embedded"])
def test_resolve_embedded(spec):
    assert resolve_model(spec) == str(EMBEDDED_DIR)


def _small_config(kind: str, vocab_size: int):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    if kind == "qwen2":
        return Qwen2Config(tie_word_embeddings=True, **common)
    return LlamaConfig(tie_word_embeddings=False, **common)


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_local_dir_roundtrip(kind, tmp_path, tiny_tokenizer):
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    cls = {"qwen2": Qwen2ForCausalLM, "llama": LlamaForCausalLM}[kind]
    torch.manual_seed(0)
    model = cls(_small_config(kind, len(tiny_tokenizer))).eval()
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)

    assert resolve_model(str(tmp_path)) == str(tmp_path)
    loaded = load_model(str(tmp_path))
    assert type(loaded) is cls
    assert loaded.dtype == torch.float32
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)

    tok = load_tokenizer(str(tmp_path))
    text = "Compute 2 + 3. <think> 5 </think> <answer> 5 </answer>"
    assert tok(text).input_ids == tiny_tokenizer(text).input_ids
    assert tok.pad_token_id is not None


def _save_small(d, tok):
    from transformers import Qwen2ForCausalLM

    Qwen2ForCausalLM(_small_config("qwen2", len(tok))).save_pretrained(d)
    tok.save_pretrained(d)


def test_run_dir_resolves_to_final(tmp_path, tiny_tokenizer):
    """OUT of `r1kit zero` holds the job's own config.json; the model is OUT/final."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(ZeroConfig().to_dict()))
    _save_small(run / "final", tiny_tokenizer)
    assert resolve_model(str(run)) == str(run / "final")
    assert load_model(str(run)).config.hidden_size == 32


def test_run_dir_without_final_resolves_to_latest_checkpoint(tmp_path, tiny_tokenizer):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(ZeroConfig().to_dict()))
    _save_small(run / "checkpoints" / "step-000001", tiny_tokenizer)
    _save_small(run / "checkpoints" / "step-000002", tiny_tokenizer)
    (run / "checkpoints" / "latest").write_text("step-000001")
    assert resolve_model(str(run)) == str(run / "checkpoints" / "step-000001")


def test_dir_without_config(tmp_path):
    with pytest.raises(R1kitError, match="not a model directory"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("spec", ["/nonexistent/model", "./no/such/dir", "nosuchdir"])
def test_missing_path(spec):
    with pytest.raises(R1kitError, match="model path does not exist"):
        load_model(spec)


@pytest.mark.parametrize("load", [load_tokenizer, load_model])
def test_hub_id_offline(load, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("someorg/somemodel") == "someorg/somemodel"
    with pytest.raises(R1kitError) as info:
        load("someorg/somemodel")
    msg = str(info.value)
    assert "\n" not in msg
    assert "someorg/somemodel" in msg
    assert "hub" in msg and "offline" in msg
    assert "local directory" in msg
