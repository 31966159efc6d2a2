"""The request's own checks (doctest examples and asserts) read from a chat request and run on a
candidate's code in the sandbox."""

from __future__ import annotations

import pytest

from finetune.judge.execute import program_of, request_checks, run_checks
from finetune.judge.sandbox import Sandbox

ASK = ("Write `median(xs)` for a non-empty list.\n\n```python\n>>> median([3, 1, 2])\n2\n>>> median([4, 1,\n"
       "...         3, 2])\n2.5\n```\nAlso:\nassert median([7]) == 7\n  assert median([1, 1, 9]) == 1\nassert (broken\n")
RIGHT = ("Here it is:\n```python\ndef median(xs):\n    s = sorted(xs)\n    n = len(s)\n"
         "    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2\n```\nDone.")
WRONG = "```py\ndef median(xs):\n    return sorted(xs)[len(xs) // 2]\n```"


def test_request_checks_reads_doctests_with_continuations_and_parsable_asserts():
    checks = request_checks([{"role": "user", "content": "old question\n>>> f()\n1"},
                             {"role": "assistant", "content": "ok"}, {"role": "user", "content": ASK}])
    assert checks.doctests == ">>> median([3, 1, 2])\n2\n>>> median([4, 1,\n...         3, 2])\n2.5\n"
    assert checks.asserts == ("assert median([7]) == 7", "assert median([1, 1, 9]) == 1")  # "(broken" dropped
    assert not request_checks([{"role": "user", "content": "Reverse a list in Python."}])
    # In a quoted prompt, the line after the output is the closing quote, not more output.
    docstring = 'Complete:\ndef f(x):\n    """Square.\n    >>> f(2)\n    4\n    """\n'
    assert request_checks([{"role": "user", "content": docstring}]).doctests == ">>> f(2)\n4\n"
    parts = request_checks([{"role": "user", "content": [{"type": "text", "text": "assert g(1) == 2"}]}])
    assert parts.asserts == ("assert g(1) == 2",) and parts.doctests == ""


def test_program_of_takes_the_first_fence_or_python_that_defines_something():
    assert program_of(RIGHT).startswith("def median(xs):\n") and "Done" not in program_of(RIGHT)
    assert program_of("def f():\n    return 1\n") == "def f():\n    return 1\n"
    assert program_of("The answer is 42.") is None and program_of("x = 1") is None


@pytest.fixture(scope="module")
def box():
    return Sandbox()


def test_run_checks_passes_only_code_that_satisfies_every_check(box):
    checks = request_checks([{"role": "user", "content": ASK}])
    assert run_checks(box, RIGHT, checks).passed
    wrong = run_checks(box, WRONG, checks)  # the even-length doctest fails
    assert (wrong.passed, wrong.reason) == (False, "test_failed")
    no_code = run_checks(box, "Sort it and take the middle.", checks)
    assert (no_code.passed, no_code.reason) == (False, "no_program")
    only_doctest = request_checks([{"role": "user", "content": ">>> median([4, 1, 3, 2])\n2.5"}])
    assert run_checks(box, RIGHT, only_doctest).passed and not run_checks(box, WRONG, only_doctest).passed
    # An answer that exits before the checks run does not pass.
    assert not run_checks(box, "```python\nimport sys\nsys.exit(0)\n```", checks).passed
