"""Hostile candidates are contained and labelled; correct code passes, wrong code fails. The tests
named after an attack (host files read through the checks, output that floods the gateway) fail
if its fix is undone."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from finetune import FinetuneError
from finetune.judge.execute import request_checks, run_checks
from finetune.judge.sandbox import REASONS, Limits, Sandbox

PROMPT = "def add(a, b):\n"
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"


@pytest.fixture(scope="module")
def box():
    return Sandbox(Limits(wall_seconds=8, cpu_seconds=4, memory_mb=256, processes=16, file_mb=4))


@pytest.fixture(scope="module")
def stdlib(box):
    """The sandbox interpreter's standard library folder, which the sandbox shows read-only."""
    where = subprocess.run([box.python, "-I", "-c", "import os; print(os.path.dirname(os.__file__))"],
                           capture_output=True, text=True, check=True)
    return where.stdout.strip()


def run(box, body: str):
    return box.run(PROMPT + body, TEST, "add")


def test_correct_passes_and_wrong_fails(box):
    assert run(box, "    return a + b\n").passed
    wrong = run(box, "    return a - b\n")
    assert not wrong.passed and wrong.reason == "test_failed"
    broken = run(box, "    return a +\n")
    assert not broken.passed and broken.reason == "error:SyntaxError"


@pytest.mark.parametrize(("body", "reason"), [
    ("    while True:\n        pass\n", "cpu_limit"),
    ("    import time\n    time.sleep(60)\n", "timeout"),
    ("    x = bytearray(2 * 1024**3)\n    return a + b\n", "memory_limit"),
    ("    import os\n    while True:\n        os.fork()\n", "process_limit"),
    ("    import os\n    open(os.path.join(os.path.dirname(os.__file__), 'finetune-was-here'), 'w')\n"
     "    return a + b\n", "error:OSError"),  # read-only: EROFS, not a permission error
    ("    import socket\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\n    return a + b\n",
     "error:OSError"),
    ("    import os\n    assert 'FINETUNE_SECRET' in os.environ, 'no secret'\n    return a + b\n", "test_failed"),
    ("    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    return a - b\n", "test_failed"),
    (f"    import os, signal\n    os.kill({os.getpid()}, signal.SIGKILL)\n    return a + b\n",
     "error:ProcessLookupError"),
    ("    import sys\n    sys.exit(0)\n", "exited_before_tests"),
    ("    open('/tmp/big', 'wb').write(b'x' * 64 * 2**20)\n    return a + b\n", "file_size_limit"),
])
def test_hostile_candidates_are_contained(box, stdlib, body, reason, monkeypatch):
    monkeypatch.setenv("FINETUNE_SECRET", "hunter2")
    outcome = run(box, body)
    assert not outcome.passed, outcome
    assert outcome.reason == reason, outcome
    assert outcome.duration < 12
    assert not os.path.exists(os.path.join(stdlib, "finetune-was-here"))  # and this test process is still alive


@pytest.mark.skipif(os.getuid() != 0, reason="as root each run has its own uid, whose processes this counts; "
                                             "otherwise the sandbox shares this test's uid")
def test_fork_bomb_leaves_no_processes(box):
    assert run(box, "    import os\n    while True:\n        os.fork()\n").reason == "process_limit"
    from finetune.judge.sandbox import _UIDS, _processes_of

    assert sum(_processes_of(uid) for uid in _UIDS) == 0  # (exited ones may linger as zombies)


def test_a_printed_success_token_is_not_a_pass(box):
    """Only the harness knows the token: a candidate that prints success lines still fails."""
    outcome = run(box, "    print('passed')\n    print('OK')\n    return a - b\n")
    assert not outcome.passed


def test_no_isolation_tool_refuses(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(FinetuneError, match="apt-get install bubblewrap"):
        Sandbox()


# -- attack: host files read through a request's checks ---------------------------------------------

@pytest.mark.parametrize("path", ["/etc/passwd", "/etc", "/root", "/home", "/work", os.getcwd(), __file__])
def test_host_files_read_through_the_checks_are_not_there(box, path):
    """Only the interpreter, its standard library and its shared libraries are mounted: a path the
    program's uid could read on the host does not exist in the sandbox."""
    if not os.path.exists(path):
        pytest.skip(f"{path} does not exist on this machine either")
    outcome = run(box, f"    import os\n    os.stat({path!r})\n    return a + b\n")
    assert outcome.reason == "error:FileNotFoundError", outcome


def test_the_sandbox_binds_only_the_interpreter_and_its_libraries(box, stdlib):
    def bound(path):
        return any(path == b or path.startswith(b + "/") for b in box.binds)

    assert bound(box.python) and bound(stdlib)
    assert all(b.startswith(("/usr/", "/lib")) for b in box.binds), box.binds  # no /etc, /root, /home, /work, /tmp


def test_links_on_the_way_to_a_library_are_noted_to_be_recreated(tmp_path):
    """As on Debian: /lib -> usr/lib, and a loader reached through a link in another folder."""
    from finetune.judge.sandbox import _resolve

    (tmp_path / "usr/lib/x86_64").mkdir(parents=True)
    (tmp_path / "usr/lib/x86_64/ld.so").write_text("")
    (tmp_path / "usr/lib64").mkdir()
    (tmp_path / "lib").symlink_to("usr/lib")
    (tmp_path / "lib64").symlink_to("usr/lib64")
    (tmp_path / "usr/lib64/ld.so").symlink_to("../../lib/x86_64/./ld.so")
    links: dict[str, str] = {}
    assert _resolve(f"{tmp_path}/lib64/ld.so", links) == f"{tmp_path}/usr/lib/x86_64/ld.so"
    assert links == {f"{tmp_path}/lib64": "usr/lib64", f"{tmp_path}/usr/lib64/ld.so": "../../lib/x86_64/./ld.so",
                     f"{tmp_path}/lib": "usr/lib"}


EXFILTRATE = ("assert __import__('os').write(1, (open({file}).read()[:64].encode().hex()+'Error\\n').encode()) "
              "and __import__('os')._exit(3)")


@pytest.mark.parametrize("file", ["'/etc/passwd'", "__import__('os').__file__"])
def test_host_files_exfiltrated_as_an_error_name_come_back_as_a_fixed_reason(box, stdlib, file):
    """The probe's payload, sent as a user's assert: /etc/passwd is not there, and a file that is
    there (the standard library's os.py) does not come back in the reason either."""
    checks = request_checks([{"role": "user", "content": "Write f.\n" + EXFILTRATE.format(file=file)}])
    assert checks.asserts, "the payload is read as a check"
    outcome = run_checks(box, "```python\ndef f():\n    return 1\n```", checks)
    assert outcome.reason in REASONS, outcome
    with open("/etc/passwd" if "passwd" in file else os.path.join(stdlib, "os.py")) as fh:
        host = fh.read()[:64]
    assert host.encode().hex()[:16] not in outcome.reason and host[:16] not in outcome.reason
    assert outcome.reason == ("error:FileNotFoundError" if "passwd" in file else "error")


def test_a_made_up_error_name_is_not_echoed_but_a_builtin_one_is(box):
    name = "Leak" + "6c65616b" * 16 + "Error"
    made_up = box.run(f"class {name}(Exception):\n    pass\n\n\ndef add(a, b):\n    raise {name}()\n", TEST, "add")
    assert made_up.reason == "error" and name in made_up.output, made_up  # the program did raise it
    assert run(box, "    import json\n    json.loads('{')\n").reason == "error"  # json.decoder.JSONDecodeError
    printed = run(box, "    import os\n    os.write(1, b'deadbeefError: x\\n')\n    os._exit(3)\n")
    assert printed.reason == "error", printed
    assert run(box, "    return a / 0\n").reason == "error:ZeroDivisionError"


# -- attack: output that floods the gateway's memory ----------------------------------------------

def _peak_rss_kb() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


def test_flooding_output_is_cut_at_the_cap_and_never_held(box):
    """200 MiB printed (in 64 KiB writes) ends at the 1 MiB cap, fast, and this process's peak
    memory grows by far less than what was printed."""
    with open("/proc/self/clear_refs", "w") as fh:  # "5" resets the peak (VmHWM) to the current RSS
        fh.write("5")
    before = _peak_rss_kb()
    start = time.monotonic()
    outcome = run(box, "    import sys\n    for _ in range(3200):\n        sys.stdout.write('x' * 65536)\n"
                       "    return a + b\n")
    assert (outcome.passed, outcome.reason) == (False, "output_limit"), outcome
    assert time.monotonic() - start < 5
    assert _peak_rss_kb() - before < 32 * 1024  # KiB: printed were 200 MiB
    assert len(outcome.output) <= 4096


def test_output_under_the_cap_still_passes(box):
    """The pass token is printed last, after up to the cap of the program's own output (here one
    line with no newline at its end)."""
    kib = box.limits.output_kb - 16
    outcome = box.run(f"for _ in range({kib}):\n    print('y' * 1024, end='')\n\n\n{PROMPT}    return a + b\n",
                      TEST, "add")
    assert outcome.passed, outcome.reason


def test_timeouts_hold_while_output_is_read():
    fast = Sandbox(Limits(wall_seconds=2))
    closed = fast.run("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)\n", "def check(_):\n    pass\n",
                      "None")
    trickle = fast.run("import time\nwhile True:\n    print('.', flush=True)\n    time.sleep(0.1)\n",
                       "def check(_):\n    pass\n", "None")
    for outcome in (closed, trickle):
        assert outcome.reason == "timeout" and outcome.duration < 4, outcome


def test_humaneval_style_program_with_stdlib_imports_passes(box):
    program = """\
import collections, datetime, decimal, fractions, functools, hashlib, heapq, itertools, json, math, random, re
import string
from typing import List


def add(a: int, b: int) -> int:
    words: List[str] = re.findall(r"\\w+", string.ascii_lowercase + " x")
    assert collections.Counter(words)["x"] == 1 and math.isqrt(17) == 4
    assert json.loads(json.dumps({"k": [1, 2]})) == {"k": [1, 2]}
    assert list(itertools.accumulate([1, 2, 3])) == [1, 3, 6] and functools.reduce(max, [3, 9, 2]) == 9
    assert heapq.nsmallest(2, [5, 1, 4]) == [1, 4] and datetime.date(2024, 2, 29).weekday() == 3
    assert decimal.Decimal("0.1") + decimal.Decimal("0.2") == decimal.Decimal("0.3")
    assert fractions.Fraction(1, 3) * 3 == 1 and random.Random(0).randint(0, 10) in range(11)
    assert hashlib.sha256(b"").hexdigest().startswith("e3b0c442") and datetime.datetime.now().year > 2000
    return a + b
"""
    outcome = box.run(program, TEST, "add")
    assert outcome.passed, outcome
