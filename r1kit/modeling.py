"""Load and save model + tokenizer: the embedded default, a local directory, or a hub id."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from r1kit.errors import R1kitError

EMBEDDED_DIR = Path(__file__).parent / "assets" / "tiny"
EMBEDDED_NAMES = ("tiny", "r1kit-tiny", "embedded")


def resolve_model(spec: str | None) -> str:
    """Map a user's model argument to something `from_pretrained` takes, or explain why not."""
    if spec is None or spec in EMBEDDED_NAMES:
        if not (EMBEDDED_DIR / "config.json").exists():
            raise R1kitError(
                f"the embedded model is missing from {EMBEDDED_DIR}; rebuild it with "
                "`r1kit pretrain --preset tiny`"
            )
        return str(EMBEDDED_DIR)
    path = Path(spec).expanduser()
    if path.exists():
        # a run directory from `r1kit zero` (its config.json is the job's, not a model's): use
        # its final model, else its latest checkpoint (OUT/checkpoints/latest names it)
        if (path / "final" / "config.json").exists():
            return str(path / "final")
        pointer = path / "checkpoints" / "latest"
        if pointer.is_file():
            ckpt = path / "checkpoints" / pointer.read_text().strip()
            if (ckpt / "config.json").exists():
                return str(ckpt)
        if not (path / "config.json").exists():
            raise R1kitError(f"{spec} is not a model directory (no config.json in it)")
        return str(path)
    looks_like_path = (
        spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").split("/", 1)[-1]
    )
    if looks_like_path or spec.count("/") != 1:
        raise R1kitError(f"model path does not exist: {spec}")
    return spec  # a hub id such as Qwen/Qwen2.5-0.5B


def _hub_error(spec: str, err: Exception) -> R1kitError:
    if Path(spec).exists():
        return R1kitError(f"cannot load the model in {spec}: {str(err).splitlines()[0]}")
    return R1kitError(
        f"cannot load {spec!r} from the Hugging Face hub ({type(err).__name__}); if this machine "
        "is offline, download the model elsewhere and pass its local directory instead"
    )


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()


def load_tokenizer(spec: str | None) -> Any:
    from transformers import AutoTokenizer

    name = resolve_model(spec)
    try:
        tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise _hub_error(name, err) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: str | None, dtype: Any = None, device: str = "cpu") -> Any:
    """A causal LM in train-ready precision: float32 on CPU, bfloat16 on GPU unless told."""
    import torch
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    name = resolve_model(spec)
    dtype = dtype or (torch.float32 if device == "cpu" else torch.bfloat16)
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    except (OSError, ValueError) as err:
        raise _hub_error(name, err) from None
    return model.to(device)


def load_model_and_tokenizer(spec: str | None, device: str = "cpu") -> tuple[Any, Any]:
    return load_model(spec, device=device), load_tokenizer(spec)


def save_model(model: Any, tokenizer: Any, out_dir: str | Path) -> None:
    _quiet_transformers()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    save_tokenizer(tokenizer, out)


def save_tokenizer(tokenizer: Any, out_dir: str | Path) -> None:
    """save_pretrained, plus an explicit `"unk_token": null` for byte-level tokenizers without
    one: transformers 5 loads a qwen2-typed dir as Qwen2Tokenizer, which otherwise adds its
    default `<|endoftext|>` as a new id past the model's vocabulary."""
    import json

    tokenizer.save_pretrained(out_dir)
    if tokenizer.unk_token is None:
        path = Path(out_dir) / "tokenizer_config.json"
        cfg = json.loads(path.read_text())
        cfg["unk_token"] = None
        path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
