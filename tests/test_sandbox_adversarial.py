"""Adversarial programs against the sandbox, each through the `code` reward.

Every attack is written so that it would *pass* the tests if the attack worked (it defines the
right `f` only after the escape succeeded), so reward 0 shows containment. After each one the
host is checked: a process of ours still runs, no process of the sandbox's uids is left, the
scratch directories are gone, and the next, honest program gets reward 1.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

from r1kit.errors import R1kitError
from r1kit.rewards.code import CodeReward
from r1kit.sandbox import Limits, Sandbox, available, backends

BACKENDS = available()
pytestmark = pytest.mark.skipif(not BACKENDS, reason="neither bubblewrap nor unshare works here")

LIMITS = Limits(wall_s=3, cpu_s=1, memory_mb=256, processes=16, output_kb=256, tmp_mb=8)
TESTS = ["assert f(1) == 2", "assert f(41) == 42"]
GOOD = "def f(x):\n    return x + 1\n"


def completion(code: str) -> str:
    return "Let me write it.\n</think>\n```python\n" + textwrap.dedent(code) + "\n```"


def example(**extra) -> dict:
    return {"question": "write f", "tests": TESTS, "template": "r1zero", **extra}


class Listener:
    """A TCP server on 127.0.0.1 that records every connection it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


@pytest.fixture(scope="module")
def env():
    """The sandbox under test (the best that works here, as `auto` picks it), a host process
    that must survive, and a listening server."""
    sb = Sandbox(LIMITS, workers=2)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    server = Listener()
    yield {"sandbox": sb, "reward": CodeReward(sb), "bystander": bystander, "server": server}
    bystander.kill()
    bystander.wait()
    server.sock.close()
    sb.close()


def _sandbox_processes(sb: Sandbox) -> list[int]:
    """Processes running under the sandbox's worker uids (root only: else there are none)."""
    if not sb.root:
        return []
    uids = {sb.uid(slot) for slot in range(sb.workers)}
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid in uids:
                pids.append(int(pid))
        except OSError:
            pass
    return pids


def attack(env, code: str, monkeypatch=None, tmp_path=None, **extra):
    """Run an attack: reward 0, then the host checks and an honest program's reward 1."""
    if monkeypatch is not None and tmp_path is not None:
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    reward = env["reward"]
    ex = example(**extra)
    res = reward.result(completion(code), ex)
    assert reward(completion(code), ex) == 0.0, res
    assert env["bystander"].poll() is None  # our own process lives
    assert _sandbox_processes(env["sandbox"]) == []  # nothing of the program is left running
    if tmp_path is not None:
        assert not list(tmp_path.glob("r1kit-sandbox-*"))  # scratch removed
    assert reward(completion(GOOD), example()) == 1.0  # the next program runs normally
    return res


def test_fork_bomb(env, monkeypatch, tmp_path):
    res = attack(
        env,
        """
        import os
        def f(x):
            return x + 1
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """,
        monkeypatch,
        tmp_path,
    )
    assert res.reason == "timeout"
    subprocess.run(["true"], check=True)  # the host can still start processes


def test_infinite_loop(env):
    res = attack(env, "def f(x):\n    return x + 1\nwhile True:\n    pass\n")
    assert res.reason == "timeout"


def test_memory_bomb(env):
    res = attack(
        env,
        """
        chunks = []
        for _ in range(48):  # 3 GB, each page touched
            chunks.append(b"x" * (64 << 20))
        def f(x):
            return x + 1
        """,
    )
    assert set(res.tests) == {"memory"}


def test_one_gigabyte_of_output(env, monkeypatch, tmp_path):
    res = attack(
        env,
        """
        import sys
        line = "y" * (1 << 20)
        for _ in range(1024):
            sys.stdout.write(line)
            sys.stdout.flush()
        def f(x):
            return x + 1
        """,
        monkeypatch,
        tmp_path,
    )
    assert set(res.tests) == {"output"}
    assert len(res.output) <= 2048


def test_writes_outside_the_temp_dir(env, tmp_path):
    host_dir = tmp_path / "open"
    host_dir.mkdir()
    host_dir.chmod(0o777)
    targets = [host_dir / "pwned", Path.home() / "pwned", Path(__file__).parent / "pwned"]
    targets += [Path("/usr/pwned"), Path("/etc/pwned")]
    attack(
        env,
        f"""
        wrote = 0
        for p in {[str(t) for t in targets]!r}:
            try:
                with open(p, "w") as fh:
                    fh.write("x")
                wrote += 1
            except OSError:
                pass
        if wrote:
            def f(x):
                return x + 1
        """,
    )
    assert not any(t.exists() for t in targets)


def test_reads_sqlite_file_and_ssh_keys(env, tmp_path):
    db = tmp_path / "r1kit.db"
    con = sqlite3.connect(db)
    con.execute("create table keys (k text)")
    con.execute("insert into keys values ('sk-live-secret')")
    con.commit()
    con.close()
    db.chmod(0o644)
    ssh = Path.home() / ".ssh"
    attack(
        env,
        f"""
        import os
        found = []
        for p in [{str(db)!r}, {str(ssh)!r}, os.path.expanduser("~/.ssh"), "/root/.ssh"]:
            try:
                found.append(open(p, "rb").read() if os.path.isfile(p) else os.listdir(p))
            except OSError:
                pass
        if found:
            def f(x):
                return x + 1
        """,
    )


def test_environment_secrets(env, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-42")
    attack(
        env,
        """
        import os
        seen = [v for v in os.environ.values() if "secret" in v]
        for pid in os.listdir("/proc"):
            try:
                if b"secret" in open(f"/proc/{pid}/environ", "rb").read():
                    seen.append(pid)
            except OSError:
                pass
        if seen or "OPENAI_API_KEY" in os.environ:
            def f(x):
                return x + 1
        """,
    )


def test_connect_to_a_local_port(env):
    port = env["server"].port
    attack(
        env,
        f"""
        import socket
        s = socket.create_connection(("127.0.0.1", {port}), timeout=1)
        def f(x):
            return x + 1
        """,
    )
    assert env["server"].accepted == 0


@pytest.mark.parametrize("exit_call", ["os._exit(0)", "sys.exit(0)", "raise SystemExit(0)"])
def test_exit_before_the_tests(env, exit_call):
    res = attack(env, f"import os, sys\ndef f(x):\n    return x + 2\n{exit_call}\n")
    assert res.reason in ("exited", "ok") and res.passed == 0


def test_redefining_assert_print_and_the_harness(env):
    res = attack(
        env,
        """
        import builtins, os, sys
        def f(x):
            return x + 2  # wrong: only the cheats below could make it pass
        class Quiet(Exception):
            pass
        builtins.AssertionError = Quiet
        builtins.print = lambda *a, **k: None
        builtins.exec = lambda *a, **k: None
        builtins.compile = lambda *a, **k: compile("pass", "x", "exec")
        builtins.isinstance = lambda *a: False
        builtins.enumerate = lambda xs: []
        sys.modules["__main__"].main = lambda *a, **k: None
        for fd in range(3, 20):  # fake result lines without the nonce
            try:
                os.write(fd, b"result 0 pass\\nresult 1 pass\\ndone 2\\n")
            except OSError:
                pass
        print("result 0 pass")
        """,
    )
    assert res.passed == 0


def test_always_equal_object_fails_type_strict_tests(env):
    """The `__eq__`-returns-True trick passes `assert f(x) == y`; the procedural code tasks
    write their tests type-strict (`type(r) is int and r == y`), so it earns nothing there."""
    cheat = (
        "class Any:\n    def __eq__(self, o):\n        return True\ndef f(x):\n    return Any()\n"
    )
    strict = ["r = f(1)\nassert type(r) is int and r == 2"]
    assert env["reward"](completion(cheat), example(tests=strict)) == 0.0


def test_killing_the_parent(env):
    attack(
        env,
        """
        import os, signal
        for target in (os.getppid(), 1, -1):
            try:
                os.kill(target, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.killpg(0, signal.SIGKILL)
        except OSError:
            pass
        """,
    )


def test_child_sleeping_past_the_deadline(env):
    res = attack(
        env,
        """
        import os, time
        if os.fork() == 0:
            os.setsid()
            time.sleep(30)  # past the 3 s deadline; then this copy would run the tests
            def f(x):
                return x + 1
        else:
            os._exit(0)
        """,
    )
    assert res.reason in ("exited", "timeout", "killed")


def test_program_cannot_switch_the_sandbox_off(env, tmp_path):
    """Whatever the program tries first (raise its limits, become root, new namespaces,
    remount, set an 'unsafe' variable, reach r1kit), afterwards it still has no network, no
    host file to write and no memory beyond the limit."""
    port = env["server"].port
    host_dir = tmp_path / "open"
    host_dir.mkdir()
    host_dir.chmod(0o777)
    attack(
        env,
        f"""
        import ctypes, os, resource, socket
        tries = [
            lambda: resource.setrlimit(resource.RLIMIT_AS, (-1, -1)),
            lambda: resource.setrlimit(resource.RLIMIT_NPROC, (-1, -1)),
            lambda: os.setuid(0),
            lambda: open("/proc/sys/kernel/hostname", "w").write("x"),
            lambda: os.environ.update(R1KIT_UNSAFE_EXEC="1"),
            lambda: __import__("r1kit"),
        ]
        libc = ctypes.CDLL(None, use_errno=True)
        tries.append(lambda: libc.unshare(0x40000000))  # CLONE_NEWNET
        tries.append(lambda: libc.mount(b"none", b"/", None, 32 | 4096, None))  # remount rw
        for t in tries:
            try:
                t()
            except Exception:
                pass
        effects = []
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=1)
            effects.append("network")
        except OSError:
            pass
        try:
            open({str(host_dir / "pwned")!r}, "w").write("x")
            effects.append("host file")
        except OSError:
            pass
        try:
            big = b"x" * (512 << 20)  # twice the memory limit
            effects.append("memory")
        except MemoryError:
            pass
        if effects:
            def f(x):
                return x + 1
        """,
    )
    assert env["server"].accepted == 0
    assert not (host_dir / "pwned").exists()


def test_refuses_without_a_sandbox_unless_unsafe(monkeypatch, tmp_path):
    """With neither bwrap nor unshare on PATH the sandbox refuses, naming the way out."""
    monkeypatch.setenv("PATH", str(tmp_path))
    backends.available.cache_clear()
    try:
        with pytest.raises(R1kitError, match="--unsafe-exec"):
            Sandbox(LIMITS)
        with Sandbox(LIMITS, unsafe=True) as sb:
            assert sb.backend == "none"
            assert sb.run(GOOD, TESTS).all_passed
    finally:
        backends.available.cache_clear()
