"""Crash-safe checkpoints: HF-format model + trainer state, written to a temp dir then renamed.

OUT/checkpoints/step-000040/{config.json, model.safetensors, tokenizer files, trainer_state.pt}
OUT/checkpoints/latest  -> a text file naming the newest complete checkpoint
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from r1kit.modeling import save_model


def save_checkpoint(
    out: Path, step: int, model, tokenizer, optimizer, extra: dict[str, Any]
) -> Path:
    ckdir = out / "checkpoints"
    final = ckdir / f"step-{step:06d}"
    tmp = ckdir / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tokenizer, tmp)
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "rng": {"python": random.getstate(), "torch": torch.get_rng_state()},
        **extra,
    }
    torch.save(state, tmp / "trainer_state.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = ckdir / ".latest.tmp"
    latest_tmp.write_text(final.name)
    os.replace(latest_tmp, ckdir / "latest")
    return final


def latest_checkpoint(out: Path) -> Path | None:
    pointer = out / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    path = out / "checkpoints" / pointer.read_text().strip()
    return path if (path / "trainer_state.pt").exists() else None


def load_trainer_state(ckpt: Path, optimizer) -> dict[str, Any]:
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    random.setstate(state["rng"]["python"])
    torch.set_rng_state(state["rng"]["torch"])
    return state
