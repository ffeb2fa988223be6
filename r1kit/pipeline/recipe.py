"""Recipe files for `r1kit pipeline`: YAML with a list of stages, each a job config.

    out: runs/pipeline          # each stage writes OUT/NN-NAME/
    model: null                 # the base model (null: the embedded default)
    template: chat              # the format every stage trains in (R1 ends in a chat model)
    eval: {dataset: mix, problems: 100, k: 4, max_tokens: 128}
    stages:
      - {name: cold_start, kind: sft, data: "traces:mix", max_examples: 1500}
      - {name: reasoning_rl, kind: rl, rewards: "accuracy=1,format=0.5,language=0.5"}
      ...

A stage's fields are the flat names of its job's config (sft: SFTConfig, rl: ZeroConfig,
sample: SampleConfig; aliases such as max_new_tokens too; reward_model: RM_FIELDS) plus
STAGE_FIELDS; `model` and `data` may name an earlier stage (its output) and `model: base` the recipe's base. Unknown stage kinds and field
names are errors that name the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from r1kit.config import SampleConfig, SFTConfig, ZeroConfig
from r1kit.errors import R1kitError

KINDS = {"sft": SFTConfig, "rl": ZeroConfig, "sample": SampleConfig, "reward_model": None}
STAGE_FIELDS = {"name", "kind", "model", "data"}
RL_EXTRA = {"general_share"}  # share of RL prompts without a checkable answer (reward model)
RM_FIELDS = {"epochs", "lr", "batch_size", "max_rows", "seed"}
TOP_FIELDS = {"out", "model", "template", "eval", "stages", "seed"}
EVAL_FIELDS = {"dataset", "problems", "k", "max_tokens", "max_new_tokens", "seed"}
OWNED = {"out"}  # set by the pipeline for every stage, never by the recipe


@dataclass
class Stage:
    name: str
    kind: str
    fields: dict[str, Any]
    line: int
    model: str | None = None  # None: the previous stage's model
    data: str | list[str] | None = None  # one source or several (SFT mixes them)


@dataclass
class Recipe:
    path: str
    out: str = "runs/pipeline"
    model: str | None = None
    template: str = "chat"  # DeepSeek-R1 ends in a chat model: every stage trains in this format
    seed: int = 0
    eval: dict[str, Any] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)


def _allowed(kind: str) -> set[str]:
    cls = KINDS[kind]
    own = (
        {n for f in cls.flat_fields().values() for n in (f.name, *f.aliases)} if cls else RM_FIELDS
    )
    return (own | STAGE_FIELDS | (RL_EXTRA if kind == "rl" else set())) - OWNED


def _check_values(path: Any, line: int, name: str, kind: str, vals: dict[str, Any]) -> None:
    """A stage's values within their fields' bounds, checked when the recipe loads: a bad value
    in stage 5 fails before stage 1 trains, naming the file, the line and the stage."""
    cls = KINDS[kind]
    if cls is None:
        return
    try:
        cls.of(**{k: v for k, v in vals.items() if k not in RL_EXTRA}).validate()
    except (R1kitError, TypeError, ValueError) as err:
        raise R1kitError(f"{path}:{line}: stage {name!r}: {err}") from None


def _plain(node) -> Any:
    return yaml.safe_load(yaml.serialize(node))


def load_recipe(path: str | Path) -> Recipe:
    """Parse and check a recipe; errors name `path:line`."""
    p = Path(path)
    if not p.is_file():
        raise R1kitError(f"recipe not found: {path}")
    try:
        root = yaml.compose(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise R1kitError(f"{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(root, yaml.MappingNode):
        raise R1kitError(f"{path}:1: a recipe is a mapping with a 'stages' list")
    rec = Recipe(path=str(path))
    stages_node = None
    for k, v in root.value:
        line = k.start_mark.line + 1
        if k.value not in TOP_FIELDS:
            raise R1kitError(
                f"{path}:{line}: unknown recipe field {k.value!r}; "
                f"known: {', '.join(sorted(TOP_FIELDS))}"
            )
        if k.value == "stages":
            stages_node = v
        elif k.value == "eval":
            ev = _plain(v) or {}
            bad = set(ev) - EVAL_FIELDS
            if bad:
                raise R1kitError(
                    f"{path}:{line}: unknown eval field {sorted(bad)[0]!r}; "
                    f"known: {', '.join(sorted(EVAL_FIELDS))}"
                )
            rec.eval = ev
        else:
            setattr(rec, k.value, _plain(v))
    if not isinstance(stages_node, yaml.SequenceNode) or not stages_node.value:
        raise R1kitError(f"{path}: needs a non-empty 'stages' list")
    names: set[str] = set()
    for node in stages_node.value:
        line = node.start_mark.line + 1
        if not isinstance(node, yaml.MappingNode):
            raise R1kitError(f"{path}:{line}: a stage is a mapping with name and kind")
        raw = {k.value: (k.start_mark.line + 1, _plain(v)) for k, v in node.value}
        kind = raw.get("kind", (line, None))
        if kind[1] not in KINDS:
            raise R1kitError(
                f"{path}:{kind[0]}: unknown stage kind {kind[1]!r}; known: {', '.join(KINDS)}"
            )
        name = str(raw.get("name", (line, f"{kind[1]}{len(rec.stages) + 1}"))[1])
        if name in names or name == "base":
            raise R1kitError(f"{path}:{line}: stage name {name!r} is used twice or reserved")
        allowed = _allowed(kind[1])
        for key, (kline, _) in raw.items():
            if key not in allowed:
                raise R1kitError(
                    f"{path}:{kline}: unknown field {key!r} for a {kind[1]} stage; "
                    f"known: {', '.join(sorted(allowed))}"
                )
        vals = {k: v for k, (_, v) in raw.items() if k not in STAGE_FIELDS}
        model, data = raw.get("model", (0, None))[1], raw.get("data", (0, None))[1]
        datas = data if isinstance(data, list) else [data]  # data: one source or a list
        for ref, what in [(model, "model")] + [(d, "data") for d in datas]:
            if isinstance(ref, str) and ref.startswith("@") and ref[1:] not in names:
                raise R1kitError(f"{path}:{raw[what][0]}: {what} {ref!r} names no earlier stage")
        _check_values(path, line, name, kind[1], vals)
        rec.stages.append(Stage(name, kind[1], vals, line, model, data))
        names.add(name)
    return rec
