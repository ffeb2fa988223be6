"""Command-line flags derived from a job config's fields: one flag per flat name (--group-size),
its aliases (--max-new-tokens for --max-tokens), --x/--no-x for booleans, the allowed values
as the metavar, and a help line that ends in the default. Bounds and choices are checked by
the config's validate() (one line naming the flag), not by argparse."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from r1kit.config.fields import Flat, JobConfig


def shown_default(value: Any) -> str:
    """A default as --help shows it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == "":
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def flag_help(f: Flat) -> str:
    """The field's help followed by its default: 'peak learning rate (default: 0.0001)'."""
    shown = f.meta.get("shown") or shown_default(f.default)
    return f"{f.help} (default: {shown})".replace("%", "%%")


class DefaultsFormatter(argparse.HelpFormatter):
    """For hand-written flags: appends '(default: X)' to a help line that does not say its
    default already (every flag of every subcommand shows its default)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        if "default" in help or not action.option_strings or action.default is argparse.SUPPRESS:
            return help
        if isinstance(action, argparse._VersionAction | argparse._HelpAction):
            return help
        return f"{help} (default: {shown_default(action.default)})"


def add_config_flags(
    p: argparse.ArgumentParser, cls: type[JobConfig], skip: tuple[str, ...] = ()
) -> None:
    """One flag per flat field of `cls` (plus its aliases). Flags not given stay absent from
    the parsed namespace (argparse.SUPPRESS), so `explicit_fields` knows what was given."""
    groups: dict[str, Any] = {}  # --help lists the job's own flags, then one group per part
    parts = {f.name: f.metadata["part"] for f in fields(cls) if "part" in f.metadata}
    for name, f in cls.flat_fields().items():
        if name in skip:
            continue
        key = f.path[0] if len(f.path) > 1 else ""
        if key not in groups:
            doc = (parts[key].__doc__ or "").split("\n\n")[0] if key else None
            title = key or "job"  # the part's attribute name: run, algo, sampling, optim, ...
            groups[key] = p.add_argument_group(title, " ".join((doc or "").split()) or None)
        g = groups[key]
        flags = [f.flag, *("--" + a.replace("_", "-") for a in f.aliases)]
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": flag_help(f)}
        if f.type is bool:
            g.add_argument(*flags, action=argparse.BooleanOptionalAction, **kw)
            continue
        choices = f.meta.get("choices")
        metavar = "{" + ",".join(choices) + "}" if choices else name.upper()
        g.add_argument(*flags, type=f.type, metavar=metavar, **kw)


def explicit_fields(cls: type[JobConfig], args: argparse.Namespace) -> dict[str, Any]:
    """The flat fields given on the command line, by flat name."""
    flat = cls.flat_fields()
    return {k: v for k, v in vars(args).items() if k in flat}


def config_from_args(cls: type[JobConfig], args: argparse.Namespace, base: Any = None) -> Any:
    """`base` (or the defaults) with the flags given on the command line set on it."""
    cfg = base if base is not None else cls()
    for name, v in explicit_fields(cls, args).items():
        cfg.set(name, v)
    return cfg
