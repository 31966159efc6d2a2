"""Run untrusted candidate code against its tests, isolated by bubblewrap, and say why it failed.

Isolation comes from an existing tool, not from Python tricks: ``bwrap`` (Debian package
``bubblewrap``) gives the program new network, PID, IPC, UTS, user and cgroup namespaces (no
network at all; it cannot see or signal any process outside), a read-only view of the file system
with a private, size-capped ``/tmp``, and a cleared environment (no secrets inherited). Before
``bwrap`` starts, the child drops to the ``nobody`` user and sets rlimits, which every process in
the sandbox inherits: CPU seconds, address space, process count (per user, so a fork bomb stops
at the limit; root is exempt from this limit, hence the drop) and file size. A wall-clock timeout
kills the sandbox's PID 1, which takes every process inside with it.

A candidate passes only when its tests *complete*: the harness prints a random token after
``check(...)`` returns, and the run passes only if that token appears and the exit status is 0.
Exiting early with status 0 (``sys.exit(0)`` before the tests run) is a failure.

Example::

    box = Sandbox()
    outcome = box.run(problem["prompt"] + completion, problem["test"], problem["entry_point"])
    outcome.passed, outcome.reason      # False, 'timeout'
"""

from __future__ import annotations

import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass

from finetune import FinetuneError

NOBODY = 65534
# Concurrent runs each get their own unprivileged uid, so that one run's process-count limit and
# teardown wait never see another run's processes (uids need no /etc/passwd entry).
_UIDS = (NOBODY, 60001, 60002, 60003, 60004, 60005, 60006, 60007)
_ERROR_LINE = re.compile(r"^(\w+(?:\.\w+)*(?:Error|Exception|Exit|Interrupt)):?", re.MULTILINE)


@dataclass
class Outcome:
    passed: bool
    reason: str  # passed, test_failed, timeout, cpu_limit, memory_limit, process_limit, file_size_limit,
    #              exited_before_tests, killed, error:<ExceptionType>, exit_status_<n>
    duration: float
    output: str          # the last lines of stdout+stderr, for the results file

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Limits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_mb: int = 1024
    processes: int = 64
    file_mb: int = 16


def _python() -> str:
    # The sandbox runs as `nobody`, which cannot enter /root (where pyenv and venvs often live):
    # use the system interpreter; the tests need only the standard library.
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate):
            return candidate
    raise FinetuneError("no system python3 (/usr/bin/python3) for the sandbox to run candidates with")


class Sandbox:
    """Runs programs under bubblewrap (or, with ``unsafe=True`` and no bwrap, with rlimits only)."""

    def __init__(self, limits: Limits | None = None, unsafe: bool = False):
        self.limits = limits or Limits()
        self.bwrap = shutil.which("bwrap")
        if self.bwrap is None and not unsafe:
            raise FinetuneError("no sandbox: executing candidate code needs bubblewrap (Debian/Ubuntu: apt-get "
                                "install bubblewrap; Fedora: dnf install bubblewrap). Pass --unsafe-no-sandbox "
                                "only on a throwaway machine: candidates then run with rlimits alone")
        self.python = _python() if self.bwrap else os.path.realpath(shutil.which("python3") or "python3")
        self._uids: queue.Queue[int] = queue.Queue()
        for uid in _UIDS if os.getuid() == 0 else (os.getuid(),):  # not root: one run at a time
            self._uids.put(uid)

    def _command(self) -> list[str]:
        if self.bwrap is None:
            return [self.python, "-I", "-"]
        return [self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                "--size", str(self.limits.file_mb * 4 * 2**20), "--tmpfs", "/tmp", "--chdir", "/tmp",
                "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
                "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
                "--", self.python, "-I", "-"]

    def _limit(self, uid: int, already: int) -> None:
        import resource

        lim = self.limits
        resource.setrlimit(resource.RLIMIT_CPU, (lim.cpu_seconds, lim.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (lim.memory_mb * 2**20,) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim.file_mb * 2**20,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if os.getuid() == 0:  # root ignores RLIMIT_NPROC: become an unprivileged uid first
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        # The limit counts every process of the user, so add what the user already runs.
        resource.setrlimit(resource.RLIMIT_NPROC, (lim.processes + already,) * 2)

    def run(self, program: str, test: str, entry_point: str) -> Outcome:
        """Run ``program`` then ``test`` and ``check(entry_point)``; pass iff the tests complete."""
        token = secrets.token_hex(16)
        source = (f"{program}\n\n{test}\n\n"
                  f"check({entry_point})\nprint({token!r}, flush=True)\n")
        uid = self._uids.get()
        try:
            return self._execute(source, token, uid)
        finally:
            self._uids.put(uid)

    def _execute(self, source: str, token: str, uid: int) -> Outcome:
        already = _processes_of(uid)
        start = time.perf_counter()
        proc = subprocess.Popen(self._command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, preexec_fn=lambda: self._limit(uid, already),
                                start_new_session=True, env={"PATH": "/usr/bin:/bin"})
        try:
            out, _ = proc.communicate(source.encode(), timeout=self.limits.wall_seconds)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            timed_out = True
        duration = round(time.perf_counter() - start, 3)
        _wait_for_teardown(uid, already)
        text = out.decode(errors="replace")
        tail = "\n".join(text.strip().splitlines()[-8:])
        if timed_out:
            return Outcome(False, "timeout", duration, tail)
        lines = text.splitlines()
        if proc.returncode == 0 and token in lines:
            return Outcome(True, "passed", duration, tail)
        return Outcome(False, _reason(proc.returncode, text), duration, tail)


def _wait_for_teardown(uid: int, already: int, seconds: float = 5.0) -> None:
    """The kernel kills what is left in the PID namespace when its init exits, asynchronously;
    wait for it so that one candidate's stragglers never count against the next one's limit."""
    deadline = time.monotonic() + seconds
    while _processes_of(uid) > already and time.monotonic() < deadline:
        time.sleep(0.02)


def _processes_of(uid: int) -> int:
    """Live processes of ``uid``. Zombies are left out: bwrap's exited helper lingers as one until
    the machine's init reaps it (1-2 s here), and it holds nothing but a process slot."""
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                with open(f"/proc/{pid}/stat", "rb") as fh:
                    n += fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
        except OSError:
            pass
    return n


def _reason(code: int, text: str) -> str:
    if code in (-signal.SIGXCPU, 128 + signal.SIGXCPU) or "SIGXCPU" in text:
        return "cpu_limit"
    if "MemoryError" in text:
        return "memory_limit"
    if code == 0:
        return "exited_before_tests"
    if "AssertionError" in text:
        return "test_failed"
    if "Resource temporarily unavailable" in text:  # fork() at the process limit
        return "process_limit"
    if "File too large" in text:
        return "file_size_limit"
    if code in (-signal.SIGKILL, 128 + signal.SIGKILL, 137):
        return "killed"
    errors = _ERROR_LINE.findall(text)
    if errors:
        return f"error:{errors[-1].rsplit('.', 1)[-1]}"
    return f"exit_status_{code}"
