"""What loading data dropped, and why: one warning line each on stderr (rank 0 only), the way
the CLI prints its errors, so a dropped row is never silent, even with --quiet."""

from __future__ import annotations

import sys

from r1kit import dist


def warn(message: str) -> None:
    """`r1kit: warning: MESSAGE` on stderr, once under torchrun."""
    if dist.is_main():
        print(f"r1kit: warning: {message}", file=sys.stderr, flush=True)


def places(wheres: list[str], most: int = 3) -> str:
    """'a.jsonl:3, a.jsonl:9, a.jsonl:12 and 4 more': where the first few dropped rows were."""
    head = ", ".join(wheres[:most])
    return head + (f" and {len(wheres) - most} more" if len(wheres) > most else "")
