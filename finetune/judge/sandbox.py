"""Run untrusted candidate code against its tests, isolated by bubblewrap, and say why it failed.

Isolation comes from an existing tool, not from Python tricks: ``bwrap`` (Debian package
``bubblewrap``) gives the program new network, PID, IPC, UTS, user and cgroup namespaces (no
network at all; it cannot see or signal any process outside), a private, size-capped ``/tmp``, and
a cleared environment (no secrets inherited). Before ``bwrap`` starts, the child drops to an
unprivileged uid and sets rlimits, which every process in the sandbox inherits: CPU seconds,
address space, process count (per user, so a fork bomb stops at the limit; root is exempt from
this limit, hence the drop) and file size. A wall-clock timeout kills the sandbox's PID 1, which
takes every process inside with it.

**What the sandbox sees.** Only what running Python needs, read-only, found once per process
(:func:`mounts`) and checked by starting the interpreter in it: the system interpreter's file, the
directories on its own ``sys.path`` (the standard library with ``lib-dynload``), the directories of
every shared library ``ldd`` lists for the interpreter and those extension modules (with the
dynamic loader), and the symbolic links on the way to them (on Debian ``/lib`` and ``/lib64`` are
links into ``/usr``), plus ``/dev``, ``/proc`` and the ``/tmp`` tmpfs. On Debian 12 that is
``/usr/bin/python3.11``, ``/usr/lib/python3.11`` and ``/usr/lib/x86_64-linux-gnu``. No ``/etc``
(Python 3.11 with ``-I`` needs none of it: without ``/etc/localtime`` time is UTC, without
``/etc/ld.so.cache`` the loader searches its default directories, and Debian's ``sitecustomize``,
a link into ``/etc``, is skipped), no ``/home``, ``/root``, no repository, no current directory:
a program cannot read what is not there, whatever the uid may read on the host. (Before, the
whole file system was bound read-only and a user's checks read ``/etc/passwd`` back.)

**What comes back.** A candidate passes only when its tests *complete*: the harness prints a
random token on a line of its own after ``check(...)`` returns, and the run passes only if that
line appears and the exit status is 0. Exiting early with status 0 (``sys.exit(0)`` before the
tests run) is a failure. ``Outcome.reason`` is always one of :data:`REASONS`, chosen by the parent
from the exit status and known markers in the output, never text the program wrote (a gateway
returns it to its client; it once carried a file's bytes as a made-up exception name):

    passed, test_failed, timeout, output_limit, cpu_limit, memory_limit, process_limit,
    file_size_limit, exited_before_tests, killed (died by a signal), exit_status (another nonzero
    exit), error:<T> where T is a builtin exception (``error:ZeroDivisionError``), error (an
    exception of any other type), no_program (``execute.run_checks``: the answer has no code).

``Outcome.output`` is the program's own output, for the offline results file of ``finetune judge
data``; it must never be returned to a client. Output is read as it comes and at most
``Limits.output_kb`` (1 MiB) is held; a program that prints more is killed with ``output_limit``
(before, ``communicate()`` held it all: 300 MB printed per candidate took a gateway from 515 to
3,503 MB). 1 MiB is far above what tests print (a failed assert's traceback is about 120 bytes, a
hundred failed doctest examples 15 KB) and costs about 3 MB of peak memory per run, under 25 MB
for the eight runs one sandbox allows at once.

Example::

    box = Sandbox()
    outcome = box.run(problem["prompt"] + completion, problem["test"], problem["entry_point"])
    outcome.passed, outcome.reason      # False, 'timeout'
"""

from __future__ import annotations

import builtins
import functools
import os
import queue
import re
import secrets
import selectors
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
# The names a traceback's last line may report and a client may see: builtin exceptions only.
ERROR_TYPES = frozenset(name for name, value in vars(builtins).items()
                        if isinstance(value, type) and issubclass(value, BaseException))
REASONS = frozenset({"passed", "test_failed", "timeout", "output_limit", "cpu_limit", "memory_limit",
                     "process_limit", "file_size_limit", "exited_before_tests", "killed", "exit_status",
                     "error", "no_program"} | {f"error:{name}" for name in ERROR_TYPES})
_LIBRARY = re.compile(r"(?:^|=>)\s*(/\S+) \(0x", re.MULTILINE)  # ldd: "libc.so.6 => /lib/.../libc.so.6 (0x...)"


@dataclass
class Outcome:
    passed: bool
    reason: str          # one of REASONS, never the program's own words
    duration: float
    output: str          # the program's last lines (at most 4 KiB), for the results file only: never
    #                      send it to a client, the program chose it

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Limits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_mb: int = 1024
    processes: int = 64
    file_mb: int = 16
    output_kb: int = 1024


def _python() -> str:
    # The sandbox runs as `nobody` and sees none of /root or /home (where pyenv and venvs often
    # live): use the system interpreter; the tests need only the standard library.
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate):
            return os.path.realpath(candidate)
    raise FinetuneError("no system python3 (/usr/bin/python3) for the sandbox to run candidates with: "
                        "install it (Debian/Ubuntu: apt-get install python3-minimal)")


def _resolve(path: str, links: dict[str, str]) -> str:
    """``os.path.realpath(path)``, noting in ``links`` every symbolic link met on the way (link ->
    target), so that the sandbox can recreate them."""
    todo = [p for p in reversed(path.split("/")) if p not in ("", ".")]
    real = "/"
    for _ in range(4096):
        if not todo:
            return real
        part = todo.pop()
        here = os.path.dirname(real) if part == ".." else os.path.join(real, part)
        if part == ".." or not os.path.islink(here):
            real = here
            continue
        target = links[here] = os.readlink(here)
        todo += [p for p in reversed(target.split("/")) if p not in ("", ".")]
        real = "/" if target.startswith("/") else real
    raise FinetuneError(f"no sandbox: too many symbolic links (under {path})")


def _within(path: str, parents) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in parents)


@functools.cache
def mounts(python: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """What ``python`` needs to run its standard library: (paths to bind read-only, symbolic links
    as (link, target)). Found once per interpreter: its own ``sys.path`` and what ``ldd`` says it
    and its extension modules load.

    Example: ``mounts("/usr/bin/python3.11")[0]`` is ``('/usr/bin/python3.11',
    '/usr/lib/python3.11', '/usr/lib/x86_64-linux-gnu')`` on Debian 12."""
    probe = subprocess.run([python, "-I", "-S", "-c", "import sys; print('\\n'.join(sys.path))"],
                           capture_output=True, text=True, timeout=60, env={})
    if probe.returncode != 0:
        raise FinetuneError(f"no sandbox: the system python3 does not start ({python}: {probe.stderr.strip()[-300:]})")
    stdlib = [p for p in probe.stdout.splitlines() if os.path.isdir(p)]
    ldd = shutil.which("ldd", path="/usr/bin:/bin")
    if ldd is None:
        raise FinetuneError("no sandbox: ldd is missing (it finds the libraries python loads; Debian/Ubuntu: "
                            "apt-get install libc-bin)")
    modules = [os.path.join(d, f) for d in stdlib for f in sorted(os.listdir(d)) if f.endswith(".so")]
    listed = subprocess.run([ldd, python, *modules], capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin"}).stdout  # nonzero when one is static: fine
    links: dict[str, str] = {}
    binds = {_resolve(python, links)} | {_resolve(d, links) for d in stdlib}
    binds |= {os.path.dirname(_resolve(lib, links)) for lib in _LIBRARY.findall(listed)}
    kept: list[str] = []
    for path in sorted(binds):  # a parent sorts before its children: drop what it already holds
        if not _within(path, kept):
            kept.append(path)
    return tuple(kept), tuple(sorted((link, target) for link, target in links.items() if not _within(link, kept)))


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
        self.binds, self.links = mounts(self.python) if self.bwrap else ((), ())
        self._uids: queue.Queue[int] = queue.Queue()
        for uid in _UIDS if os.getuid() == 0 else (os.getuid(),):  # not root: one run at a time
            self._uids.put(uid)
        if self.bwrap:  # a view that lacks something fails here, once, not as every candidate's "error"
            probe = self.run("", "def check(_):\n    pass\n", "None")
            if not probe.passed:
                raise FinetuneError(f"no sandbox: bubblewrap cannot run the system python3 here ({probe.reason}: "
                                    f"{probe.output[-300:]})")

    def _command(self) -> list[str]:
        if self.bwrap is None:
            return [self.python, "-I", "-"]
        view = [arg for path in self.binds for arg in ("--ro-bind", path, path)]
        view += [arg for link, target in self.links for arg in ("--symlink", target, link)]
        return [self.bwrap, *view, "--dev", "/dev", "--proc", "/proc",
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
        line = "\n" + token  # on a line of its own, even after output that ends without a newline
        source = (f"{program}\n\n{test}\n\n"
                  f"check({entry_point})\nprint({line!r}, flush=True)\n")
        uid = self._uids.get()
        try:
            return self._execute(source, token, uid)
        finally:
            self._uids.put(uid)

    def _execute(self, source: str, token: str, uid: int) -> Outcome:
        already = _processes_of(uid)
        start = time.monotonic()
        deadline = start + self.limits.wall_seconds
        with subprocess.Popen(self._command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, preexec_fn=lambda: self._limit(uid, already),
                              start_new_session=True, env={"PATH": "/usr/bin:/bin"}) as proc:
            try:
                out, cut = _collect(proc, source.encode(), deadline, self.limits.output_kb * 1024)
                if cut is None:  # all output read; it may still run with its output closed
                    try:
                        proc.wait(max(0.0, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        cut = "timeout"
            finally:
                if proc.poll() is None:  # timed out, printed too much, or this thread was interrupted
                    _kill(proc)
                proc.wait()
        duration = round(time.monotonic() - start, 3)
        _wait_for_teardown(uid, already)
        text = out.decode(errors="replace")
        tail = "\n".join(text.strip().splitlines()[-8:])[-4096:]
        if cut is not None:
            return Outcome(False, cut, duration, tail)
        if proc.returncode == 0 and token in text.splitlines():
            return Outcome(True, "passed", duration, tail)
        return Outcome(False, _reason(proc.returncode, text), duration, tail)


def _collect(proc: subprocess.Popen, source: bytes, deadline: float, cap: int) -> tuple[bytes, str | None]:
    """Write ``source`` to the program and read its output as it comes, in one thread (neither pipe
    can fill up and block the other); at most ``cap`` bytes are ever held. Returns the output and
    why reading stopped early: None (end of output), ``timeout`` or ``output_limit``."""
    out = bytearray()
    pending = memoryview(source)
    os.set_blocking(proc.stdin.fileno(), False)
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdin, selectors.EVENT_WRITE)
        selector.register(proc.stdout, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(out), "timeout"
            for key, _ in selector.select(left):
                if key.fileobj is proc.stdin:
                    try:
                        pending = pending[os.write(key.fd, pending):]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # it stopped reading (or never started): its output says why
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fd, cap + 1 - len(out))
                if not chunk:
                    selector.unregister(proc.stdout)
                out += chunk
                if len(out) > cap:
                    return bytes(out[:cap]), "output_limit"
    return bytes(out), None


def _kill(proc: subprocess.Popen) -> None:
    """Kill the sandbox's process group (bwrap itself; --die-with-parent takes what runs inside)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # already gone
        pass


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
    """One of REASONS for a failed run: the output is only tested for known markers, never copied."""
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
    if code < 0 or 128 < code <= 128 + 64:  # a signal (bwrap reports one as 128 + its number)
        return "killed"
    errors = _ERROR_LINE.findall(text)
    if errors:
        name = errors[-1].rsplit(".", 1)[-1]
        return f"error:{name}" if name in ERROR_TYPES else "error"
    return "exit_status"
