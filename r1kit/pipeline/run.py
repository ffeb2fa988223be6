"""`r1kit pipeline RECIPE.yaml`: the DeepSeek-R1 recipe as one job. Each stage reads the
previous stage's output, writes OUT/NN-NAME/, and is skipped when its `stage.json` says it is
complete; `--only NAME` re-runs one stage (its inputs must exist). After every model-producing
stage the model is evaluated on the same held-out problems (same seed), and the table of all
stages so far is printed.

OUT/heldout.jsonl   the held-out problems every stage is evaluated on
OUT/NN-NAME/        the stage's job output (final/ for a model, sft.jsonl for samples, ...)
OUT/NN-NAME/stage.json  {"done": true, "eval": {...}, "wall_s", ...} once complete
OUT/summary.json    every stage's eval and wall time
OUT/report.md, OUT/report.png   the per-stage table and chart
"""

from __future__ import annotations

import itertools
import json
import random
import re
import time
from pathlib import Path
from typing import Any

from r1kit.config import SampleConfig, SFTConfig, ZeroConfig
from r1kit.data.datasets import heldout, train_stream
from r1kit.errors import R1kitError
from r1kit.pipeline.recipe import Recipe, Stage, load_recipe
from r1kit.pipeline.report import print_table, write_report
from r1kit.pipeline.sample import print_stats, run_sample
from r1kit.rewards.reward_model import train_reward_model
from r1kit.rl.zero import run_zero
from r1kit.sampling.heldout import evaluate_path
from r1kit.sft.train import run_sft

MODEL_KINDS = ("sft", "rl")
GENERAL_REWARDS = ["reward_model", "format", "language"]  # prompts without a checkable answer
REASONING_REWARDS = ["accuracy", "format", "language"]


def stage_dir(rec: Recipe, i: int, st: Stage) -> Path:
    return Path(rec.out) / f"{i + 1:02d}-{st.name}"


def _eval_kw(rec: Recipe) -> dict[str, Any]:
    ev = rec.eval
    # every model is evaluated in its own format: the base in R1-Zero's, the stages in the recipe's
    max_tokens = ev.get("max_tokens", ev.get("max_new_tokens", 128))  # the old name still works
    return {
        "template": "auto",
        "k": ev.get("k", 4),
        "max_new_tokens": max_tokens,
        "seed": ev.get("seed", 1),
    }


def _ref(rec: Recipe, dirs: dict[str, Path], ref: str | None, default: str | None) -> str | None:
    """'base' -> the recipe's model; '@NAME' or NAME of a stage -> its output; else as given."""
    if ref is None:
        return default
    if ref == "base":
        return rec.model
    name = ref[1:] if ref.startswith("@") else ref
    return str(dirs[name]) if name in dirs else ref


def _general_data(path: Path, dataset: str, share: float, n: int, seed: int) -> str:
    """RL prompts for all scenarios: a `share` of them carry no checkable answer and are scored
    by the reward model; each row's "rewards" says which rewards apply to it."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for ex in itertools.islice(train_stream(dataset, seed + 7), n):
            if rng.random() < share:
                row = {
                    "question": ex["question"],
                    "answer": "",
                    "rewards": GENERAL_REWARDS,
                    **({"language": ex["language"]} if "language" in ex else {}),
                }
            else:
                row = {**ex, "rewards": REASONING_REWARDS}
            f.write(json.dumps(row) + "\n")
    return str(path)


def _sub_reward_paths(spec: str, dirs: dict[str, Path]) -> str:
    return re.sub(
        r"reward_model@([\w.-]+)",
        lambda m: f"reward_model@{dirs.get(m.group(1), m.group(1))}",
        spec,
    )


def run_stage(
    rec: Recipe,
    i: int,
    st: Stage,
    dirs: dict[str, Path],
    model: str | None,
    heldout_file: str,
    progress: bool,
) -> dict[str, Any]:
    """Run one stage (resuming where a checkpointed one stopped); returns its job summary."""
    out = stage_dir(rec, i, st)
    resume = (out / "checkpoints" / "latest").exists()
    kw = dict(st.fields)
    if st.kind == "sft":
        data = kw.pop("data", None)
        refs = st.data if isinstance(st.data, list) else [st.data] if st.data else []
        if refs:  # each source: a stage's output (its sft.jsonl) or as given; joined by ','
            paths = [_ref(rec, dirs, r, None) for r in refs]
            data = ",".join(str(Path(p) / "sft.jsonl") if Path(p).is_dir() else p for p in paths)
        cfg = SFTConfig.of(
            **{
                **kw,
                "model": model,
                "out": str(out),
                "eval_problems": 0,
                "template": rec.template,
                **({"data": data} if data else {}),
            }
        )
        return run_sft(cfg, resume=resume, progress=progress)
    if st.kind == "rl":
        share = kw.pop("general_share", 0.0)
        ev = rec.eval
        cfg = ZeroConfig.of(
            **{
                "eval_problems": ev.get("problems", 100),
                "eval_k": ev.get("k", 4),
                **kw,
                "model": model,
                "out": str(out),
                "template": rec.template,
                "eval_data": heldout_file,
            }
        )
        cfg.rewards = _sub_reward_paths(cfg.rewards, dirs)
        if share > 0:
            out.mkdir(parents=True, exist_ok=True)
            n = cfg.run.steps * cfg.algo.prompts_per_step * (1 + cfg.algo.max_refills)
            cfg.dataset = _general_data(out / "train.jsonl", cfg.dataset, share, n, cfg.run.seed)
        return run_zero(cfg, resume=resume, progress=progress)
    if st.kind == "sample":
        cfg = SampleConfig.of(**{**kw, "model": model, "out": str(out), "template": rec.template})
        stats = run_sample(cfg, progress=progress)
        if progress:
            print_stats(stats, str(out))
        return stats
    # reward_model: kept samples are the positives, rejected ones the negatives
    src = Path(_ref(rec, dirs, st.data, None) or _last(dirs, rec, "sample") or "")
    if not (src / "sft.jsonl").exists():
        raise R1kitError(f"stage {st.name}: no samples in {src} (set data: to a sample stage)")
    pos = [json.loads(x) for x in (src / "sft.jsonl").read_text().splitlines()]
    neg = [json.loads(x) for x in (src / "rejected.jsonl").read_text().splitlines()]
    cap = kw.pop("max_rows", 2000) // 2
    rng = random.Random(kw.get("seed", 0))
    rows = [{**r, "label": 1} for r in rng.sample(pos, min(cap, len(pos)))] + [
        {**r, "label": 0} for r in rng.sample(neg, min(cap, len(neg)))
    ]
    base = _ref(rec, dirs, st.model, rec.model)
    res = train_reward_model(base, rows, out, template=rec.template, **kw)
    return res


def _last(dirs: dict[str, Path], rec: Recipe, kind: str) -> str | None:
    names = [s.name for s in rec.stages if s.kind == kind and s.name in dirs]
    return str(dirs[names[-1]]) if names else None


def run_pipeline(
    path: str, only: str | None = None, progress: bool = True, out: str | None = None
) -> dict[str, Any]:
    """Run the recipe at `path` (every stage not yet complete, or `only` that one); `out`
    overrides the recipe's output directory."""
    rec = load_recipe(path)
    if out is not None:
        rec.out = out
    if only and only not in {s.name for s in rec.stages}:
        raise R1kitError(
            f"no stage {only!r} in {path}; stages: {', '.join(s.name for s in rec.stages)}"
        )
    out = Path(rec.out)
    out.mkdir(parents=True, exist_ok=True)
    ev = rec.eval
    problems = heldout(ev.get("dataset", "mix"), ev.get("problems", 100))
    if not problems:
        raise R1kitError(f"no held-out problems for eval dataset {ev.get('dataset')!r}")
    heldout_file = out / "heldout.jsonl"
    heldout_file.write_text("".join(json.dumps(p) + "\n" for p in problems))
    t0 = time.time()
    rows: list[dict[str, Any]] = []
    base_path = out / "base_eval.json"
    if not base_path.exists():
        base_path.write_text(json.dumps(evaluate_path(rec.model, problems, **_eval_kw(rec))))
    base_eval = json.loads(base_path.read_text())
    rows.append({"stage": "base", "kind": "-", "eval": base_eval, "wall_s": 0.0})
    if progress:
        print_table(rows)
    dirs: dict[str, Path] = {}
    model = rec.model
    for i, st in enumerate(rec.stages):
        sdir = stage_dir(rec, i, st)
        marker = sdir / "stage.json"
        st_model = _ref(rec, dirs, st.model, model)
        if marker.exists() and only != st.name:
            info = json.loads(marker.read_text())
            if progress:
                print(f"stage {i + 1} {st.name}: complete, skipped")
        elif only and only != st.name:
            raise R1kitError(
                f"stage {st.name} (before {only}) has not run; run the pipeline "
                "without --only first"
            )
        else:
            if progress:
                print(
                    f"\nstage {i + 1}/{len(rec.stages)} {st.name} ({st.kind}) from "
                    f"{st_model or 'the embedded model'}"
                )
            ts = time.time()
            marker.unlink(missing_ok=True)
            job = run_stage(rec, i, st, dirs, st_model, str(heldout_file), progress)
            info = {
                "done": True,
                "name": st.name,
                "kind": st.kind,
                "model_in": st_model,
                "job": job,
                "wall_s": round(time.time() - ts, 1),
            }
            if st.kind in MODEL_KINDS:
                info["eval"] = evaluate_path(str(sdir / "final"), problems, **_eval_kw(rec))
            sdir.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps(info, indent=2))
        dirs[st.name] = sdir
        if st.kind in MODEL_KINDS:
            model = str(sdir / "final")
        rows.append(
            {
                "stage": st.name,
                "kind": st.kind,
                "eval": info.get("eval"),
                "job": info.get("job"),
                "wall_s": info["wall_s"],
            }
        )
        if progress:
            print_table(rows)
    summary = {
        "recipe": str(path),
        "final_model": model,
        "stages": rows,
        "wall_s_this_run": round(time.time() - t0, 1),
        "wall_s_stages": round(sum(r["wall_s"] for r in rows), 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    write_report(rows, out)
    return summary
