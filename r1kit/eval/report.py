"""Published numbers to compare with (DESIGN.md section 6: DeepSeek-R1 paper, pass@1 at T=0.6,
top-p 0.95; cons@64 where the paper gives it), and the table an evaluation prints."""

from __future__ import annotations

from typing import Any

# model -> benchmark -> {"pass@1": percent, "cons@64": percent}
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "DeepSeek-R1": {"aime24": {"pass@1": 79.8}, "math500": {"pass@1": 97.3}},
    "DeepSeek-R1-Zero": {
        "aime24": {"pass@1": 71.0, "cons@64": 86.7},
        "math500": {"pass@1": 95.9},
    },
    "DeepSeek-R1-Distill-Qwen-1.5B": {
        "aime24": {"pass@1": 28.9, "cons@64": 52.7},
        "math500": {"pass@1": 83.9},
    },
    "DeepSeek-R1-Distill-Qwen-7B": {"aime24": {"pass@1": 55.5}, "math500": {"pass@1": 92.8}},
    "DeepSeek-R1-Distill-Qwen-14B": {"aime24": {"pass@1": 69.7}, "math500": {"pass@1": 93.9}},
    "DeepSeek-R1-Distill-Qwen-32B": {"aime24": {"pass@1": 72.6}, "math500": {"pass@1": 94.3}},
    "DeepSeek-R1-Distill-Llama-8B": {"aime24": {"pass@1": 50.4}, "math500": {"pass@1": 89.1}},
    "DeepSeek-R1-Distill-Llama-70B": {"aime24": {"pass@1": 70.0}, "math500": {"pass@1": 94.5}},
}
ALIASES = {"deepseek-reasoner": "DeepSeek-R1", "deepseek-r1-0120": "DeepSeek-R1"}


def published_for(model: str, benchmark: str) -> tuple[str, dict[str, float]] | None:
    """(paper model name, numbers) when the model's name is one the paper reports: a hub id,
    a directory or a served name, compared by its last path part, case-insensitively."""
    base = model.rstrip("/").rsplit("/", 1)[-1].lower()
    base = ALIASES.get(base, base)
    for name, by_bench in PUBLISHED.items():
        if name.lower() == base.lower() and benchmark in by_bench:
            return name, by_bench[benchmark]
    return None


def print_summary(s: dict[str, Any], out: str) -> None:
    from rich.console import Console
    from rich.table import Table

    k = s["k"]
    c = Console()
    if s["backend"] == "gold":
        right = round(s["pass@1"] * s["n_problems"])
        c.print(
            f"{s['benchmark']}: {right} of {s['n_problems']} reference answers graded correct "
            f"({100 * s['pass@1']:.1f}%); {out}/samples.jsonl has each one"
        )
        if s.get("wrong"):
            c.print("not graded correct: " + ", ".join(map(str, s["wrong"])))
        return
    pub = s.get("published") or {}
    title = f"{s['model']} on {s['benchmark']}: {s['n_problems']} problems x {k} samples"
    t = Table(title=title)
    t.add_column("")
    t.add_column("this run (%)", justify="right")
    t.add_column(f"published: {pub['model']}" if pub else "published", justify="right")
    rows = [
        ("pass@1", f"{100 * s['pass@1']:.1f} ± {100 * s['pass@1_stderr']:.1f}", pub.get("pass@1")),
        (f"pass@{k}", f"{100 * s['pass@k']:.1f}", None),
        (f"cons@{k}", f"{100 * s['cons@k']:.1f}", pub.get("cons@64")),
    ]
    for label, mine, theirs in rows[:1] if k == 1 else rows:
        if theirs is None:
            ref = "—"
        elif label.startswith("cons") and k != 64:
            ref = f"{theirs:.1f} (cons@64)"
        else:
            ref = f"{theirs:.1f}"
        t.add_row(label, mine, ref)
    c.print(t)
    c.print(
        f"mean {s['mean_tokens']:.0f} tokens a sample, {100 * s['truncated']:.0f}% cut at "
        f"max tokens, {100 * s['no_answer']:.0f}% without an answer; {s['generated']} samples "
        f"generated, {s['resumed']} resumed, {s['wall_s']:.0f}s. Wrote {out}/summary.json and "
        f"{out}/samples.jsonl"
    )
