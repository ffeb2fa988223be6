"""The steps `--nan-policy skip` did not apply (train/finite.py), totalled when a run ends:
summary.json's `nonfinite_skipped` and `nonfinite_skipped_steps`, and the line under the
end-of-run report. Counted from metrics.jsonl, where each step's row has its own count.

No torch here: the CLI's report imports it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def skipped_steps(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """summary.json's account of the steps `--nan-policy skip` did not apply, from the run's
    metrics rows (every attempt's, so a resumed run counts them all): `nonfinite_skipped`, the
    optimizer steps not applied (GRPO with mu > 1 may skip several in one step), and
    `nonfinite_skipped_steps`, the steps they belong to."""
    counts = [(r["step"], r.get("nonfinite_skipped") or 0) for r in rows]
    return {
        "nonfinite_skipped": sum(n for _, n in counts),
        "nonfinite_skipped_steps": [step for step, n in counts if n],
    }


def skipped_line(summary: dict[str, Any], shown: int = 10) -> str | None:
    """The end-of-run line about skipped steps (None when there were none): how many, and the
    first `shown` of the steps they belong to."""
    n, steps = summary.get("nonfinite_skipped", 0), summary.get("nonfinite_skipped_steps", [])
    if not n:
        return None
    listed = ", ".join(map(str, steps[:shown])) + (", ..." if len(steps) > shown else "")
    return (
        f"non-finite loss or gradients: {n} update{'' if n == 1 else 's'} skipped "
        f"(--nan-policy skip), at step{'' if len(steps) == 1 else 's'} {listed}"
    )
