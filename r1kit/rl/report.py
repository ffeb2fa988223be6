"""metrics.jsonl -> report.png: the R1-Zero figures (accuracy, reward, length, reflection)."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_report(
    metrics: list[dict], out_png: Path, base: dict | None = None, final: dict | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [m["step"] for m in metrics]
    panels = [
        ("accuracy", "training accuracy", "pass1"),
        ("reward", "mean reward", None),
        ("response_len", "response length (tokens)", "mean_length"),
        ("reflection_rate", 'reflection rate ("wait", "check", ...)', "reflection_rate"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (key, title, eval_key) in zip(axes.flat, panels):
        ax.plot(steps, [m[key] for m in metrics], color="tab:blue", label="train batch")
        if key == "accuracy":
            ax.plot(
                steps,
                [m["format"] for m in metrics],
                color="tab:orange",
                alpha=0.7,
                label="format rate",
            )
        if eval_key and base and final and steps:
            ax.scatter(
                [0, steps[-1]],
                [base[eval_key], final[eval_key]],
                color="tab:red",
                zorder=3,
                label="held-out " + ("pass@1" if key == "accuracy" else "eval"),
            )
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("r1kit zero: R1-Zero training")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
