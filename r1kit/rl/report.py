"""The `r1kit zero` report: metrics.jsonl -> report.png (accuracy, reward, length, reflection) and
the base-vs-final table printed at the end."""

from __future__ import annotations

import io
from pathlib import Path

from r1kit.train import files
from r1kit.train.skipped import skipped_line


def report_title(metrics: list[dict]) -> str:
    """The figure's title: an async run (--async-depth 1: rows with a `lag`) says that its
    train-batch curves come from the weights one step before a synchronous run's."""
    if not any(m.get("lag") for m in metrics):
        return "r1kit zero: R1-Zero training"
    return (
        "r1kit zero: R1-Zero training (async GRPO: the train batch of step t was sampled by "
        "the weights after step t-2, one step behind)"
    )


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
    title = report_title(metrics)
    fig.suptitle(title, fontsize=12 if len(title) < 40 else 10)  # the async one: a long line
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    files.write_bytes(out_png, png.getvalue())  # a kill leaves the old report or the new one


def print_summary(s: dict, out: str) -> None:
    """The base-vs-final table `r1kit zero` prints at the end, and where its files went."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"held-out results ({s['eval_problems']} problems, k={s['k']})")
    t.add_column("")
    t.add_column("base", justify="right")
    t.add_column("final", justify="right")
    rows = [
        ("pass@1", "pass1"),
        (f"pass@{s['k']}", "passk"),
        ("format rate", "format_rate"),
        ("accuracy | well-formatted", "formatted_accuracy"),
        ("mean length", "mean_length"),
        ("reflection rate", "reflection_rate"),
    ]
    if s["k"] == 1:
        del rows[1]  # pass@1 again
    for label, key in rows:
        t.add_row(label, f"{s['base_' + key]:.3f}", f"{s['final_' + key]:.3f}")
    c = Console()
    c.print(t)
    skipped = skipped_line(s)
    if skipped:
        c.print(skipped)
    c.print(
        f"{s['steps']} step{'' if s['steps'] == 1 else 's'} in {s['wall_s']:.0f}s; "
        f"wrote {out}/summary.json, "
        f"{out}/report.png, {out}/metrics.jsonl, {out}/final/"
    )
