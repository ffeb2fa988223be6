"""Run one untrusted program against its tests in the sandbox; a pool runs many at once.

Each run: a fresh process tree in new namespaces (backends.py) running the harness
(harness.py), its stdout/stderr into a host file capped by RLIMIT_FSIZE, its results on an inherited file, a
wall-clock deadline after which the whole process group is killed (and, as root, every process of
the worker's own uid), then the host's scratch directory is removed.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from r1kit.errors import R1kitError
from r1kit.sandbox import backends

HARNESS = (Path(__file__).parent / "harness.py").read_text()
# per-test status words; "pass" is the only passing one
STATUSES = ("pass", "wrong_answer", "error", "timeout", "memory", "output", "killed", "exited")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run (all enforced by the kernel except the wall clock)."""

    wall_s: float = 10.0  # the whole run, start-up included; then the process group is killed
    cpu_s: int = 5  # RLIMIT_CPU: SIGXCPU, then SIGKILL a second later
    memory_mb: int = 1024  # RLIMIT_AS: address space per process
    processes: int = 32  # RLIMIT_NPROC: processes/threads of the worker's uid
    open_files: int = 64  # RLIMIT_NOFILE
    output_kb: int = 1024  # RLIMIT_FSIZE: stdout+stderr and any one file written
    tmp_mb: int = 64  # size of the private /tmp (tmpfs)

    def rlimits(self, nproc_base: int = 0) -> dict[str, int]:
        return {
            "RLIMIT_CPU": self.cpu_s,
            "RLIMIT_AS": self.memory_mb << 20,
            "RLIMIT_NPROC": nproc_base + self.processes,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_FSIZE": self.output_kb << 10,
            "RLIMIT_CORE": 0,
        }


@dataclass
class ExecResult:
    """One program's run: a status per test, why the run ended, and the start of its output."""

    tests: list[str]  # one of STATUSES per test
    details: list[str] = field(default_factory=list)
    reason: str = "ok"  # ok | timeout | killed | exited (no 'done' from the harness) | <status>
    output: str = ""  # the first 2 kB of stdout + stderr
    wall_s: float = 0.0

    @property
    def passed(self) -> int:
        return sum(s == "pass" for s in self.tests)

    @property
    def all_passed(self) -> bool:
        return bool(self.tests) and self.passed == len(self.tests)

    @property
    def fraction(self) -> float:
        return self.passed / len(self.tests) if self.tests else 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _read_results(path: Path, nonce: str, n: int) -> tuple[list[str | None], list[str], bool, int]:
    """Per-test statuses from the harness's lines that carry the nonce; whether it said `done`;
    the test running when it stopped (-1: none)."""
    status: list[str | None] = [None] * n
    details = [""] * n
    done, running = False, -1
    try:
        raw = path.read_bytes()[: 1 << 20]
    except OSError:
        raw = b""
    for line in raw.decode("utf-8", "replace").splitlines():
        head, _, rest = line.partition(" ")
        if head != nonce:
            continue
        kind, _, rest = rest.partition(" ")
        if kind == "start" and rest.isdigit() and int(rest) < n:
            running = int(rest)
        elif kind == "result":
            idx, _, rest = rest.partition(" ")
            word, _, detail = rest.partition(" ")
            if idx.isdigit() and int(idx) < n and word in STATUSES:
                status[int(idx)], details[int(idx)] = word, detail
                running = -1
        elif kind == "done" and rest == str(n):
            done = True
    return status, details, done, running


class Sandbox:
    """Runs programs against tests, `workers` at a time.

    backend: auto | bwrap | unshare | none ('none' needs unsafe=True, as does auto falling back to
    it when no sandbox works here).
    """

    def __init__(
        self,
        limits: Limits | None = None,
        backend: str = "auto",
        unsafe: bool = False,
        workers: int | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.backend = backends.choose(backend, unsafe)
        self.python = backends.interpreter()
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.root = os.geteuid() == 0 and self.backend != "none"
        self._slots: queue.Queue[int] = queue.Queue()
        for i in range(self.workers):
            self._slots.put(i)
        self._pool: ThreadPoolExecutor | None = None
        self._uids: list[int] = []  # as root: one uid per worker slot, claimed on first use
        self._locks: list[int] = []

    def run(self, program: str, tests: Sequence[str]) -> ExecResult:
        """Run `program`, then each test (Python source, e.g. `assert f(1) == 2`) after it in the
        same namespace; every test gets a status."""
        slot = self._slots.get()
        try:
            return self._run(slot, program, list(tests))
        finally:
            self._slots.put(slot)

    def run_many(self, jobs: Sequence[tuple[str, Sequence[str]]]) -> list[ExecResult]:
        """(program, tests) pairs run in parallel; results in order."""
        if len(jobs) <= 1 or self.workers == 1:
            return [self.run(p, t) for p, t in jobs]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sandbox")
        return list(self._pool.map(lambda job: self.run(*job), jobs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        for fd in self._locks:  # the uids are free for other sandboxes again
            os.close(fd)
        self._uids, self._locks = [], []

    def uid(self, slot: int) -> int:
        """The uid worker `slot` runs as (root only). Uids are claimed with a lock file each, so
        sandboxes in other processes on this host (a test run beside an eval) never share one:
        a shared uid would share RLIMIT_NPROC and be swept by the other's clean-up."""
        if not self._uids:
            self._uids, self._locks = claim_uids(self.workers)
        return self._uids[slot]

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _user(self, slot: int) -> dict:
        if not self.root:
            return {}
        uid = self.uid(slot)
        return {"user": uid, "group": uid, "extra_groups": []}

    def _nproc_base(self) -> int:
        """RLIMIT_NPROC counts every process of the uid: as root each worker has a uid of its own
        (base 0); otherwise the caller's processes count too."""
        if self.root:
            return 0
        uid = os.getuid()
        n = 0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                n += os.stat(f"/proc/{pid}").st_uid == uid
            except OSError:
                pass
        return n + 16

    def _run(self, slot: int, program: str, tests: list[str]) -> ExecResult:
        t0 = time.monotonic()
        nonce = secrets.token_hex(16)
        job = {
            "nonce": nonce,
            "program": program,
            "tests": tests,
            "limits": self.limits.rlimits(self._nproc_base()),
        }
        scratch = Path(tempfile.mkdtemp(prefix="r1kit-sandbox-"))
        argv = backends.command(self.backend, self.python, self.limits.tmp_mb) + [HARNESS]
        cwd = None
        if self.backend == "none":  # at least a private working directory
            cwd = scratch / "work"
            cwd.mkdir()
        timed_out = False
        try:
            out_path, res_path = scratch / "output", scratch / "results"
            with out_path.open("wb") as out, res_path.open("wb") as res:
                job["fd"] = res.fileno()  # inherited under the same number
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    pass_fds=(res.fileno(),),
                    env=dict(backends.ENV),
                    cwd=cwd,
                    start_new_session=True,
                    **self._user(slot),
                )
                try:
                    proc.stdin.write(json.dumps(job).encode())
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
                try:
                    proc.wait(timeout=self.limits.wall_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                finally:
                    self._kill(proc, slot)
            status, details, done, _ = _read_results(res_path, nonce, len(tests))
            output = out_path.read_bytes()[:2048].decode("utf-8", "replace")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        reason = "ok" if done else _why(proc.returncode, timed_out)
        return ExecResult(
            tests=[s or (reason if not done else "error") for s in status],
            details=details,
            reason=reason,
            output=output,
            wall_s=round(time.monotonic() - t0, 4),
        )

    def _kill(self, proc: subprocess.Popen, slot: int) -> None:
        """SIGKILL the run's process group, then (as root) every process left with the worker's
        uid, until none is: a child that called setsid() left the group, and the pid namespace's
        teardown is asynchronous. The next run of this slot starts with no process of its uid."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        if self.root:
            _reap(self.uid(slot))


LOCK_DIR = Path("/tmp/r1kit-sandbox-uids")  # fixed: every process must see the same locks


def claim_uids(n: int, span: int = 4096) -> tuple[list[int], list[int]]:
    """n uids from UID_BASE.. that no other live sandbox holds, and their lock fds."""
    LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
    uids, fds = [], []
    for uid in range(backends.UID_BASE, backends.UID_BASE + span):
        fd = os.open(LOCK_DIR / str(uid), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        uids.append(uid)
        fds.append(fd)
        if len(uids) == n:
            return uids, fds
    raise R1kitError(f"no free sandbox uid in {backends.UID_BASE}..{backends.UID_BASE + span}")


def _processes_of(uid: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    pids.append(int(name))
            except OSError:  # gone meanwhile
                pass
    return pids


def _reap(uid: int, patience_s: float = 10.0) -> None:
    deadline = time.monotonic() + patience_s
    while (pids := _processes_of(uid)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.005)


def _why(returncode: int | None, timed_out: bool) -> str:
    """Why a run ended without the harness's `done`."""
    if timed_out:
        return "timeout"
    if returncode is None:
        return "killed"
    sig = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    if sig == signal.SIGXCPU:
        return "timeout"
    if sig == signal.SIGXFSZ:
        return "output"
    if sig:
        return "killed"
    return "exited"  # the program ended the process before the tests finished


_settings: dict = {"backend": "auto", "unsafe": False, "limits": None, "workers": None}
_shared: Sandbox | None = None


def configure(
    backend: str = "auto",
    unsafe: bool = False,
    limits: Limits | None = None,
    workers: int | None = None,
) -> None:
    """Settings of the process-wide sandbox that rewards and evaluation share (the CLI's
    --unsafe-exec lands here); the next `shared()` builds it anew."""
    global _shared
    _settings.update(backend=backend, unsafe=unsafe, limits=limits, workers=workers)
    if _shared is not None:
        _shared.close()
    _shared = None


def shared() -> Sandbox:
    """The process-wide sandbox (built on first use; raises R1kitError when none works here and
    --unsafe-exec was not given)."""
    global _shared
    if _shared is None:
        _shared = Sandbox(**_settings)
    return _shared
