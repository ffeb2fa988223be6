"""Refusals a new user meets at the `r1kit` command line: a count out of range is refused by the
parser (one usage error, exit 2) instead of running with a default or failing later with a
traceback; `keys` with a --db that is not an r1kit database or not a file, or `revoke` without
an id, is one line; a reader that leaves the pipe (`r1kit keys list | head -1`) ends the command
quietly with the shell's SIGPIPE code, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from r1kit.cli import main
from r1kit.serve.store import Store

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["info", "--ctx", "-5"], "--ctx"),  # printed a KV cache of -7680 B
        (["info", "--lora-rank", "0"], "--lora-rank"),
        (["pretrain", "--steps", "-1"], "--steps"),  # ZeroDivisionError
        (["pretrain", "--steps", "0"], "--steps"),  # ran the preset's 1600 steps
        (["export", "check", "--k", "0"], "--k"),  # ValueError from the engine
        (["export", "check", "--problems", "0"], "--problems"),
        (["serve", "--max-waiting", "-1"], "--max-waiting"),
    ],
)
def test_a_count_out_of_range_is_a_usage_error(argv, flag, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        last
        == f"r1kit {argv[0]}: error: argument {flag}: not an integer >= "
        + ("0" if flag == "--max-waiting" else "1")
        + f": {argv[-1]!r}"
    )


def test_keys_revoke_without_an_id_says_so(tmp_path, capsys):
    assert main(["keys", "revoke", "--db", str(tmp_path / "k.db")]) == 2
    err = capsys.readouterr().err
    assert err == "r1kit: error: keys revoke needs the key's id (see `r1kit keys list`)\n"


def test_keys_db_that_is_not_a_database_is_one_line(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n')
    cases = {
        data: f"--db {data} is not an r1kit database (file is not a database)",
        tmp_path: f"--db {tmp_path} is a directory: name a file in it",
        data / "k.db": f"--db {data / 'k.db'}: {data} is a file, not a directory",
    }
    for db, line in cases.items():
        assert main(["keys", "list", "--db", str(db)]) == 2
        assert capsys.readouterr().err == f"r1kit: error: {line}\n"
    assert data.read_text() == '{"question": "1+1?", "answer": "2"}\n'  # nothing written


def test_a_reader_that_leaves_the_pipe_is_no_traceback(tmp_path):
    db = tmp_path / "k.db"
    Store(db).create_key("me")
    cmd = [sys.executable, "-m", "r1kit.cli", "keys", "list", "--db", str(db)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    p.stdout.close()  # the reader gone before the first line (`| head -0`)
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141 and err == "", err
