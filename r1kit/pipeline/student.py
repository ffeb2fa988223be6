"""A smaller student from a bigger model by keeping some of its decoder layers.

Why truncation and not a fresh pretraining run: it is instant (a fresh tiny base takes ~20 min
of CPU), the student keeps the teacher family's tokenizer and embeddings (so traces tokenize
the same), and the kept layers start from trained weights, as in DistilBERT's initialisation
from every other layer. The truncated model is much weaker than its source, which is the
setting of R1's distillation result: the student has to learn to reason from the traces.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig

from r1kit.errors import R1kitError
from r1kit.modeling import load_model, load_tokenizer, resolve_model, save_model


def parse_layers(spec: str, n: int) -> list[int]:
    try:
        keep = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise R1kitError(f"--student-layers takes layer numbers like '0,3', not {spec!r}") from None
    if not keep or len(set(keep)) != len(keep) or not all(0 <= i < n for i in keep):
        raise R1kitError(f"--student-layers {spec!r}: distinct layer numbers in 0..{n - 1}")
    return sorted(keep)


def check_student(spec: str | None, layers: str) -> None:
    """Before any teacher is asked: the student exists, and --student-layers fits its depth
    (read from its config.json; a hub model not in the local cache is checked when it loads)."""
    name = resolve_model(spec)  # a bad path: one line
    if not layers:
        return
    try:
        n = AutoConfig.from_pretrained(name).num_hidden_layers
    except (OSError, ValueError, AttributeError):
        return
    parse_layers(layers, n)


def shrink(spec: str | None, layers: str, out: str | Path) -> dict:
    """Save a copy of `spec` with only `layers` (e.g. '0,3') to `out`; returns sizes."""
    import torch

    model, tok = load_model(spec), load_tokenizer(spec)
    before = sum(p.numel() for p in model.parameters())
    dec = model.get_decoder()
    keep = parse_layers(layers, len(dec.layers))
    dec.layers = torch.nn.ModuleList([dec.layers[i] for i in keep])
    for new_idx, layer in enumerate(dec.layers):  # the KV cache indexes layers by position
        if hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = new_idx
    cfg = model.config
    cfg.num_hidden_layers = len(keep)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [cfg.layer_types[i] for i in keep]
    save_model(model, tok, out)
    return {
        "params_before": before,
        "params_after": sum(p.numel() for p in model.parameters()),
        "layers_kept": keep,
    }
