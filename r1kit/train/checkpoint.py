"""Crash-safe checkpoints: HF-format model + trainer state, written to a temp dir then renamed.

OUT/checkpoints/step-000040/{config.json, model.safetensors, tokenizer files, trainer_state.pt,
                             manifest.json}
OUT/checkpoints/latest  -> a text file naming the newest complete checkpoint
OUT/final/              -> the trained model, written the same way (save_final)

Every checkpoint's manifest.json (r1kit/manifest.py: sha256 and size of every file, dcp/ shards
included) is written last, inside the temp dir, before the rename. `select_checkpoint` (what
--resume continues from) verifies it and falls back to the newest intact checkpoint, saying
what it skipped. Once `latest` names a new checkpoint, all but the newest `keep_last` are pruned.

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
from r1kit.errors import R1kitError
from r1kit.manifest import choose_checkpoint, step_dirs, step_of, write_manifest
from r1kit.modeling import save_model, save_tokenizer
from r1kit.train.files import fsync_dir, warn, write_text

KEEP_LAST = 3  # checkpoints kept by default (--keep-last)


def save_checkpoint(
    out: Path,
    step: int,
    model,
    tokenizer,
    optimizer,
    extra: dict[str, Any],
    keep_last: int = KEEP_LAST,
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
    write_manifest(tmp)
    publish(tmp, final, keep_last)
    return final


def save_sharded_checkpoint(
    out: Path,
    step: int,
    model,
    full_model,
    tokenizer,
    optimizer,
    extra: dict[str, Any],
    keep_last: int = KEEP_LAST,
) -> Path:
    """save_checkpoint for a sharded `model` (all ranks call it): its shards and the optimizer's
    under dcp/, the plain HF model from `full_model` (an unsharded copy, rank 0's). Without
    `full_model` (SFT keeps no full copy) only the model config and tokenizer go beside dcp/;
    dist.export_hf turns it into a plain HF directory."""
    ckdir = Path(out) / "checkpoints"
    final = ckdir / f"step-{step:06d}"
    tmp = ckdir / f".tmp-step-{step:06d}"

    def fresh() -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)

    def rest() -> None:
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

    def done() -> None:
        write_manifest(tmp)
        publish(tmp, final, keep_last)

    # rank 0's parts end in a barrier that carries their failure (a full disk) to every rank
    dist.main_part(fresh, ckdir)
    dist.save_sharded(tmp / "dcp", model, optimizer)  # DCP raises a failure on every rank
    dist.main_part(rest, ckdir)  # every shard written before the manifest and the rename
    dist.main_part(done, ckdir)
    return final


def publish(tmp: Path, final: Path, keep_last: int) -> None:
    """Rename the complete temp dir `tmp` (manifest written) to `final`, point `latest` at it,
    then prune: a crash at any point leaves `latest` naming a complete checkpoint."""
    ckdir = final.parent
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    fsync_dir(ckdir)
    write_text(ckdir / "latest", final.name)
    prune(ckdir, final, keep_last)


def prune(ckdir: Path, current: Path, keep_last: int) -> list[Path]:
    """Remove the checkpoints older than `current` (the one `latest` names now) beyond the
    newest `keep_last` (0: keep all), and what interrupted writes and prunes left behind. A
    newer step-* (a run resumed from an earlier step) is left for the run to overwrite. Each is
    renamed to a hidden name first, so a crash mid-removal leaves no half-deleted step-*."""
    older = [d for d in step_dirs(ckdir) if step_of(d) < step_of(current)]
    doomed = older[max(keep_last - 1, 0) :] if keep_last > 0 else []
    for d in doomed:
        gone = ckdir / f".prune-{d.name}"
        shutil.rmtree(gone, ignore_errors=True)
        os.replace(d, gone)
    for leftover in ckdir.glob(".prune-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in ckdir.glob(".tmp-step-*"):  # one writer (the run's lock): all are stale
        shutil.rmtree(leftover, ignore_errors=True)
    return doomed


def select_checkpoint(out: Path) -> Path | None:
    """The checkpoint --resume continues from: the one `latest` names when it verifies
    (manifest sha256 of every file), else the newest intact step-* with one line saying what
    was skipped and why (and `latest` then names it); None when there is no checkpoint; an
    R1kitError when none is intact.
    A checkpoint from before manifests is used with a warning that it cannot be verified."""
    choice = choose_checkpoint(out, full=True)
    if choice.path is None:
        if not choice.found:
            return None
        reasons = "; ".join(choice.skipped)
        raise R1kitError(
            f"no intact checkpoint in {Path(out) / 'checkpoints'} to resume from: {reasons}; "
            "start the run again with --overwrite"
        )
    if choice.skipped:
        warn(f"{'; '.join(choice.skipped)}; resuming from {choice.path.name}")
        write_text(choice.path.parent / "latest", choice.path.name)  # the pointer names it again
    if choice.unverified:
        warn(
            f"checkpoint {choice.path.name} has no manifest.json (written before r1kit "
            "checked checkpoints): it cannot be verified"
        )
    return choice.path


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint (sizes checked, no hashing), quietly; None if none."""
    return choose_checkpoint(out, full=False).path


def save_final(out: Path, model, tokenizer) -> Path:
    """OUT/final: the model saved to a temp dir with its manifest, then renamed over an older
    final/ (moved aside first, removed after), so final/ is always complete or absent."""
    final, tmp, old = out / "final", out / ".tmp-final", out / ".old-final"
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    save_model(model, tokenizer, tmp)
    write_manifest(tmp)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(out)
    shutil.rmtree(old, ignore_errors=True)
    return final


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
