"""The evaluation's output directory: `samples.jsonl` written as samples finish, so a stopped
run resumes where it was, and `config.json`, the settings the samples were drawn with.

A resumed run must use the same settings (model, data, sampling, prompt); it may ask for more
problems (`--limit`) or more samples per problem (`--k`): only the missing ones are generated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from r1kit.errors import R1kitError
from r1kit.train import files

# settings that decide what a sample is; anything else (k, limit, concurrency, ...) may change
SAMPLE_SETTINGS = (
    "backend",
    "model",
    "base_url",
    "benchmark",
    "data",
    "question_field",
    "answer_field",
    "solution_field",
    "template",
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
)


class SampleStore:
    def __init__(self, out: str | Path, setup: dict) -> None:
        self.dir = Path(out)
        self.path = self.dir / "samples.jsonl"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.records: dict[tuple[str, int], dict] = {}
        self._done: dict[str, set[int]] = {}  # problem id -> sample indices on disk
        if self.path.exists():
            self._load()
        cfg_path = self.dir / "config.json"
        if self.records and cfg_path.exists():
            _check_same(self.dir, json.loads(cfg_path.read_text()), setup)
        files.write_text(cfg_path, json.dumps(setup, indent=2) + "\n")
        self._fh = self.path.open("a", encoding="utf-8")

    def _load(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # a line torn by a kill: drop it, it is redone
            data = data[: data.rfind(b"\n") + 1]
            self.path.write_bytes(data)
        for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                self._keep(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise R1kitError(
                    f"{self.path}:{n} is not a sample record; use another --out or delete the file"
                ) from None

    def _keep(self, rec: dict) -> None:
        pid, s = str(rec["problem_id"]), int(rec["sample"])
        self.records[(pid, s)] = rec
        self._done.setdefault(pid, set()).add(s)

    def done(self, problem_id: str) -> set[int]:
        return self._done.get(problem_id, set())

    def add(self, records: list[dict]) -> None:
        for rec in records:
            self._keep(rec)
            self._fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._fh.flush()

    def rewrite(self, order: dict[str, int]) -> None:
        """Write every record again, sorted by problem (in `order`) then sample; atomically."""
        self._fh.close()
        end = len(order)
        recs = sorted(
            self.records.values(),
            key=lambda r: (order.get(str(r["problem_id"]), end), str(r["problem_id"]), r["sample"]),
        )
        tmp = self.path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for rec in recs:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        os.replace(tmp, self.path)
        self._fh = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        self._fh.close()


def _check_same(out: Path, saved: dict, setup: dict) -> None:
    for key in SAMPLE_SETTINGS:
        if saved.get(key) != setup.get(key):
            raise R1kitError(
                f"{out} holds samples drawn with {key}={saved.get(key)!r}, not {setup.get(key)!r}; "
                "pass another --out (or delete it) to start afresh"
            )
