"""`r1kit export gptq`: a model's linear layers quantized with GPTQ to 4 or 8 bits, written in the
compressed-tensors format (`pack-quantized`) that `transformers` and vLLM load.

The quantizer is llmcompressor's `GPTQModifier` (vLLM's own quantization library): for each
decoder layer in turn it collects the Hessian of every linear layer's inputs over the calibration
prompts and rounds the weights column by column, correcting the columns not yet rounded for the
error of those already rounded. Weights: symmetric integers with one scale per group of
`group_size` input columns (`strategy: group`), so every linear input width must be a multiple
of the group size. Embeddings, norms and the output head stay in the model's dtype (the head is
tied to the embeddings in the embedded model; quantizing it is not what GPTQ checkpoints do).

Calibration prompts are in the model's own prompt format (`chat.template_of`: R1-Zero for a base
model, the chat template otherwise), drawn from the train split of the dataset it was trained on
(a run directory's config.json names it), else of the built-in task mix; `--calibration
FILE.jsonl` gives them instead (rows with "text", "messages" or "question").

On load, r1kit dequantizes the weights to the model's dtype (`modeling.load_model`), so its paged
engine runs the result as it runs any model (no int4/int8 kernels: memory in use is the dense
model's; vLLM runs the packed weights with its Marlin kernels).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1kit.chat import render_chat, resolve_template
from r1kit.data.datasets import jsonl_objects, task_names, train_stream
from r1kit.errors import R1kitError
from r1kit.export.formats import GPTQ_BITS as BITS
from r1kit.export.gguf import head_dim, model_dir
from r1kit.modeling import load_tokenizer, resolve_model, save_tokenizer
from r1kit.sampling.rollout import prompt

# decoders whose every linear layer is q/k/v/o + gate/up/down: llmcompressor's sequential GPTQ
# handles them and vLLM / transformers load the result (the same set the paged engine runs)
ARCHS = ("Qwen2ForCausalLM", "Qwen3ForCausalLM", "LlamaForCausalLM")
GROUP_SIZES = (128, 64, 32)  # the default is the largest that divides every width
DEFAULT_DATASET = "mix"  # the built-in task mix, when a model does not say what it trained on
FORMAT = "compressed-tensors (pack-quantized)"


@dataclass
class GPTQResult:
    path: Path
    bits: int
    group_size: int
    arch: str
    quantized: int  # linear layers quantized
    size_bytes: int  # model weights on disk
    calibration: str  # where the calibration prompts came from
    samples: int
    errors: dict[str, float] = field(default_factory=dict)  # layer -> GPTQ's loss


def check_bits(bits: int) -> int:
    if bits not in BITS:
        raise R1kitError(f"--bits must be one of {', '.join(map(str, BITS))}, not {bits}")
    return bits


def check_arch(cfg: Any) -> str:
    arch = (getattr(cfg, "architectures", None) or [getattr(cfg, "model_type", "?")])[0]
    if arch not in ARCHS:
        raise R1kitError(
            f"cannot export {arch} to GPTQ; supported architectures: {', '.join(ARCHS)}"
        )
    if getattr(cfg, "quantization_config", None):
        raise R1kitError("the model is already quantized; export its unquantized original")
    return arch


def input_widths(cfg: Any) -> dict[str, int]:
    """The input width of each kind of quantized linear layer: GPTQ groups run along it."""
    return {
        "q/k/v/gate/up_proj (hidden_size)": cfg.hidden_size,
        "o_proj (heads x head_dim)": cfg.num_attention_heads * head_dim(cfg),
        "down_proj (intermediate_size)": cfg.intermediate_size,
    }


def group_size_for(cfg: Any, requested: int | None) -> int:
    """`requested` when it divides every input width, else a one-line error naming the width it
    does not divide and the sizes that would; None: the largest of 128, 64, 32 that fits."""
    widths = input_widths(cfg)
    fits = [g for g in GROUP_SIZES if all(w % g == 0 for w in widths.values())]
    if requested is None:
        if not fits:
            raise R1kitError(
                f"no group size of {', '.join(map(str, GROUP_SIZES))} divides the model's input "
                f"widths ({', '.join(f'{k} {v}' for k, v in widths.items())}); pass --group-size"
            )
        return fits[0]
    if requested <= 0:
        raise R1kitError(f"--group-size must be positive, not {requested}")
    for what, w in widths.items():
        if w % requested:
            hint = f"; {', '.join(map(str, fits))} would" if fits else ""
            raise R1kitError(
                f"--group-size {requested} does not divide the input width {w} of {what}{hint}"
            )
    return requested


def trained_dataset(spec: str | None) -> str | None:
    """The dataset a run directory's config.json names (its `dataset`, at the top or in a
    part), when it is a task spec or a local .jsonl of questions; None otherwise."""
    if spec is None or not Path(spec).is_dir() or Path(resolve_model(spec)) == Path(spec):
        return None  # not a run dir: its config.json is the model's
    saved = Path(spec) / "config.json"
    try:
        cfg = json.loads(saved.read_text())
    except (OSError, ValueError):
        return None
    parts = [cfg, *(v for v in cfg.values() if isinstance(v, dict))]
    for part in parts:
        ds = part.get("dataset")
        if isinstance(ds, str) and (task_names(ds) is not None or Path(ds).is_file()):
            return ds
    return None


def calibration_texts(
    spec: str | None, tokenizer: Any, n: int, file: str | None = None
) -> tuple[list[str], str]:
    """(n prompts as the model sees them, where they came from). From `file`: a row's "text" as
    it is, "messages" through the chat template, "question" in the model's prompt format. Else
    the train split of the model's training dataset (or the built-in mix), in its format."""
    template = resolve_template(tokenizer, "auto")
    if file is not None:
        texts = []
        for row, where in jsonl_objects(file, "calibration file"):
            if isinstance(row.get("text"), str):
                texts.append(row["text"])
            elif isinstance(row.get("messages"), list):
                texts.append(render_chat(tokenizer, row["messages"]))
            elif isinstance(row.get("question"), str):
                texts.append(prompt(tokenizer, row["question"], template)[0])
            else:
                raise R1kitError(f"{where}: a calibration row needs text, messages or question")
        if not texts:
            raise R1kitError(f"{file} has no calibration rows")
        return texts[:n], f"{file} ({min(n, len(texts))} rows)"
    ds = trained_dataset(spec) or DEFAULT_DATASET
    rows = itertools.islice(train_stream(ds, seed=0), n)
    texts = [prompt(tokenizer, ex["question"], template)[0] for ex in rows]
    return texts, f"{ds} train split, {template} format ({len(texts)} prompts)"


def export_gptq(
    model: str | None,
    out: str | Path,
    bits: int = 4,
    group_size: int | None = None,
    calibration: str | None = None,
    samples: int = 128,
    max_seq_len: int = 512,
) -> GPTQResult:
    """Quantize MODEL with GPTQ and write it to `out` (a directory: config.json with its
    quantization_config, model.safetensors, tokenizer and chat template)."""
    check_bits(bits)
    from transformers import AutoConfig

    src = model_dir(model)
    cfg = AutoConfig.from_pretrained(src)
    arch = check_arch(cfg)
    group = group_size_for(cfg, group_size)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise R1kitError(f"{out} exists and is not empty; pass a new --out directory")
    tok = load_tokenizer(str(src))
    texts, where = calibration_texts(model, tok, samples, calibration)
    with _quiet():  # llmcompressor's import warns there is no GPU; transformers' load bar
        llmc = _llmcompressor()

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    # quantize in the dtype the model was saved in: scales are stored in it
    with _quiet():
        net = AutoModelForCausalLM.from_pretrained(src, dtype="auto")
    ids = [tok(t, add_special_tokens=False)["input_ids"][:max_seq_len] for t in texts]
    data = Dataset.from_dict({"input_ids": ids})
    scheme = llmc.QuantizationScheme(
        targets=["Linear"],
        weights=llmc.QuantizationArgs(
            num_bits=bits, type="int", symmetric=True, strategy="group", group_size=group
        ),
    )
    recipe = llmc.GPTQModifier(
        config_groups={"group_0": scheme}, ignore=["lm_head"], dampening_frac=0.01
    )
    errors = _run_oneshot(llmc, net, data, recipe, len(ids), max_seq_len)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), _quiet():  # "offloaded modules": llmcompressor's CPU dispatch
        net.save_pretrained(out, save_compressed=True)
    save_tokenizer(tok, out)
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    quantized = sum(1 for m in net.modules() if getattr(m, "quantization_scheme", None))
    return GPTQResult(out, bits, group, arch, quantized, size, where, len(ids), errors)


class _Llmc:
    """The llmcompressor / compressed-tensors names export_gptq uses, imported once."""

    def __init__(self) -> None:
        from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
        from llmcompressor import oneshot
        from llmcompressor.modifiers.quantization import GPTQModifier

        self.oneshot = oneshot
        self.GPTQModifier = GPTQModifier
        self.QuantizationArgs = QuantizationArgs
        self.QuantizationScheme = QuantizationScheme


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Progress bars, log lines and warnings written to stderr are dropped (an exception still
    propagates with its message)."""
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _llmcompressor() -> _Llmc:
    # llmcompressor is heavy and optional (the `gptq` extra): imported only here. Its console
    # log (every layer at INFO, "no accelerator" on a CPU) is kept to errors
    os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "ERROR")
    # torch.fx warns once that is_fx_tracing also covers torch.export, as llmcompressor traces
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    try:
        return _Llmc()
    except ImportError as err:
        raise R1kitError(
            f"GPTQ export needs llmcompressor ({err.name or err} is missing): "
            "pip install 'r1kit[gptq]' (see the README for the --no-deps step)"
        ) from None


def _run_oneshot(llmc: _Llmc, net: Any, data: Any, recipe: Any, n: int, seq_len: int) -> dict:
    """llmcompressor's oneshot with its log and progress bars kept off the terminal; returns
    {layer: GPTQ loss} as it logs them (the squared error of the layer's outputs on the
    calibration inputs, after rounding)."""
    from loguru import logger

    errors: dict[str, float] = {}
    current: list[str] = []

    def sink(msg: Any) -> None:
        text = msg.record["message"]
        if text.startswith("Quantizing") and "module(s):" in text:
            current[:] = [text.split("['", 1)[-1].rstrip("']")]
        elif text.startswith("error ") and current:
            errors[current[0]] = float(text.split()[1])

    hook = logger.add(sink, level=0)
    try:
        with _quiet():
            llmc.oneshot(
                model=net,
                dataset=data,
                recipe=recipe,
                num_calibration_samples=n,
                max_seq_length=seq_len,
                # its shuffle draws from torch's global generator: the Hessians' summation order,
                # and so the rounding of some weights, changed from run to run
                shuffle_calibration_samples=False,
            )
    finally:
        logger.remove(hook)
    return errors


def packed_bits(path: str | Path) -> float | None:
    """Bits per weight of the quantized linear layers on disk (packed ints plus their scales),
    from the safetensors headers; None when the directory holds no packed weights."""
    from safetensors import safe_open

    stored = weights = 0
    for f in Path(path).glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if not key.endswith((".weight_packed", ".weight_scale", ".weight_shape")):
                    continue
                if key.endswith(".weight_shape"):  # [out, in] of the original matrix
                    weights += int(math.prod(st.get_tensor(key).tolist()))
                else:
                    sl = st.get_slice(key)
                    stored += math.prod(sl.get_shape()) * _itemsize(sl.get_dtype())
    return 8 * stored / weights if weights else None


def _itemsize(dtype: str) -> int:
    return {"F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I64": 8, "I8": 1, "U8": 1}.get(dtype, 4)


def quantization_of(path: str | Path) -> dict[str, Any] | None:
    """{bits, group_size, format, ...} of a compressed-tensors model directory, else None."""
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        return None
    q = json.loads(cfg_file.read_text()).get("quantization_config")
    if not q:
        return None
    if q.get("quant_method") != "compressed-tensors":
        return {"method": q.get("quant_method", "?"), "bits": q.get("bits"), "format": "?"}
    groups = list(q.get("config_groups", {}).values())
    w = (groups[0] if groups else {}).get("weights") or {}
    return {
        "method": "compressed-tensors",
        "format": q.get("format"),
        "bits": w.get("num_bits"),
        "group_size": w.get("group_size"),
        "symmetric": w.get("symmetric"),
        "ignore": q.get("ignore", []),
    }
