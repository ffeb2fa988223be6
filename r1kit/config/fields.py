"""Config fields that carry their own help and bounds, and the job configs built from them.

A field is declared once, with everything the rest of r1kit derives from it:

    lr: float = param(1e-4, "peak learning rate of AdamW", gt=0)

`param` stores the help text, bounds (ge, gt, le, lt), allowed values (choices) and alternative
names (aliases) in the dataclass field's metadata. A job config is a dataclass of job-level
fields plus typed parts (`part(Optim, lr=1e-3)`); every field of a part has a flat name (the
part's prefix + the field's name, e.g. `eval_k`) that is unique within the job. Flags, YAML
recipe keys and old flat config.json files use the flat names; config.json is written nested by
part. Validation is generic: each bound yields one line naming the flag ("--steps must be >= 1").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, ClassVar

from r1kit.errors import R1kitError


def param(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[str, ...] | None = None,
    aliases: tuple[str, ...] = (),
    why: str = "",
    shown: str | None = None,
) -> Any:
    """A config field with its help and bounds beside it.

    why: the reason appended to a bounds error ("--temperature must be >= 0 (0 is greedy)");
    shown: how --help shows the default when its value says little (e.g. None).
    """
    meta = dict(help=help, ge=ge, gt=gt, le=le, lt=lt, choices=choices, aliases=tuple(aliases))
    meta.update(why=why, shown=shown)
    return field(default=default, metadata=meta)


def part(cls: type, prefix: str = "", **defaults: Any) -> Any:
    """A typed part of a job config; `defaults` are this job's defaults where they differ from
    the part's own; `prefix` makes the flat names (prefix 'eval_': k -> eval_k)."""
    return field(default_factory=lambda: cls(**defaults), metadata={"part": cls, "prefix": prefix})


@dataclass(frozen=True)
class Flat:
    """One leaf field of a job config under its flat name."""

    name: str  # flat name: eval_k
    path: tuple[str, ...]  # attribute path: ("eval", "k")
    field: Field
    default: Any  # this job's default

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.field.metadata

    @property
    def help(self) -> str:
        return self.meta.get("help", "")

    @property
    def aliases(self) -> tuple[str, ...]:
        return self.meta.get("aliases", ())

    @property
    def type(self) -> type:
        """The value's type: the default's, else the first of bool/int/float in the annotation
        (`bool | None`: a switch whose None means "decide for me", e.g. --compile-update)."""
        if self.default is not None:
            return type(self.default)
        hint = str(self.field.type)
        return next((t for t in (bool, int, float) if hint.startswith(t.__name__)), str)


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def bounds_error(flat: Flat, value: Any) -> str | None:
    """The one-line error for a value outside the field's bounds, else None (None passes)."""
    m = flat.meta
    if value is None:
        return None
    choices = m.get("choices")
    if choices and value not in choices:
        allowed = ", ".join(choices[:-1]) + " or " + choices[-1]
        return f"{flat.flag} must be {allowed}"
    lower = (">=", m.get("ge")) if m.get("ge") is not None else (">", m.get("gt"))
    upper = ("<=", m.get("le")) if m.get("le") is not None else ("<", m.get("lt"))
    ok = {
        ">=": lambda x, b: x >= b,
        ">": lambda x, b: x > b,
        "<=": lambda x, b: x <= b,
        "<": lambda x, b: x < b,
    }
    parts = [(op, b) for op, b in (lower, upper) if b is not None]
    if not parts or all(ok[op](value, b) for op, b in parts):
        return None
    text = " and ".join(f"{op} {_fmt(b)}" for op, b in parts)
    why = f" ({m['why']})" if m.get("why") else ""
    return f"{flat.flag} must be {text}{why}"


def _leaves(cls: type, obj: Any, prefix: str, path: tuple[str, ...]) -> Iterator[Flat]:
    for f in fields(cls):
        if "part" in f.metadata:
            sub = getattr(obj, f.name)
            pre = prefix + f.metadata["prefix"]
            yield from _leaves(f.metadata["part"], sub, pre, (*path, f.name))
        else:
            yield Flat(prefix + f.name, (*path, f.name), f, getattr(obj, f.name))


class JobConfig:
    """Mixin for a job config dataclass: flat names, nested/flat dicts and generic validation.
    A job adds its cross-field checks in `check()`."""

    _flat_cache: ClassVar[dict[type, dict[str, Flat]]] = {}

    @classmethod
    def flat_fields(cls) -> dict[str, Flat]:
        """Every leaf field by flat name, with this job's defaults; names must be unique."""
        if cls not in JobConfig._flat_cache:
            out: dict[str, Flat] = {}
            for f in _leaves(cls, cls(), "", ()):
                for name in (f.name, *f.aliases):
                    if name in out or any(name in g.aliases for g in out.values()):
                        raise TypeError(f"{cls.__name__}: flat name {name!r} is used twice")
                out[f.name] = f
            JobConfig._flat_cache[cls] = out
        return JobConfig._flat_cache[cls]

    @classmethod
    def canonical(cls, name: str) -> str | None:
        """The flat name a key or alias stands for (max_new_tokens -> max_tokens), else None."""
        flat = cls.flat_fields()
        if name in flat:
            return name
        return next((f.name for f in flat.values() if name in f.aliases), None)

    def get(self, name: str) -> Any:
        """A value by flat name (or alias)."""
        obj: Any = self
        for attr in self.flat_fields()[self._known(name)].path:
            obj = getattr(obj, attr)
        return obj

    def set(self, name: str, value: Any) -> None:
        """Set a value by flat name (or alias)."""
        *parents, leaf = self.flat_fields()[self._known(name)].path
        obj: Any = self
        for attr in parents:
            obj = getattr(obj, attr)
        setattr(obj, leaf, value)

    @classmethod
    def _known(cls, name: str) -> str:
        canon = cls.canonical(name)
        if canon is None:
            raise R1kitError(f"unknown config key {name!r}")
        return canon

    @classmethod
    def of(cls, **flat: Any) -> Any:
        """The config with the given flat fields set: ZeroConfig.of(lr=1e-3, eval_k=2)."""
        return cls.from_dict(flat)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        """From a nested dict (config.json as written now: {"optim": {"lr": ...}}), a flat one
        (old config.json, YAML recipe keys, flags) or a mix; unknown keys are an error."""
        cfg = cls()
        parts = {f.name: f for f in fields(cls) if "part" in f.metadata}
        unknown = []
        for k, v in d.items():
            if k in parts and isinstance(v, Mapping):
                prefix = parts[k].metadata["prefix"]
                for sk, sv in v.items():
                    canon = cls.canonical(prefix + sk)
                    if canon is None or cls.flat_fields()[canon].path[0] != k:
                        unknown.append(f"{k}.{sk}")
                    else:
                        cfg.set(canon, sv)
            elif cls.canonical(k) is None:
                unknown.append(k)
            else:
                cfg.set(k, v)
        if unknown:
            raise R1kitError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Nested by part, as config.json holds it: {"model": ..., "optim": {"lr": ...}}."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_flat(self) -> dict[str, Any]:
        """Every field under its flat name."""
        return {name: self.get(name) for name in self.flat_fields()}

    def validate(self) -> None:
        """Each field within its bounds and choices, then the job's cross-field checks; raises
        R1kitError with one line naming the flag."""
        for name, f in self.flat_fields().items():
            err = bounds_error(f, self.get(name))
            if err:
                raise R1kitError(err)
        self.check()

    def check(self) -> None:
        """Cross-field checks of a job (none by default)."""


__all__ = ["Flat", "JobConfig", "bounds_error", "param", "part"]
