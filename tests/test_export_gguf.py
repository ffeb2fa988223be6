"""`r1kit export gguf` without llama.cpp: the file's metadata, tokenizer and tensor names as
llama.cpp reads them, per-tensor types, the weights read back into the PyTorch model (greedy
tokens), Llama's q/k permutation, and bad input."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
from gguf_reference import agreement, hf_from_gguf, torch_greedy

from r1kit.chat import R1ZERO_CHAT_TEMPLATE
from r1kit.cli import main
from r1kit.errors import R1kitError
from r1kit.export.gguf import OUTTYPES, export_gguf, llama_permute, tensor_type
from r1kit.export.vocab import pre_tokenizer_name

pytestmark = pytest.mark.usefixtures("one_thread")
T = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    return {t: export_gguf(None, t, out) for t in ("f16", "q8_0", "q4_0")}


def _fields(path) -> dict:
    r = gguf.GGUFReader(str(path))
    return {k: f.contents() for k, f in r.fields.items()}, r.tensors


def test_metadata_and_tokenizer_as_llama_cpp_reads_them(exported, tiny_tokenizer):
    meta, tensors = _fields(exported["f16"].path)
    assert meta["general.architecture"] == "qwen2" and meta["general.file_type"] == 1
    want = {
        "context_length": 1024,
        "embedding_length": 192,
        "block_count": 4,
        "feed_forward_length": 512,
        "attention.head_count": 4,
        "attention.head_count_kv": 2,
        "rope.freq_base": 10000.0,
    }
    assert {k: meta[f"qwen2.{k}"] for k in want} == want
    assert meta["qwen2.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "qwen2"
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == 437
    vocab = tiny_tokenizer.get_vocab()
    assert all(tokens[i] == s for s, i in vocab.items())
    added = tiny_tokenizer.added_tokens_decoder  # id -> AddedToken
    for i, ty in enumerate(types):  # special added -> CONTROL, <think> & co -> USER_DEFINED
        want_ty = (3 if added[i].special else 4) if i in added else 1
        assert ty == want_ty, (i, tokens[i])
    assert [types[i] for i in (0, 3, 433, 434)] == [3, 3, 4, 4]  # BOS, <｜Assistant｜>, <think>
    merges = json.loads(tiny_tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    assert meta["tokenizer.ggml.merges"] == [" ".join(m) for m in merges]
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (0, 1)
    assert meta["tokenizer.ggml.add_bos_token"] is True
    assert meta["tokenizer.chat_template"] == R1ZERO_CHAT_TEMPLATE  # the model's own format
    assert meta["general.sampling.temp"] == pytest.approx(0.6)

    names = {t.name for t in tensors}
    known = {
        gguf.TENSOR_NAMES[k].format(bid=i)
        for k in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.QWEN2]
        for i in range(4)
    }
    assert {n.rsplit(".", 1)[0] for n in names} <= known  # names llama.cpp's qwen2 loader knows
    assert "output.weight" not in names  # tied: llama.cpp reuses token_embd
    assert len(names) == 2 + 4 * 12  # embd, norm; per block 7 matrices, 2 norms, 3 biases


def test_tensor_types_and_sizes(exported):
    for outtype, res in exported.items():
        _, tensors = _fields(res.path)
        for t in tensors:
            shape = tuple(int(d) for d in reversed(t.shape))
            if len(shape) == 1:
                assert t.tensor_type == T.F32, t.name
            elif outtype == "q4_0" and t.name == "token_embd.weight":
                assert t.tensor_type == T.Q8_0  # the tied output matrix stays at 8 bits
            else:
                assert t.tensor_type.name == outtype.upper(), t.name
    sizes = {t: r.size_bytes for t, r in exported.items()}
    assert sizes["q4_0"] < sizes["q8_0"] < sizes["f16"] < 3.5e6
    assert exported["q4_0"].fallbacks == [
        "token_embd.weight: Q8_0 (the output matrix: llama-quantize keeps it above 4 bits)"
    ]
    # rows that do not fill 32-value blocks fall back to F16, and say why
    assert tensor_type("blk.0.attn_q.weight", (48, 40), "q8_0", False) == (
        T.F16,
        "row of 40 is not a multiple of 32",
    )
    assert tensor_type("blk.0.attn_q.bias", (48,), "q4_0", False)[0] == T.F32


def test_weights_read_back_give_the_same_greedy_tokens(exported, tiny_model_base, tiny_tokenizer):
    """The GGUF dequantized into the PyTorch model: f16 continues exactly as the original;
    q8_0 and q4_0 stay close (the numbers are the export's own quantization error, without
    llama.cpp's kernels)."""
    ref = torch_greedy(tiny_model_base, tiny_tokenizer)
    got = {
        t: agreement(ref, torch_greedy(hf_from_gguf(r.path, tiny_model_base), tiny_tokenizer))
        for t, r in exported.items()
    }
    print("greedy agreement, GGUF read back into PyTorch:", got)
    assert got["f16"]["identical"] == 1.0
    assert got["q8_0"]["prefix"] >= 0.7
    assert got["q4_0"]["prefix"] >= 0.3


def test_llama_permutation_and_rope_factors(tmp_path, tiny_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=437,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    )
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(tmp_path / "llama")
    tiny_tokenizer.save_pretrained(tmp_path / "llama")
    res = export_gguf(str(tmp_path / "llama"), "f32", tmp_path)
    meta, tensors = _fields(res.path)
    assert res.arch == "llama" and meta["llama.rope.dimension_count"] == 16
    by_name = {t.name: t for t in tensors}
    q = by_name["blk.0.attn_q.weight"].data.reshape(64, 64)
    assert np.array_equal(
        q, llama_permute(model.model.layers[0].self_attn.q_proj.weight.detach().numpy(), 4)
    )
    assert "output.weight" in by_name  # untied
    factors = by_name["rope_freqs.weight"].data
    assert factors.shape == (8,) and factors[0] == 1.0 and factors[-1] == pytest.approx(8.0)
    back = hf_from_gguf(res.path, model)  # the exact inverse
    for a, b in zip(model.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)


def test_bad_input_names_what_is_supported(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, bos_token_id=0, eos_token_id=0)
    ).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(
        R1kitError, match="supported architectures: Qwen2ForCausalLM .* LlamaForCausalLM"
    ):
        export_gguf(str(tmp_path / "gpt2"), "f16", tmp_path)
    assert main(["export", "gguf", "--outtype", "q5_k", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"r1kit: error: unknown --outtype 'q5_k'; supported: {', '.join(OUTTYPES)}"
    assert main(["export", "gguf", str(tmp_path / "gpt2"), "--out", str(tmp_path)]) == 2
    assert "supported architectures" in capsys.readouterr().err
    with pytest.raises(R1kitError, match="supported: gpt-2, llama-bpe, qwen2"):
        pre_tokenizer_name({"type": "Split", "pattern": {"Regex": r"\d+"}})


def test_cli_writes_the_file(tmp_path, capsys):
    assert main(["export", "gguf", "--outtype", "q4_0", "--out", str(tmp_path / "m.gguf")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {tmp_path / 'm.gguf'} (") and "28 Q4_0, 1 Q8_0" in out


def test_cli_out_under_a_file_is_one_line(tmp_path, capsys):
    """--out inside a path whose part is a file (a .gguf given as a directory) says which."""
    taken = tmp_path / "m.gguf"
    taken.write_bytes(b"GGUF")
    for out in (taken / "x.gguf", taken / "sub"):
        assert main(["export", "gguf", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == f"r1kit: error: --out {out}: {taken} is a file, not a directory\n"
    assert taken.read_bytes() == b"GGUF"


def test_serve_gguf_without_llama_cpp_says_how_to_install(exported, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails as when not installed
    assert main(["serve", str(exported["q8_0"].path), "--no-auth"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("r1kit: error: serving a .gguf file needs llama-cpp-python")
