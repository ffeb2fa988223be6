"""`r1kit export gguf`: a Qwen2 or Llama model as one GGUF file for llama.cpp and Ollama.

The source is the embedded model, a local HF directory, a run directory or a hub id. Tensors are
read one at a time from safetensors and written as they are converted, so memory stays at about
one tensor. Names and metadata follow what llama.cpp's loader expects for the `qwen2` and `llama`
architectures (its convert_hf_to_gguf.py makes the same files):

    model.embed_tokens            -> token_embd          model.norm          -> output_norm
    lm_head (absent when tied)    -> output              layers.N.input_layernorm -> blk.N.attn_norm
    self_attn.{q,k,v,o}_proj      -> attn_{q,k,v,output} post_attention_layernorm -> ffn_norm
    mlp.{gate,up,down}_proj       -> ffn_{gate,up,down}

Llama's q/k rows are permuted from HF's rotate-half layout to the interleaved pairs llama.cpp's
`llama` rope uses; Qwen2 runs NeoX-style rope in llama.cpp, so its weights go as they are.

Tensor types per outtype: 1-D tensors (norms, biases) stay F32, as llama.cpp's converter keeps
them. q8_0/q4_0 quantize blocks of 32 along a row, so a tensor whose rows are not a multiple of
32 falls back to F16 (the converter does the same). For q4_0 the output matrix (`output`, or
`token_embd` when the embeddings are tied) is written Q8_0: llama-quantize keeps it at Q6_K for
q4_0, which the gguf package cannot write, and Q8_0 is the nearest type it can.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from r1kit.chat import TEMPLATES, set_template
from r1kit.errors import R1kitError
from r1kit.export.formats import OUTTYPES
from r1kit.export.vocab import vocab_from_tokenizer, write_vocab
from r1kit.modeling import EMBEDDED_NAMES, load_tokenizer, resolve_model

ARCHS = {"Qwen2ForCausalLM": "qwen2", "LlamaForCausalLM": "llama"}  # HF class -> GGUF arch
ROPE_TYPES = ("default", "linear", "yarn", "llama3")
QK = 32  # block length of q8_0 / q4_0 along a row

TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
SKIP_SUFFIXES = ("rotary_emb.inv_freq",)
# general.file_type (gguf.LlamaFileType) per outtype, spelled out so checks need no gguf import
_FILE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "bf16": 32}


@dataclass
class ExportResult:
    path: Path
    outtype: str
    arch: str
    params: int
    size_bytes: int
    types: dict[str, int] = field(default_factory=dict)  # GGML type -> number of tensors
    fallbacks: list[str] = field(default_factory=list)  # "name: TYPE (why)"


def check_outtype(outtype: str) -> str:
    if outtype not in OUTTYPES:
        raise R1kitError(f"unknown --outtype {outtype!r}; supported: {', '.join(OUTTYPES)}")
    return outtype


def check_arch(config: Any) -> str:
    """The GGUF architecture for an HF config, or an error naming the supported ones."""
    arch = (getattr(config, "architectures", None) or [getattr(config, "model_type", "?")])[0]
    if arch not in ARCHS:
        supported = ", ".join(f"{k} ({v})" for k, v in ARCHS.items())
        raise R1kitError(f"cannot export {arch} to GGUF; supported architectures: {supported}")
    return ARCHS[arch]


def model_name(spec: str | None) -> str:
    if spec is None or spec in EMBEDDED_NAMES:
        return "r1kit-tiny"
    p = Path(spec.rstrip("/"))
    return p.name if p.name not in ("final", "") else p.parent.name


def model_dir(spec: str | None) -> Path:
    """A local directory with config.json, tokenizer and weights (hub ids are downloaded)."""
    name = resolve_model(spec)
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import snapshot_download

    try:
        patterns = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model"]
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as err:  # offline, gated, missing
        raise R1kitError(
            f"cannot download {name!r} ({type(err).__name__}); pass a local model directory"
        ) from None


def rope_params(cfg: Any) -> dict:
    """rope_theta, rope_type and scaling fields, from transformers 5's `rope_parameters` or the
    older `rope_theta` + `rope_scaling`."""
    rp = dict(getattr(cfg, "rope_parameters", None) or {})
    rp.update({k: v for k, v in (getattr(cfg, "rope_scaling", None) or {}).items() if k not in rp})
    rp.setdefault("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    rp["rope_type"] = rp.get("rope_type", rp.get("type")) or "default"
    return rp


def head_dim(cfg: Any) -> int:
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def gguf_tensor_name(hf: str) -> str | None:
    """GGUF name for an HF tensor name; None for tensors llama.cpp does not take."""
    if hf.endswith(SKIP_SUFFIXES):
        return None
    stem, _, kind = hf.rpartition(".")  # kind: weight | bias
    if stem in TOP:
        return f"{TOP[stem]}.{kind}"
    parts = stem.split(".", 3)  # model, layers, N, rest
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in LAYER:
        return f"blk.{parts[2]}.{LAYER[parts[3]]}.{kind}"
    raise R1kitError(f"no GGUF name for tensor {hf!r} (an architecture variant not supported)")


def tensor_type(name: str, shape: tuple[int, ...], outtype: str, output_matrix: bool):
    """(GGMLQuantizationType, why it differs from the outtype or None) for one tensor."""
    from gguf import GGMLQuantizationType as T

    if len(shape) == 1 or outtype == "f32":
        return T.F32, None
    base = {"f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0, "q4_0": T.Q4_0}[outtype]
    if base in (T.Q8_0, T.Q4_0) and shape[-1] % QK:
        return T.F16, f"row of {shape[-1]} is not a multiple of {QK}"
    if base == T.Q4_0 and output_matrix:
        return T.Q8_0, "the output matrix: llama-quantize keeps it above 4 bits"
    return base, None


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF q/k rows per head [first halves | second halves] -> llama.cpp's interleaved pairs.
    w: [n_head * head_dim, ...] (a weight or a bias)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(rp: dict, dim: int) -> np.ndarray:
    """Llama 3.1's frequency-dependent rope scaling as llama.cpp's rope_freqs tensor:
    one divisor per rotary pair, shape [dim // 2]."""
    base, factor = rp["rope_theta"], rp.get("factor", 8.0)
    low, high = rp.get("low_freq_factor", 1.0), rp.get("high_freq_factor", 4.0)
    old = rp.get("original_max_position_embeddings", 8192)
    out = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi * base ** (i / dim)
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:  # between: blend 1/factor and 1 by where the wavelength falls
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def read_weights(
    path: Path, stack: contextlib.ExitStack
) -> Iterator[tuple[str, tuple[int, ...], Callable[[], Any]]]:
    """(name, shape, load) for every tensor in a model directory, without loading any yet; the
    files stay open until `stack` closes."""
    index = path / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values()))
        if index.exists()
        else ["model.safetensors"]
    )
    if not (path / files[0]).exists():
        raise R1kitError(
            f"no safetensors weights in {path}; re-save the model with save_pretrained"
        )
    from safetensors import safe_open

    for fname in files:
        f = stack.enter_context(safe_open(str(path / fname), framework="pt"))
        for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
            shape = tuple(f.get_slice(key).get_shape())
            yield key, shape, (lambda f=f, key=key: f.get_tensor(key))


def export_gguf(
    model: str | None = None,
    outtype: str = "f16",
    out: str | Path | None = None,
    name: str | None = None,
    template: str = "auto",
) -> ExportResult:
    """Write MODEL as a GGUF file; `out` is a .gguf path or a directory (default: here). Its
    `tokenizer.chat_template` is the model's own (the format it was trained in), or the one
    `template` ("r1zero" | "chat") names."""
    check_outtype(outtype)
    if template not in ("auto", *TEMPLATES):
        raise R1kitError(f"--template must be auto, {' or '.join(TEMPLATES)}, not {template!r}")
    from transformers import AutoConfig

    src = model_dir(model)
    cfg = AutoConfig.from_pretrained(src)
    arch = check_arch(cfg)
    rp = rope_params(cfg)
    if rp["rope_type"] not in ROPE_TYPES or (rp["rope_type"] == "llama3" and arch != "llama"):
        raise R1kitError(
            f"rope type {rp['rope_type']!r} is not supported for GGUF export of {arch}; "
            f"supported: {', '.join(ROPE_TYPES)} (llama3 for Llama only)"
        )
    if getattr(cfg, "use_sliding_window", False):
        raise R1kitError("sliding-window attention is not supported by llama.cpp's qwen2")
    if getattr(cfg, "mlp_bias", False):
        raise R1kitError("MLP biases are not supported by llama.cpp's llama architecture")
    name = name or model_name(model)
    path = Path(out) if out is not None else Path(".")
    if path.suffix != ".gguf":
        path = path / f"{name}-{outtype}.gguf"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file where a directory must be
        ups = (path.parent, *path.parent.parents)
        file = next((d for d in ups if d.exists() and not d.is_dir()), path.parent)
        raise R1kitError(f"--out {out}: {file} is a file, not a directory") from None

    with contextlib.ExitStack() as stack:
        return _write(src, cfg, arch, rp, name, outtype, path, stack, template)


def _write(
    src: Path,
    cfg: Any,
    arch: str,
    rp: dict,
    name: str,
    outtype: str,
    path: Path,
    stack: contextlib.ExitStack,
    template: str = "auto",
) -> ExportResult:
    import gguf

    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    plan = []  # (gguf name, shape, load, type, permute heads or 0)
    for hf, shape, load in read_weights(src, stack):
        gname = gguf_tensor_name(hf)
        if gname is None or (tied and gname.startswith("output.")):
            continue
        is_out = gname == "output.weight" or (tied and gname == "token_embd.weight")
        qtype, why = tensor_type(gname, shape, outtype, is_out)
        heads = 0
        if arch == "llama" and gname.split(".")[2:3] in (["attn_q"], ["attn_k"]):
            heads = cfg.num_attention_heads if "attn_q" in gname else cfg.num_key_value_heads
        plan.append((gname, shape, load, qtype, heads, why))
    order = {"token_embd": 0, "output_norm": 2, "output": 3}  # then blocks in order
    plan.sort(key=lambda t: (_block(t[0]), order.get(t[0].split(".")[0], 1), t[0]))

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(name)
    w.add_file_type(_FILE_TYPES[outtype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _hparams(w, cfg, arch, rp)
    w.add_sampling_temp(0.6)  # R1's recommended sampling, read by llama.cpp as defaults
    w.add_sampling_top_p(0.95)
    tok = load_tokenizer(str(src))
    if template != "auto":
        set_template(tok, template)
    write_vocab(w, vocab_from_tokenizer(tok, cfg.vocab_size))

    extra = []
    if rp["rope_type"] == "llama3":
        extra.append(("rope_freqs.weight", llama3_rope_factors(rp, head_dim(cfg))))
    for gname, arr in extra:
        w.add_tensor_info(gname, arr.shape, np.dtype(np.float32), arr.nbytes)
    for gname, shape, _, qtype, _, _ in plan:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        nbytes = math.prod(shape) // block * size
        w.add_tensor_info(gname, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for _, arr in extra:
        w.write_tensor_data(arr)
    params = 0
    for _, _, load, qtype, heads, _ in plan:
        data = load().float().numpy()  # [out, in] rows as HF stores them
        if heads:
            data = llama_permute(data, heads)
        w.write_tensor_data(gguf.quants.quantize(np.ascontiguousarray(data), qtype))
        params += data.size
    w.close()

    types = Counter(t[3].name for t in plan) + Counter("F32" for _ in extra)
    fallbacks = [f"{t[0]}: {t[3].name} ({t[5]})" for t in plan if t[5]]
    return ExportResult(path, outtype, arch, params, path.stat().st_size, dict(types), fallbacks)


def _block(gname: str) -> int:
    return int(gname.split(".")[1]) if gname.startswith("blk.") else -1


def _hparams(w: Any, cfg: Any, arch: str, rp: dict) -> None:
    import gguf

    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
    w.add_key_length(head_dim(cfg))
    w.add_value_length(head_dim(cfg))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(float(rp["rope_theta"]))
    w.add_vocab_size(cfg.vocab_size)
    if arch == "llama":
        w.add_rope_dimension_count(head_dim(cfg))
    if rp["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rp["factor"]))
    elif rp["rope_type"] == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(rp["factor"]))
        orig = rp.get("original_max_position_embeddings") or cfg.max_position_embeddings
        w.add_rope_scaling_orig_ctx_len(int(orig))
