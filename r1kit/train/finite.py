"""The non-finite guard every trainer runs around its optimizer step (`--nan-policy stop|skip`).

    guard = NonFiniteGuard(cfg.run.nan_policy, lr=cfg.optim.lr, out=run.out)
    ... backward ...
    gn = clip_grad_norm_(...)
    if guard.check(step, loss, dist.to_float(gn), optimizer):   # agreed over the ranks
        optimizer.step()
        guard.check_weights(step, optimizer)                     # the updated weights
    row["nonfinite_skipped"] = guard.take_skipped()

Before the step the loss and the gradient norm must be finite. When one is not, the step is not
applied: the gradients are dropped and `optimizer.step()` is never called, so neither the
weights nor the optimizer's state (Adam's moments and step count) see it. `stop` (the default)
then ends the run with one line naming the step, what was not finite and the likely cause;
`skip` goes on with the next batch, counts the skipped step in the metrics row, and stops as
`stop` does after MAX_CONSECUTIVE_SKIPS skipped steps in a row; a run that ends totals them in
summary.json and in its last lines (train/skipped.py).

After the step the updated weights are checked (max |w| per tensor in one fused reduction,
torch._foreach_norm with ord inf: NaN and inf survive it and large finite values cannot overflow
it; one host sync per device). Weights that became non-finite from finite gradients cannot be
restored cheaply (it takes an absurd learning rate), so this always stops, whatever the policy.
The same check refuses to write a checkpoint or a final model with non-finite weights
(`require_finite`): no file of a run ever holds a non-finite model.

Under torchrun every rank checks what it holds (its loss share, its parameter shards) and the
verdict is agreed over the ranks (dist.all_reduce), so every rank skips or stops at the same step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from r1kit import dist
from r1kit.errors import R1kitError

NAN_POLICIES = ("stop", "skip")
MAX_CONSECUTIVE_SKIPS = 5  # skip: this many skipped steps in a row stop the run
# what was not finite, by severity (the largest code over the ranks is reported)
_OK, _GRAD_NORM, _LOSS, _WEIGHTS = 0, 1, 2, 3
_WHAT = {_GRAD_NORM: "the gradient norm", _LOSS: "the loss", _WEIGHTS: "the updated weights"}


class NonFiniteError(R1kitError):
    """A training step met a non-finite loss, gradient norm or weights and the run stops."""


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a parameter (an FSDP2 DTensor's local shard), else the tensor."""
    return t.to_local() if hasattr(t, "to_local") else t


@torch.no_grad()
def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Every element of every tensor finite (this rank's shards only; no collective). One fused
    max-|x| reduction per device and dtype group, one host sync per device."""
    ts = [t for t in (_local(t).detach() for t in tensors) if t.numel()]
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in ts:
        by_device.setdefault(t.device, []).append(t)
    for group in by_device.values():
        # max |x| of each tensor, as float32 0-d tensors (stacked without a cast per tensor)
        peaks = torch._foreach_norm(group, float("inf"), dtype=torch.float32)
        if not bool(torch.stack(peaks).isfinite().all()):
            return False
    return True


def weights_finite(model: Any, agree: bool = True) -> bool:
    """The model's parameters are all finite; `agree`: over the ranks (every rank must call it,
    each checking its shards), else this process's view alone (rank 0 writing final/)."""
    ok = all_finite(model.parameters())
    if agree:
        ok = dist.all_reduce(0.0 if ok else 1.0, "max") == 0
    return ok


def require_finite(model: Any, what: str, agree: bool = True) -> None:
    """Refuse (one line) to write `what` (a checkpoint, final/) from a model whose weights are
    not all finite."""
    if not weights_finite(model, agree):
        raise NonFiniteError(
            f"refusing to write {what}: the model's weights are not finite (NaN or inf)"
        )


def last_checkpoint_step(out: Path | None) -> int | None:
    """The step of the checkpoint OUT/checkpoints/latest names (None: none, or unreadable)."""
    if out is None:
        return None
    try:
        name = (Path(out) / "checkpoints" / "latest").read_text().strip()
        return int(name.rsplit("-", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def likely_cause(lr: float) -> str:
    """What most likely made a step non-finite, as advice in the error line."""
    if lr > 1e-2:  # far above any AdamW fine-tuning rate
        return f"the learning rate {lr:g} is likely too high (try --lr {min(lr / 100, 1e-5):g})"
    return (
        f"the learning rate {lr:g} may be too high (try --lr {lr / 10:g}), "
        "or this step's data or rewards held a non-finite value"
    )


class NonFiniteGuard:
    """One trainer's guard (see the module docstring). `lr`: the run's peak learning rate (the
    advice names it); `out`: the run directory (the error names its newest checkpoint)."""

    def __init__(
        self,
        policy: str = "stop",
        *,
        lr: float,
        out: str | Path | None = None,
        max_consecutive: int = MAX_CONSECUTIVE_SKIPS,
    ) -> None:
        if policy not in NAN_POLICIES:
            raise R1kitError(f"--nan-policy must be one of {', '.join(NAN_POLICIES)}: {policy!r}")
        self.policy, self.lr, self.max_consecutive = policy, lr, max_consecutive
        self.out = None if out is None else Path(out)
        self.consecutive = 0  # skipped steps in a row, up to the last check
        self.skipped = 0  # skipped steps since the last take_skipped()

    def _stop(
        self, step: int | str, code: int, value: float | None, tail: str = ""
    ) -> NonFiniteError:
        what = _WHAT[code]
        shown = "are not finite" if code == _WEIGHTS else f"is {value}"
        line = f"step {step}: {what} {shown}{tail}; {likely_cause(self.lr)}"
        if self.out is not None:  # where the run stands on disk
            saved = last_checkpoint_step(self.out)
            line += "; no checkpoint was written" + (
                f" after step {saved}" if saved is not None else ""
            )
        return NonFiniteError(line)

    def check(self, step: int | str, loss: float, grad_norm: float, optimizer: Any) -> bool:
        """Before the optimizer step: True when it may be applied. Otherwise the gradients are
        dropped (optimizer.zero_grad) and, under `stop` or after too many skips in a row,
        NonFiniteError is raised; under `skip` False is returned (do not call optimizer.step)."""
        code = _LOSS if not math.isfinite(loss) else _OK if math.isfinite(grad_norm) else _GRAD_NORM
        code = int(dist.all_reduce(float(code), "max"))  # every rank takes the same branch
        if code == _OK:
            self.consecutive = 0
            return True
        optimizer.zero_grad(set_to_none=True)
        self.consecutive += 1
        self.skipped += 1
        value = loss if code == _LOSS else grad_norm
        # the same value on every rank (so the same line): the sum of the non-finite ones
        value = dist.all_reduce(0.0 if math.isfinite(value) else value)
        if self.policy == "stop":
            raise self._stop(step, code, value)
        if self.consecutive >= self.max_consecutive:
            tail = f" ({self.consecutive} steps in a row skipped, --nan-policy skip)"
            raise self._stop(step, code, value, tail)
        return False

    def check_weights(self, step: int | str, optimizer: Any) -> None:
        """After the optimizer step: the parameters it updated (only the adapters under LoRA)
        are finite, else NonFiniteError (whatever the policy: they cannot be restored)."""
        params = [p for g in optimizer.param_groups for p in g["params"]]
        ok = all_finite(params)
        if dist.all_reduce(0.0 if ok else 1.0, "max") > 0:
            raise self._stop(step, _WEIGHTS, None)

    def take_skipped(self) -> int:
        """Steps skipped since the last call (the metrics row's `nonfinite_skipped`)."""
        n, self.skipped = self.skipped, 0
        return n
