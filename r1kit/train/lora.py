"""LoRA through `peft`, for policies too large to fine-tune fully on one GPU.

The trainer updates only the adapters; the engine samples from W + (alpha / r) * B @ A, merged
into its own copy of each adapted weight at `sync_weights()` (engine/model.py). Checkpoints keep
a merged, plain `transformers` model (so `r1kit eval` / `serve` read them as they are) and the
adapter tensors in trainer_state.pt, which `--resume` loads back onto the base model.
"""

from __future__ import annotations

import copy

import torch

from r1kit.errors import R1kitError


def _peft():
    try:
        import peft
    except ImportError:
        raise R1kitError("--lora-rank needs the peft package: pip install peft") from None
    return peft


def add_lora(model, rank: int, alpha: float = 0.0, targets: str = "all-linear"):
    """Wrap `model` with LoRA adapters of rank `rank` (alpha 0 means 2 * rank)."""
    peft = _peft()
    modules = targets if targets == "all-linear" else [t.strip() for t in targets.split(",")]
    cfg = peft.LoraConfig(
        r=rank,
        lora_alpha=alpha or 2 * rank,
        target_modules=modules,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, cfg)


def is_lora(model) -> bool:
    return hasattr(model, "peft_config")


def lora_state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in _peft().get_peft_model_state_dict(model).items()}


def load_lora_state(model, state: dict[str, torch.Tensor]) -> None:
    _peft().set_peft_model_state_dict(model, state)


def merged(model):
    """A plain `transformers` model with the adapters merged in (the live model is untouched)."""
    if not is_lora(model):
        return model
    return copy.deepcopy(model).merge_and_unload()
