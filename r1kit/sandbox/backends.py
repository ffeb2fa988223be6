"""How a sandboxed process is started: bubblewrap, else `unshare`, else nothing (unsafe).

bwrap: new user, pid, network, ipc, uts and cgroup namespaces; a file system of read-only /usr
(and the interpreter's prefix when it lies elsewhere), a fresh /proc and /dev, a size-capped tmpfs
at /tmp as the only writable place; an emptied environment; no capabilities.

unshare (util-linux): the same namespaces, a size-capped tmpfs mounted over /tmp, /var/tmp and
/dev/shm; the rest of the file system stays visible, so what the program may read is what the
sandbox's user may read (as root each worker runs as its own unprivileged uid, to which /root,
0600 files and the caller's files are closed).

Both are probed once per process with a real sandboxed `python -c pass`; the first that works is
used. Neither working: refuse, unless the caller passed `unsafe=True` (`--unsafe-exec`), which
runs the harness as a plain child with resource limits only.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from r1kit.errors import R1kitError

BACKENDS = ("bwrap", "unshare")
UID_BASE = 61000  # as root, each worker slot runs as a uid/gid of its own from here up
PROBE_UID = UID_BASE - 1  # the availability probe's, never a worker's (workers' get swept)
PATH = "/usr/local/bin:/usr/bin:/bin"
ENV = {  # the whole environment a sandboxed program sees
    "PATH": PATH,
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
}
NO_SANDBOX = (
    "cannot sandbox model-written code: neither bubblewrap (apt-get install bubblewrap) nor "
    "unshare with user and network namespaces works here; pass --unsafe-exec to run it with "
    "resource limits only (no network or file system isolation)"
)


def _world_usable(path: Path) -> bool:
    """Every directory above `path` is searchable and `path` readable by any user (what a worker
    running as an unprivileged uid needs)."""
    try:
        p = path.resolve()
        for d in p.parents:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return False
        return bool(os.stat(p).st_mode & stat.S_IROTH)
    except OSError:
        return False


@functools.cache
def interpreter() -> str:
    """The Python the sandbox runs: this one when any user may run it (and its standard library),
    else the system's python3. The harness needs the standard library only."""
    here = Path(sys.executable)
    stdlib = Path(os.__file__).parent
    if os.geteuid() != 0 or (_world_usable(here) and _world_usable(stdlib)):
        return str(here.resolve())
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if Path(cand).exists() and _world_usable(Path(cand)):
            return str(Path(cand).resolve())
    return str(here.resolve())


def _prefix(python: str) -> str:
    """The install prefix of an interpreter at PREFIX/bin/pythonX.Y."""
    return str(Path(python).parent.parent)


def command(backend: str, python: str, tmp_mb: int) -> list[str]:
    """argv that starts `python -I -S -c HARNESS` (appended by the caller) in the sandbox."""
    py = [python, "-I", "-S", "-c"]
    if backend == "bwrap":
        # --as-pid-1: the harness is the namespace's init, so when it ends the kernel kills
        # everything else in the namespace and bwrap leaves no orphan behind
        argv = ["bwrap", "--unshare-all", "--as-pid-1", "--die-with-parent", "--new-session"]
        argv += ["--clearenv"]
        argv += ["--cap-drop", "ALL", "--ro-bind", "/usr", "/usr"]
        for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
            if os.path.islink(d):
                argv += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                argv += ["--ro-bind", d, d]
        prefix = _prefix(python)
        if not prefix.startswith("/usr/") and prefix != "/usr":
            argv += ["--ro-bind", prefix, prefix]
        for f in ("/etc/ld.so.cache", "/etc/localtime"):
            argv += ["--ro-bind-try", f, f]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        argv += ["--size", str(tmp_mb << 20), "--tmpfs", "/tmp", "--remount-ro", "/"]
        argv += ["--chdir", "/tmp"]
        for k, v in ENV.items():
            argv += ["--setenv", k, v]
        return argv + py
    if backend == "unshare":
        # mount namespace: fresh tmpfs over the world-writable places, then drop into /tmp
        mounts = " && ".join(
            f"mount -t tmpfs -o size={tmp_mb}m,mode=1777 tmpfs {d}"
            for d in ("/tmp", "/var/tmp", "/dev/shm")
            if os.path.isdir(d)
        )
        script = f'{mounts} && cd /tmp && exec env -i {_env_args()} "$@"'
        argv = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork"]
        argv += ["--kill-child", "--mount", "--mount-proc", "--ipc", "--uts", "--"]
        return argv + ["/bin/sh", "-c", script, "sandbox", *py]
    if backend == "none":
        return py
    raise ValueError(f"unknown sandbox backend {backend!r}")


def _env_args() -> str:
    return " ".join(f"{k}={v}" for k, v in ENV.items())


def _probe(backend: str) -> bool:
    exe = "bwrap" if backend == "bwrap" else "unshare"
    if shutil.which(exe) is None:
        return False
    argv = command(backend, interpreter(), 8) + ["import socket; socket.socket().close()"]
    kw = {}
    if os.geteuid() == 0:
        kw = dict(user=PROBE_UID, group=PROBE_UID, extra_groups=[])
    try:
        r = subprocess.run(argv, capture_output=True, timeout=30, env=ENV, **kw)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


@functools.cache
def available() -> tuple[str, ...]:
    """The backends that start a sandboxed Python on this machine, best first."""
    return tuple(b for b in BACKENDS if _probe(b))


def choose(backend: str = "auto", unsafe: bool = False) -> str:
    """The backend to use: the one asked for, or the best available; 'none' only when unsafe."""
    if backend not in ("auto", "none", *BACKENDS):
        raise R1kitError(f"unknown sandbox {backend!r}; choose auto, {', '.join(BACKENDS)}")
    if backend == "none":
        if not unsafe:
            raise R1kitError("sandbox 'none' runs model-written code unprotected: --unsafe-exec")
        return "none"
    have = available()
    if backend != "auto":
        if backend in have:
            return backend
        raise R1kitError(f"sandbox {backend!r} does not work on this machine; {NO_SANDBOX}")
    if have:
        return have[0]
    if unsafe:
        return "none"
    raise R1kitError(NO_SANDBOX)
