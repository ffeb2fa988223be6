"""The pipeline's per-stage report: a table in the terminal, report.md and report.png."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from r1kit.train import files

COLUMNS = [
    ("pass@1", "pass1"),
    ("pass@k", "passk"),
    ("format", "format_rate"),
    ("lang. consistency", "language_consistency"),
    ("lang. mixing", "language_mixing_rate"),
    ("malformed", "malformed_rate"),
    ("mean len", "mean_length"),
]


def _cells(row: dict[str, Any]) -> list[str]:
    ev = row.get("eval")
    if not ev:
        return ["-"] * len(COLUMNS)
    return [f"{ev[k]:.3f}" if k != "mean_length" else f"{ev[k]:.1f}" for _, k in COLUMNS]


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="R1 pipeline: held-out evaluation after each stage")
    t.add_column("stage")
    t.add_column("kind")
    for label, _ in COLUMNS:
        t.add_column(label, justify="right")
    t.add_column("wall s", justify="right")
    for r in rows:
        t.add_row(r["stage"], r["kind"], *_cells(r), f"{r['wall_s']:.0f}")
    Console(width=max(Console().width, 130)).print(t)


def write_report(rows: list[dict[str, Any]], out: Path) -> None:
    head = "| stage | kind | " + " | ".join(c for c, _ in COLUMNS) + " | wall s |"
    lines = ["# R1 pipeline report", "", head, "|" + "---|" * (len(COLUMNS) + 3)]
    for r in rows:
        lines.append(
            f"| {r['stage']} | {r['kind']} | " + " | ".join(_cells(r)) + f" | {r['wall_s']:.0f} |"
        )
    files.write_text(out / "report.md", "\n".join(lines) + "\n")  # atomic, as every run file
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev_rows = [r for r in rows if r.get("eval")]
    names = [r["stage"] for r in ev_rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].bar(names, [r["eval"]["pass1"] for r in ev_rows], color="tab:blue")
    axes[0].set_title("held-out pass@1")
    axes[1].bar(names, [r["eval"]["malformed_rate"] for r in ev_rows], color="tab:red")
    axes[1].set_title("malformed-output rate (format or readability)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    files.write_bytes(out / "report.png", png.getvalue())
