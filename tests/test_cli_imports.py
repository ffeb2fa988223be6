"""`r1kit --help` and `r1kit SUB --help` load none of the heavy libraries: the CLI imports each
job (and with it torch, transformers, fastapi...) only in the command that runs it (cli.py)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "fastapi", "uvicorn", "datasets", "numpy", "safetensors")
# every help screen in one process (the subcommands as `r1kit --help` lists them: {zero,...}),
# then which of the modules named in argv it loaded
PROBE = """
import contextlib, io, json, re, sys
from r1kit.cli import main

def shown(argv):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main(argv)
        except SystemExit as done:
            assert done.code == 0, (argv, done.code)
    assert out.getvalue().startswith("usage: r1kit"), argv
    return out.getvalue()

subs = re.search(r"{([a-z,]+)}", shown(["--help"])).group(1).split(",")
for name in subs:
    shown([name, "--help"])
print(json.dumps({"subs": subs, "loaded": [m for m in sys.argv[1:] if m in sys.modules]}))
"""


def test_help_loads_no_heavy_library():
    cmd = [sys.executable, "-c", PROBE, *HEAVY]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    seen = json.loads(p.stdout.strip().splitlines()[-1])
    assert {"zero", "sft", "serve", "keys", "export", "pretrain"} <= set(seen["subs"])
    assert seen["loaded"] == [], seen["loaded"]
