"""Job configs composed of typed parts, each field with its help and bounds beside it
(fields.py); the parts (parts.py), the jobs (jobs.py), named presets (presets.py), and the
command-line flags derived from the fields (flags.py)."""

from r1kit.config.fields import Flat, JobConfig, param, part
from r1kit.config.jobs import DistillConfig, EvalConfig, SampleConfig, SFTConfig, ZeroConfig
from r1kit.config.presets import RECIPES, ZERO_PRESETS, apply_preset, apply_recipe

__all__ = [
    "RECIPES",
    "ZERO_PRESETS",
    "DistillConfig",
    "EvalConfig",
    "Flat",
    "JobConfig",
    "SFTConfig",
    "SampleConfig",
    "ZeroConfig",
    "apply_preset",
    "apply_recipe",
    "param",
    "part",
]
