"""`r1kit export gptq` on the embedded model (hidden 192, heads x head_dim 192, intermediate 512:
group sizes 64 and 32 divide every input width, 128 does not): the directory loads with plain
`transformers` and generates, its weights are packed integers on disk, r1kit loads and serves
it, `r1kit info` shows its quantization, `--check` evaluates it, and bad requests are one line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open

pytest.importorskip("llmcompressor")  # the `gptq` extra (.ci/run installs it)

from r1kit.cli import main  # noqa: E402
from r1kit.engine import SamplingParams, engine_kind, make_engine  # noqa: E402
from r1kit.export.check import check_formats  # noqa: E402
from r1kit.export.gptq import export_gptq, packed_bits  # noqa: E402
from r1kit.modeling import EMBEDDED_DIR, load_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT = "A conversation between User and Assistant. What is 12 + 7? The answer is 19."


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("gptq")
    calib = root / "calib.jsonl"
    rows = [{"question": f"What is {i} + {2 * i}?"} for i in range(8)]
    rows += [
        {"text": "12 + 7 = 19. 3 * 4 = 12."},
        {"messages": [{"role": "user", "content": "hi"}]},
    ]
    calib.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {
        4: export_gptq(None, root / "w4", bits=4, samples=16),  # group size: the default (64)
        8: export_gptq(None, root / "w8", bits=8, group_size=32, calibration=str(calib)),
    }


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits[0]


def test_loads_with_plain_transformers_and_generates(exported, tiny_model_base, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    assert exported[4].group_size == 64 and exported[8].group_size == 32
    assert exported[4].quantized == exported[8].quantized == 4 * 7  # q k v o gate up down
    assert exported[8].calibration.startswith(str(exported[8].path.parent / "calib.jsonl"))
    assert "mix train split, r1zero format" in exported[4].calibration
    base = _logits(tiny_model_base, tiny_tokenizer)
    err = {}
    for bits, r in exported.items():
        model = AutoModelForCausalLM.from_pretrained(r.path)  # no r1kit in the way
        ids = tiny_tokenizer(PROMPT, return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
        assert out.shape[1] == ids.shape[1] + 12 or out[0, -1] == tiny_tokenizer.eos_token_id
        q = _logits(model, tiny_tokenizer)
        err[bits] = ((q - base).norm() / base.norm()).item()
    # int8: each weight within half a step of max|group| / 127 (< 0.8 % of the group's largest),
    # 28 quantized matrices whose errors add independently: sqrt(28) * 0.8 % = 4 % at most
    assert err[8] < 0.04
    # int4 steps are 18x coarser: the logits move more, but still follow the original's
    assert err[8] < err[4] < 0.5


def test_weights_are_packed_on_disk(exported):
    for bits, r in exported.items():
        g = r.group_size
        # int32 words holding 32 / bits weights, one fp32 scale (the model's dtype) per group
        assert packed_bits(r.path) == pytest.approx(bits + 32 / g, abs=1e-3)
        with safe_open(str(r.path / "model.safetensors"), framework="pt") as st:
            keys = list(st.keys())  # noqa: SIM118
            packed = st.get_tensor("model.layers.0.mlp.down_proj.weight_packed")
            scale = st.get_tensor("model.layers.0.mlp.down_proj.weight_scale")
            assert "model.layers.0.mlp.down_proj.weight" not in keys
            assert packed.dtype == torch.int32 and packed.shape == (192, 512 * bits // 32)
            assert scale.shape == (192, 512 // g)
            dense = 0  # what is not quantized: embeddings, norms, biases (fp32)
            linear = 0
            for k in keys:
                if k.endswith("weight_shape"):
                    linear += math.prod(st.get_tensor(k).tolist())
                elif not k.endswith(("weight_packed", "weight_scale")):
                    dense += math.prod(st.get_slice(k).get_shape())
        want = linear * (bits + 32 / g) / 8 + dense * 4
        size = (r.path / "model.safetensors").stat().st_size
        # the rest is the safetensors JSON header and the 28 weight_shape vectors (16 B each)
        assert want < size < want + 32 * 1024
        assert size < (EMBEDDED_DIR / "model.safetensors").stat().st_size * (bits + 4) / 32


def test_r1kit_loads_it_dequantized_and_the_paged_engine_runs(exported, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    r = exported[4]
    model = load_model(str(r.path)).eval()
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.weight, torch.Tensor) and q_proj.weight.shape == (192, 192)
    # every group of 64 weights is one scale times integers in [-8, 7]
    with safe_open(str(r.path / "model.safetensors"), framework="pt") as st:
        scale = st.get_tensor("model.layers.0.self_attn.q_proj.weight_scale")  # [192, 3]
    units = q_proj.weight.detach().view(192, 3, 64) / scale.unsqueeze(-1)
    assert torch.allclose(units, units.round(), atol=1e-4)  # fp32 division: ~1e-7 relative
    assert units.round().min() >= -8 and units.round().max() <= 7
    # the same numbers transformers computes when it decompresses on the first forward
    plain = AutoModelForCausalLM.from_pretrained(r.path)
    a, b = _logits(model, tiny_tokenizer), _logits(plain, tiny_tokenizer)
    assert torch.allclose(a, b, rtol=0, atol=1e-5 * b.abs().max().item())
    assert engine_kind(model) == "paged"
    assert engine_kind(plain) == "hf"  # packed layers the native decoder cannot read
    out = make_engine(model).generate([[5, 6, 7]], SamplingParams(max_tokens=8, temperature=0))
    assert len(out[0].samples[0].token_ids) == 8


def test_info_shows_quantization_and_memory(exported, capsys):
    r = exported[4]
    assert main(["info", str(r.path)]) == 0
    out = capsys.readouterr().out
    assert "GPTQ 4-bit" in out and "4-bit weights, group size 64" in out
    assert "4.50 bits/weight" in out and "packed (vLLM" in out and "dequantized" in out
    assert "parameters    1,709,184" in out  # the original's count, not the packed words'
    assert main(["info", str(r.path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["quantization"]["bits"] == 4 and d["quantization"]["group_size"] == 64
    assert d["memory_bytes"]["gptq"]["packed"] < d["memory_bytes"]["gptq"]["dequantized"]


def test_check_evaluates_the_export_beside_the_original(exported):
    rows, setup = check_formats(
        None,
        ["hf", "gptq-8"],
        problems=6,
        k=2,
        max_tokens=48,
        exported={"gptq-8": exported[8].path},
    )
    assert [r.format for r in rows] == ["hf", "gptq-8"]
    assert setup["problems"] == 6 and setup["k"] == 2 and setup["template"] == "r1zero"
    assert rows[1].size_bytes == (exported[8].path / "model.safetensors").stat().st_size
    assert rows[0].size_bytes == (EMBEDDED_DIR / "model.safetensors").stat().st_size
    assert all(0 <= r.pass1 <= 1 and 0 < r.mean_length <= 48 for r in rows)


def test_serve_answers_from_the_gptq_directory(exported, tmp_path):
    from openai import OpenAI
    from serve_server import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "r1kit.cli", "serve", str(exported[8].path), "--no-auth"]
    cmd += ["--port", str(port), "--db", str(tmp_path / "db.sqlite")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        t0 = time.time()
        while True:
            try:
                models = client.models.list()
                break
            except Exception:
                assert proc.poll() is None, proc.stdout.read()
                assert time.time() - t0 < 120, "the server did not start"
                time.sleep(0.5)
        r = client.chat.completions.create(
            model=models.data[0].id,
            messages=[{"role": "user", "content": "What is 3 + 4?"}],
            max_tokens=16,
            temperature=0,
        )
        assert r.usage.completion_tokens > 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_bad_group_size_is_one_line(capsys, tmp_path):
    assert main(["export", "gptq", "--group-size", "128", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "--group-size 128 does not divide the input width 192" in err and "64, 32" in err
    assert not (tmp_path / "o").exists()


def test_unsupported_architecture_is_one_line(capsys, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=1, n_embd=64, n_head=2, vocab_size=64, n_positions=32)
    GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "gpt2")
    capsys.readouterr()  # transformers' progress bar while saving it
    assert main(["export", "gptq", str(tmp_path / "gpt2"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot export GPT2LMHeadModel to GPTQ" in err
    assert "Qwen2ForCausalLM" in err
    with pytest.raises(SystemExit) as e:  # argparse: not 4 or 8
        main(["export", "gptq", "--bits", "3"])
    assert e.value.code == 2


def test_export_is_reproducible(exported, tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(1234)  # llmcompressor's calibration shuffle drew from this; not any more
    again = export_gptq(None, tmp_path / "w4", bits=4, samples=16)
    a, b = (
        load_file(exported[4].path / "model.safetensors"),
        load_file(again.path / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
