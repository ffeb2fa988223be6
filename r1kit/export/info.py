"""`r1kit info`: what a model is and which machine it fits, before downloading or training it.

For an HF model (embedded, directory, run directory or hub id) or a GGUF file: architecture,
parameters, context length, layers/heads, and memory estimates:
- run: the GGUF file at each outtype (the exporter's own per-tensor types, so the estimate is
  the file llama.cpp maps) plus its f16 KV cache at the context (llama.cpp's default cache
  type); llama.cpp's compute buffers come on top (tens to hundreds of MB);
- train fully with AdamW: fp32 weights + grads + two moments = 16 bytes/param (r1kit on CPU);
  bf16 weights, grads and moments = 8 bytes/param (r1kit's GPU default);
- train with LoRA (rank r on every decoder linear layer, peft's "all-linear"): the frozen base in
  bf16 plus 16 bytes per adapter parameter.
Activations and the rollout engine's KV cache depend on batch and lengths and are not included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1kit.errors import R1kitError
from r1kit.export.gguf import ARCHS, OUTTYPES, gguf_tensor_name, head_dim, tensor_type
from r1kit.export.gptq import packed_bits, quantization_of
from r1kit.modeling import resolve_model

GIB = 1024**3
RUN_CTX = 4096  # context the run estimate assumes when the model allows more (Ollama's default)


@dataclass
class ModelInfo:
    source: str
    arch: str
    params: int
    context_length: int
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    shapes: list[tuple[str, tuple[int, ...]]] = field(
        repr=False, default_factory=list
    )  # GGUF names
    linear_shapes: list[tuple[int, int]] = field(repr=False, default_factory=list)  # [out, in]
    file_type: str | None = None  # a GGUF's outtype
    file_bytes: int | None = None
    quantization: dict[str, Any] | None = None  # a GPTQ directory's (gptq.quantization_of)


def gguf_summary(path: str | Path) -> dict[str, Any]:
    """Metadata of a GGUF file: architecture, name, context length, chat template, ..."""
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.ggml.")}
    arch = meta["general.architecture"]

    def hp(key: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{key}", default)

    heads = hp("attention.head_count")
    return {
        "arch": arch,
        "name": meta.get("general.name", Path(path).stem),
        "file_type": meta.get("general.file_type"),
        "context_length": hp("context_length"),
        "layers": hp("block_count"),
        "hidden": hp("embedding_length"),
        "heads": heads,
        "kv_heads": hp("attention.head_count_kv", heads),
        "head_dim": hp("attention.key_length") or hp("embedding_length") // heads,
        "vocab": hp("vocab_size") or len(r.fields["tokenizer.ggml.tokens"].data),
        "chat_template": meta.get("tokenizer.chat_template"),
        "tensors": [
            (t.name, tuple(int(d) for d in reversed(t.shape)), t.tensor_type.name)
            for t in r.tensors
        ],
    }


_FILE_TYPE_NAMES = {0: "f32", 1: "f16", 2: "q4_0", 7: "q8_0", 32: "bf16"}


def describe(spec: str | None) -> ModelInfo:
    """ModelInfo for an HF model spec or a .gguf path."""
    if spec and spec.endswith(".gguf"):
        if not Path(spec).is_file():
            raise R1kitError(f"GGUF file not found: {spec}")
        s = gguf_summary(spec)
        shapes = [(n, shp) for n, shp, _ in s["tensors"]]
        linear = [shp for n, shp in shapes if _is_decoder_linear(n)]
        n = sum(_numel(shp) for _, shp in shapes)
        ft = _FILE_TYPE_NAMES.get(s["file_type"], str(s["file_type"]))
        return ModelInfo(
            spec,
            s["arch"],
            n,
            s["context_length"],
            s["layers"],
            s["hidden"],
            s["heads"],
            s["kv_heads"],
            s["head_dim"],
            s["vocab"],
            not any(n == "output.weight" for n, _ in shapes),
            shapes,
            linear,
            ft,
            Path(spec).stat().st_size,
        )
    from transformers import AutoConfig

    src = resolve_model(spec)  # a hub id: only its config.json is fetched, shapes from it
    try:
        cfg = AutoConfig.from_pretrained(src)
    except (OSError, ValueError) as err:
        raise R1kitError(f"cannot read the config of {src!r}: {str(err).splitlines()[0]}") from None
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    quant = quantization_of(src)  # packed tensors: the shapes come from the config instead
    shapes = []
    for hf, shp in _hf_shapes(src, cfg, from_files=quant is None):
        try:
            name = gguf_tensor_name(hf)
        except R1kitError:  # another architecture: count it under its HF name
            name = hf
        if name and not (tied and name.startswith("output.")):
            shapes.append((name, shp))
    linear = [shp for n, shp in shapes if _is_decoder_linear(n)]
    arch = (getattr(cfg, "architectures", None) or [cfg.model_type])[0]
    arch += f" ({ARCHS[arch]} in GGUF)" if arch in ARCHS else " (no GGUF export yet)"
    info = ModelInfo(
        str(spec or "embedded (r1kit-tiny)"),
        arch,
        sum(_numel(s) for _, s in shapes),
        getattr(cfg, "max_position_embeddings", 0),
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.num_attention_heads,
        getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
        head_dim(cfg),
        cfg.vocab_size,
        tied,
        shapes,
        linear,
        quantization=quant,
    )
    if quant:
        info.file_type = f"GPTQ {quant['bits']}-bit"
        info.file_bytes = sum(f.stat().st_size for f in Path(src).glob("*.safetensors"))
        quant["bits_per_weight"] = packed_bits(src)
    return info


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _is_decoder_linear(name: str) -> bool:
    return name.startswith("blk.") and name.endswith(".weight") and "norm" not in name


def _hf_shapes(src: str, cfg: Any, from_files: bool = True) -> list[tuple[str, tuple[int, ...]]]:
    """Tensor shapes from local safetensors headers (`from_files`), else computed from the
    config."""
    src = Path(src)
    index = src / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values()))
        if index.exists()
        else ["model.safetensors"]
    )
    if from_files and src.is_dir() and all((src / f).exists() for f in files):
        from safetensors import safe_open

        out = []
        for f in files:
            with safe_open(str(src / f), framework="pt") as st:
                out += [(k, tuple(st.get_slice(k).get_shape())) for k in st.keys()]  # noqa: SIM118
        return out
    h, inter, d = cfg.hidden_size, cfg.intermediate_size, head_dim(cfg)
    nq, nkv = (
        cfg.num_attention_heads,
        getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
    )
    bias = getattr(cfg, "attention_bias", cfg.model_type == "qwen2")
    out = [("model.embed_tokens.weight", (cfg.vocab_size, h)), ("model.norm.weight", (h,))]
    if not getattr(cfg, "tie_word_embeddings", False):
        out.append(("lm_head.weight", (cfg.vocab_size, h)))
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
        for proj, rows in (("q", nq * d), ("k", nkv * d), ("v", nkv * d)):
            out.append((p + f"self_attn.{proj}_proj.weight", (rows, h)))
            if bias:
                out.append((p + f"self_attn.{proj}_proj.bias", (rows,)))
        out.append((p + "self_attn.o_proj.weight", (h, nq * d)))
        out += [(p + f"mlp.{m}_proj.weight", (inter, h)) for m in ("gate", "up")]
        out.append((p + "mlp.down_proj.weight", (h, inter)))
    return out


def gguf_bytes(info: ModelInfo, outtype: str) -> int:
    """Tensor bytes of the GGUF at `outtype`, with the exporter's per-tensor types."""
    import gguf

    total = 0
    for name, shape in info.shapes:
        is_out = name == "output.weight" or (info.tied and name == "token_embd.weight")
        qtype, _ = tensor_type(name, shape, outtype, is_out)
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        total += _numel(shape) // block * size
    return total


def kv_cache_bytes(info: ModelInfo, ctx: int) -> int:
    """f16 K and V for every layer: 2 * layers * ctx * kv_heads * head_dim * 2 bytes."""
    return 2 * info.layers * ctx * info.kv_heads * info.head_dim * 2


def lora_params(info: ModelInfo, rank: int) -> int:
    """rank * (in + out) per adapted matrix (A: [rank, in], B: [out, rank])."""
    return sum(rank * (o + i) for o, i in info.linear_shapes)


def memory_table(info: ModelInfo, ctx: int | None = None, lora_rank: int = 16) -> dict[str, Any]:
    """The numbers `r1kit info` prints, in bytes."""
    ctx = ctx or min(info.context_length or RUN_CTX, RUN_CTX)
    kv = kv_cache_bytes(info, ctx)
    run = {t: {"file": gguf_bytes(info, t), "run": gguf_bytes(info, t) + kv} for t in OUTTYPES}
    lp = lora_params(info, lora_rank)
    gptq = None
    if info.quantization:  # packed in vLLM; r1kit and transformers dequantize to bf16
        gptq = {"packed": (info.file_bytes or 0) + kv, "dequantized": 2 * info.params + kv}
    return {
        "ctx": ctx,
        "gptq": gptq,
        "kv_cache": kv,
        "run": run,
        "train_full_fp32": 16 * info.params,
        "train_full_bf16": 8 * info.params,
        "lora_rank": lora_rank,
        "lora_params": lp,
        "train_lora": 2 * info.params + 16 * lp,
    }


def _fmt(n: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def format_info(info: ModelInfo, mem: dict[str, Any]) -> str:
    p = info.params
    size = f"{p / 1e9:.2f}B" if p >= 1e9 else f"{p / 1e6:.1f}M"
    lines = [
        f"model         {info.source}",
        f"architecture  {info.arch}",
        f"parameters    {p:,} ({size})",
        f"context       {info.context_length:,} tokens",
        f"shape         {info.layers} layers, hidden {info.hidden}, {info.heads} heads "
        f"({info.kv_heads} KV) of {info.head_dim}, vocabulary {info.vocab:,}"
        + (", tied embeddings" if info.tied else ""),
    ]
    if info.file_type:
        lines.append(f"file          {info.file_type}, {_fmt(info.file_bytes or 0)}")
    q = info.quantization
    if q:
        bpw = q.get("bits_per_weight")
        lines.append(
            f"quantization  {q['bits']}-bit weights, group size {q['group_size']}, "
            f"{'symmetric' if q.get('symmetric') else 'asymmetric'}, {q['method']} "
            f"{q['format']}"
            + (f" ({bpw:.2f} bits/weight with scales)" if bpw else "")
            + f"; not quantized: {', '.join(q['ignore']) or 'none'}, embeddings, norms"
        )
    if mem.get("gptq"):
        g = mem["gptq"]
        lines += [
            "",
            f"run (weights + bf16 KV cache at {mem['ctx']:,} tokens, {_fmt(mem['kv_cache'])}):",
            f"  packed (vLLM's GPTQ kernels)                     {_fmt(g['packed'])}",
            f"  dequantized to bf16 (r1kit serve on a GPU)       {_fmt(g['dequantized'])}",
        ]
    else:
        lines += [
            "",
            f"run with llama.cpp (weights + f16 KV cache at {mem['ctx']:,} tokens, "
            f"{_fmt(mem['kv_cache'])}):",
            "  outtype  file        memory",
        ]
        for t, r in mem["run"].items():
            lines.append(f"  {t:<7}  {_fmt(r['file']):<10}  {_fmt(r['run'])}")
    lines += [
        "",
        "train (weights, gradients, AdamW state; activations not included):",
        f"  full, fp32                 {_fmt(mem['train_full_fp32'])}",
        f"  full, bf16                 {_fmt(mem['train_full_bf16'])}",
        f"  LoRA rank {mem['lora_rank']:<3} (bf16 base)  {_fmt(mem['train_lora'])} "
        f"({mem['lora_params']:,} adapter params)",
    ]
    return "\n".join(lines)
