"""Crash-safe checkpoints: HF-format model + trainer state, written to a temp dir then renamed.

OUT/checkpoints/step-000040/{config.json, model.safetensors, tokenizer files, trainer_state.pt}
OUT/checkpoints/latest  -> a text file naming the newest complete checkpoint

Under torchrun (r1kit/dist.py) the optimizer and the weights are also saved sharded:
step-000040/dcp/ (torch.distributed.checkpoint, every rank writes its shards), and rank 0 writes
the rest, the HF model from its engine's full copy (so the directory loads as it is); resuming
reads dcp/, whatever the number of ranks then (one plain process included).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from r1kit import dist
from r1kit.modeling import save_model, save_tokenizer


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


def save_sharded_checkpoint(
    out: Path, step: int, model, full_model, tokenizer, optimizer, extra: dict[str, Any]
) -> Path:
    """save_checkpoint for a sharded `model` (all ranks call it): its shards and the optimizer's
    under dcp/, the plain HF model from `full_model` (an unsharded copy, rank 0's). Without
    `full_model` (SFT keeps no full copy) only the model config and tokenizer go beside dcp/;
    dist.export_hf turns it into a plain HF directory."""
    ckdir = Path(out) / "checkpoints"
    final = ckdir / f"step-{step:06d}"
    tmp = ckdir / f".tmp-step-{step:06d}"
    if dist.is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    dist.save_sharded(tmp / "dcp", model, optimizer)
    if dist.is_main():
        if full_model is not None:
            save_model(full_model, tokenizer, tmp)
        else:
            model.config.save_pretrained(tmp)
            save_tokenizer(tokenizer, tmp)
        state = {
            "step": step,
            "world_size": dist.world(),
            "rng": {"python": random.getstate(), "torch": torch.get_rng_state()},
            **extra,
        }
        torch.save(state, tmp / "trainer_state.pt")
    dist.barrier()  # every shard written before the rename
    if dist.is_main():
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        latest_tmp = ckdir / ".latest.tmp"
        latest_tmp.write_text(final.name)
        os.replace(latest_tmp, ckdir / "latest")
    dist.barrier()
    return final


def latest_checkpoint(out: Path) -> Path | None:
    pointer = out / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    path = out / "checkpoints" / pointer.read_text().strip()
    return path if (path / "trainer_state.pt").exists() else None


def load_trainer_state(ckpt: Path, optimizer, model=None) -> dict[str, Any]:
    """Optimizer state and RNGs back; a sharded checkpoint (dcp/) also loads the weights into
    `model` (sharded or not)."""
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    if (ckpt / "dcp").is_dir():
        if model is None:
            raise ValueError(
                "a sharded checkpoint loads weights and optimizer together: pass model"
            )
        dist.load_sharded(ckpt / "dcp", model, optimizer)
    else:
        optimizer.load_state_dict(state["optimizer"])
    random.setstate(state["rng"]["python"])
    torch.set_rng_state(state["rng"]["torch"])
    return state
