"""A sandbox for untrusted, model-written Python: no network, a read-only system, a private
temporary directory, an emptied environment, kernel resource limits and a wall-clock deadline."""

from r1kit.sandbox.backends import NO_SANDBOX, available
from r1kit.sandbox.runner import STATUSES, ExecResult, Limits, Sandbox, configure, shared

__all__ = [
    "NO_SANDBOX",
    "STATUSES",
    "ExecResult",
    "Limits",
    "Sandbox",
    "available",
    "configure",
    "shared",
]
