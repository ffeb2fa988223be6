"""The exported embedded model inside llama.cpp (llama-cpp-python, an optional dependency that
compiles llama.cpp; these tests skip without it): llama.cpp's tokenizer gives our ids, its greedy
continuation equals r1kit's PyTorch greedy tokens for f16 (and f32), stays close for q8_0 and
q4_0, and `r1kit serve model.gguf` answers like `r1kit serve` over the PyTorch model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gguf_reference import PROMPTS, agreement, prompt_ids, torch_greedy

from r1kit.export.gguf import export_gguf

llama_cpp = pytest.importorskip("llama_cpp", reason="needs llama-cpp-python: pip install '.[gguf]'")
pytestmark = pytest.mark.usefixtures("one_thread")

MULTILINGUAL = (
    "<｜begin▁of▁sentence｜><｜User｜>Solve 3x + 4 = 19. Résous: ça coûte 12€? Решите: 7×8=56. "
    "解方程：二加三等于五。 数学が好き 🙂 عربى  tabs\tand\n\nnewlines  <｜Assistant｜><think>\n"
    "Wait, let me check.</think> <answer>5</answer><｜end▁of▁sentence｜><｜▁pad▁｜>"
)


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    return {t: export_gguf(None, t, out).path for t in ("f32", "f16", "q8_0", "q4_0")}


def _llama(path, n_ctx: int = 1024, **kw):
    # one thread for prompts too: llama-cpp-python's batch default (all cores) stalls on a
    # shared CPU (see serve/llamacpp.py)
    return llama_cpp.Llama(
        model_path=str(path), n_ctx=n_ctx, n_threads=1, n_threads_batch=1, verbose=False, **kw
    )


def _llama_greedy(llm, tok, n: int = 48) -> list[list[int]]:
    out = []
    for p in PROMPTS:
        ids = []
        for t in llm.generate(prompt_ids(tok, p), temp=0.0, top_k=1, reset=True):
            ids.append(t)
            if t == tok.eos_token_id or len(ids) == n:
                break
        out.append(ids)
    return out


def test_tokenizer_ids_equal_ours(ggufs, tiny_tokenizer):
    llm = _llama(ggufs["f16"])
    for text in (MULTILINGUAL, MULTILINGUAL.replace("<｜begin▁of▁sentence｜>", ""), " 12  345\n"):
        for add in (False, True):
            ours = tiny_tokenizer(text, add_special_tokens=add)["input_ids"]
            theirs = llm.tokenize(text.encode(), add_bos=add, special=True)
            assert theirs == ours, (text, add)
        # and back: llama.cpp's detokenizer gives the text (special tokens included)
        ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert llm.detokenize(ids, special=True).decode() == text


def test_greedy_continuations_match_pytorch(ggufs, tiny_model_base, tiny_tokenizer):
    ref = torch_greedy(tiny_model_base, tiny_tokenizer)
    got = {t: agreement(ref, _llama_greedy(_llama(p), tiny_tokenizer)) for t, p in ggufs.items()}
    print("greedy agreement, llama.cpp vs PyTorch:", json.dumps(got))
    assert got["f32"]["identical"] == 1.0
    assert got["f16"]["identical"] == 1.0
    assert got["q8_0"]["prefix"] >= 0.7
    assert got["q4_0"]["prefix"] >= 0.3


def _logits(llm, ids):
    """llama.cpp's logits at every prompt position: [len(ids), vocab]."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


@pytest.mark.parametrize("rope", ["default", "llama3"])
def test_llama_export_logits_match(tmp_path, tiny_tokenizer, rope):
    """A random Llama (q/k rows permuted for llama.cpp's rope; Llama 3.1 rope factors as the
    rope_freqs tensor) gives PyTorch's logits in llama.cpp at f32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    rp = {"rope_type": rope, "rope_theta": 10000.0}
    if rope == "llama3":
        rp |= {
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
    cfg = LlamaConfig(
        vocab_size=437,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        rope_parameters=rp,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=4,
    )
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(tmp_path / "llama")
    tiny_tokenizer.save_pretrained(tmp_path / "llama")
    path = export_gguf(str(tmp_path / "llama"), "f32", tmp_path).path
    llm = _llama(path, n_ctx=256, logits_all=True)
    ids = prompt_ids(tiny_tokenizer, PROMPTS[0])[:120]
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(_logits(llm, ids) - want).max() < 1e-3
    llm.close()


def test_qwen2_f32_logits_match(ggufs, tiny_model_base, tiny_tokenizer):
    llm = _llama(ggufs["f32"], logits_all=True)
    ids = prompt_ids(tiny_tokenizer, PROMPTS[1])
    with torch.no_grad():
        want = tiny_model_base(torch.tensor([ids])).logits[0].numpy()
    got = _logits(llm, ids)
    # trained logits span tens of units; llama.cpp's f32 kernels sum in another order
    assert np.abs(got - want).max() < 1e-2 * np.abs(want).max()
    assert (got.argmax(-1) == want.argmax(-1)).all()
    llm.close()


def test_serve_gguf_same_answers_as_pytorch_server(ggufs, tiny_model_base, tiny_tokenizer):
    from fastapi.testclient import TestClient

    from r1kit.serve.app import create_app
    from r1kit.serve.generation import Generator
    from r1kit.serve.llamacpp import GGUFGenerator
    from r1kit.serve.store import Store

    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "What is 6 * 7?"}],
        "temperature": 0,
        "max_tokens": 40,
    }
    answers = {}
    gens = {
        "torch": Generator(tiny_model_base, tiny_tokenizer, "m", engine="hf"),
        "gguf": GGUFGenerator(str(ggufs["f16"]), "m", n_threads=1),
    }
    for kind, gen in gens.items():
        app = create_app(gen, Store(":memory:"), auth=False)  # --no-auth: loopback Host only
        with TestClient(app, base_url="http://127.0.0.1") as c:
            r = c.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            answers[kind] = r.json()
            if kind == "gguf":
                # streaming: reasoning chunks, then content chunks, then [DONE]
                with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
                    lines = [ln for ln in s.iter_lines() if ln.startswith("data: ")]
                assert lines[-1] == "data: [DONE]"
                deltas = [json.loads(ln[6:])["choices"][0]["delta"] for ln in lines[:-1]]
                msg = answers[kind]["choices"][0]["message"]
                streamed = "".join(d.get("reasoning_content") or "" for d in deltas)
                assert streamed == msg["reasoning_content"]
                r = c.post(
                    "/api/chat",
                    json={
                        "model": "m",
                        "messages": body["messages"],
                        "think": True,
                        "stream": False,
                        "options": {"temperature": 0, "num_predict": 40},
                    },
                )
                assert r.json()["message"]["thinking"] == msg["reasoning_content"]
                d = c.get("/api/tags").json()["models"][0]["details"]
                assert d["format"] == "gguf" and d["quantization_level"] == "F16"
                assert c.get("/health").json()["engine"] == "llama.cpp"
    t, g = answers["torch"]["choices"][0], answers["gguf"]["choices"][0]
    assert g["message"]["reasoning_content"] == t["message"]["reasoning_content"]
    assert g["message"]["content"] == t["message"]["content"]
    assert g["finish_reason"] == t["finish_reason"]
    assert answers["gguf"]["usage"] == answers["torch"]["usage"]
    gens["gguf"].close()
