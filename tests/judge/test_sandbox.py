"""Hostile candidates are contained and labelled; correct code passes, wrong code fails."""

from __future__ import annotations

import os
import shutil

import pytest

from finetune import FinetuneError
from finetune.judge.sandbox import Limits, Sandbox

PROMPT = "def add(a, b):\n"
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"


@pytest.fixture(scope="module")
def box():
    return Sandbox(Limits(wall_seconds=8, cpu_seconds=4, memory_mb=256, processes=16, file_mb=4))


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
    ("    open('/etc/finetune-was-here', 'w').write('x')\n    return a + b\n", "error:OSError"),
    ("    import socket\n    socket.create_connection(('1.1.1.1', 80), timeout=2)\n    return a + b\n",
     "error:OSError"),
    ("    import os\n    assert 'FINETUNE_SECRET' in os.environ, 'no secret'\n    return a + b\n", "test_failed"),
    ("    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    return a - b\n", "test_failed"),
    (f"    import os, signal\n    os.kill({os.getpid()}, signal.SIGKILL)\n    return a + b\n",
     "error:ProcessLookupError"),
    ("    import sys\n    sys.exit(0)\n", "exited_before_tests"),
    ("    open('/tmp/big', 'wb').write(b'x' * 64 * 2**20)\n    return a + b\n", "file_size_limit"),
])
def test_hostile_candidates_are_contained(box, body, reason, monkeypatch):
    monkeypatch.setenv("FINETUNE_SECRET", "hunter2")
    outcome = run(box, body)
    assert not outcome.passed, outcome
    if reason:
        assert outcome.reason == reason, outcome
    assert outcome.duration < 12
    assert not os.path.exists("/etc/finetune-was-here")  # and this test process is still alive


def test_fork_bomb_leaves_no_processes(box):
    run(box, "    import os\n    while True:\n        os.fork()\n")
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
