"""The program that runs inside the sandbox (standard library only, started as `python -I -S -c`).

It reads {"program", "tests", "nonce", "limits", "fd"} as JSON from stdin, lowers its own hard
resource limits (nothing it runs can raise them again), executes the program, then each test in
the program's namespace, and writes one line per event to file descriptor `fd` (a host file):

    NONCE start I          before test I
    NONCE result I STATUS DETAIL
    NONCE done N           after all N tests

The host trusts only lines carrying the nonce and a final `done`: a program that exits before
the tests (`sys.exit`, `os._exit`), dies, or prints look-alike lines on stdout gets no pass. The
references the harness needs (os.write, the exception classes, os._exit) are bound before the
program runs, so redefining `print`, `AssertionError`, `exit` or builtins changes nothing here.
This is a guard against accidents and casual reward hacking, not against a program that digs
the nonce out of this process's memory: see the README's sandbox section. Under bwrap the
harness is the pid namespace's init: when it exits, the kernel kills whatever the program left.
"""

import json
import os
import resource
import signal
import sys


def main(
    write=os.write,
    exit_now=os._exit,
    str_=str,
    len_=len,
    type_=type,
    isinstance_=isinstance,
    getattr_=getattr,
    AssertionError_=AssertionError,
    MemoryError_=MemoryError,
    OSError_=OSError,
    BaseException_=BaseException,
    compile_=compile,
    exec_=exec,
):
    job = json.loads(sys.stdin.buffer.read())
    nonce, program, tests, limits = job["nonce"], job["program"], job["tests"], job["limits"]
    fd = job["fd"]
    flushes = (sys.stdout.flush, sys.stderr.flush)
    del job
    sys.stdin.close()
    for name, value in limits.items():  # hard limits: a program cannot raise them again
        # CPU: SIGXCPU at the soft limit, SIGKILL one second later
        hard = value + 1 if name == "RLIMIT_CPU" else value
        resource.setrlimit(getattr(resource, name), (value, hard))
    out = fd
    # as a pid namespace's init the harness ignores signals it has no handler for: end on the
    # CPU limit's SIGXCPU with the status a default handler would give (bwrap reports 128+24)
    signal.signal(signal.SIGXCPU, lambda *_: exit_now(128 + 24))

    def say(line):
        write(out, (nonce + " " + line.replace("\n", " ")[:400] + "\n").encode("utf-8", "replace"))

    def failure(err):
        if isinstance_(err, AssertionError_):
            return "wrong_answer"
        if isinstance_(err, MemoryError_):
            return "memory"
        if isinstance_(err, OSError_) and getattr_(err, "errno", None) == 27:  # EFBIG
            return "output"
        return "error"

    def describe(err):
        try:  # the exception's __str__ is the program's code too
            return type_(err).__name__ + ": " + str_(err)[:200]
        except BaseException_:
            return "an exception whose message failed"

    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    numbered = list(enumerate(tests))  # before the program can replace enumerate
    broken = None
    try:
        exec_(compile_(program, "<program>", "exec"), ns)
    except BaseException_ as err:  # SystemExit too: a program that exits never reaches tests
        broken = (failure(err), describe(err))
    for i, test in numbered:
        say("start " + str_(i))
        if broken is not None:
            say("result " + str_(i) + " " + broken[0] + " program failed: " + broken[1])
            continue
        try:
            exec_(compile_(test, "<test " + str_(i) + ">", "exec"), ns)
        except BaseException_ as err:
            say("result " + str_(i) + " " + failure(err) + " " + describe(err))
        else:
            say("result " + str_(i) + " pass")
    say("done " + str_(len_(tests)))
    for flush in flushes:  # os._exit skips the buffers: keep what the program printed
        try:
            flush()
        except BaseException_:
            pass
    exit_now(0)  # no atexit handlers, no lingering threads of the program


main()
