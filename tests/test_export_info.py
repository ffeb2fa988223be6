"""`r1kit info`: parameters, shape, context and memory estimates for HF models and GGUF files."""

from __future__ import annotations

import json

import pytest

from r1kit.cli import main
from r1kit.export.gguf import export_gguf
from r1kit.export.info import describe, kv_cache_bytes, memory_table


def test_embedded_model(tiny_model_base):
    info = describe(None)
    assert info.params == sum(p.numel() for p in tiny_model_base.parameters()) == 1_709_184
    assert (info.context_length, info.layers, info.kv_heads, info.head_dim) == (1024, 4, 2, 48)
    assert info.arch == "Qwen2ForCausalLM (qwen2 in GGUF)" and info.tied
    mem = memory_table(info)
    assert mem["ctx"] == 1024 and mem["kv_cache"] == 2 * 4 * 1024 * 2 * 48 * 2
    assert mem["train_full_fp32"] == 16 * info.params
    # LoRA rank 16 on the 7 decoder matrices of 4 layers: r * (in + out) each
    per_layer = 16 * ((192 + 192) * 2 + (192 + 96) * 2 + (192 + 512) * 3)
    assert mem["lora_params"] == 4 * per_layer


def test_estimates_match_the_exported_files(tmp_path):
    mem = memory_table(describe(None))
    for t in ("f16", "q4_0"):
        size = export_gguf(None, t, tmp_path).size_bytes
        # the file adds the tokenizer and header (tens of KB) to the tensor bytes
        assert 0 < size - mem["run"][t]["file"] < 20_000, t
        g = describe(str(tmp_path / f"r1kit-tiny-{t}.gguf"))
        assert g.params == 1_709_184 and g.file_type == t and g.arch == "qwen2"


def test_config_only_hub_shape(tmp_path):
    """A directory with only config.json (no weights): counted from the config. The shape of
    DeepSeek-R1-Distill-Qwen-1.5B / Qwen2.5-1.5B, whose published count is 1,543,714,304 with
    tied embeddings (the distill unties them: + 151936 * 1536)."""
    cfg = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-6,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    info = describe(str(tmp_path))
    assert info.params == 1_543_714_304
    mem = memory_table(info)
    assert mem["ctx"] == 4096  # capped for the run estimate
    assert mem["kv_cache"] == 2 * 28 * 4096 * 2 * 128 * 2  # 112 MiB
    assert 0.9e9 < mem["run"]["q4_0"]["file"] < 1.2e9  # ~1.0 GB (q4_0 + Q8_0 embeddings)
    assert mem["run"]["f16"]["file"] == pytest.approx(2 * info.params, rel=1e-3)


def test_cli(tmp_path, capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "parameters    1,709,184 (1.7M)" in out and "q4_0" in out and "LoRA rank 16" in out
    assert main(["info", "--json", "--ctx", "512"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["params"] == 1_709_184 and d["memory_bytes"]["ctx"] == 512
    assert d["memory_bytes"]["kv_cache"] == kv_cache_bytes(describe(None), 512)
    assert main(["info", str(tmp_path / "missing.gguf")]) == 2
    assert capsys.readouterr().err.startswith("r1kit: error: GGUF file not found")
