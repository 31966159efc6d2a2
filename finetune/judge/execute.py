"""The request's own tests, run on each candidate's code: the execution half of a hybrid pick.

When a request carries checks, the gateway runs every candidate's program against them in the
sandbox before the judge ranks anything (R2E-Gym found execution plus a reward model well above
either alone). The checks are read from the last user message:

* **doctest examples**: ``>>> expression`` lines, their ``...`` continuations and the line of
  expected output under each (``doctest``'s own parser; code-fence lines are ignored);
* **asserts**: lines starting with ``assert`` (in or out of a code fence) that parse as Python.

A candidate's program is its first fenced code block (```` ```python ````, ```` ```py ```` or a
bare fence), or its whole text when that parses as Python and defines something. A candidate
passes when every check passes; one with no program fails.

Example::

    checks = request_checks([{"role": "user", "content": "Write add.\\n>>> add(2, 3)\\n5"}])
    outcome = run_checks(Sandbox(), "def add(a, b):\\n    return a + b", checks)   # passed
"""

from __future__ import annotations

import ast
import doctest
import re
from dataclasses import dataclass

from finetune.judge.sandbox import Outcome, Sandbox

FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.S)
_FENCE_LINE = re.compile(r"^\s*```[\w+-]*\s*$", re.M)
_ASSERT = re.compile(r"^\s*(assert\s.+)$", re.M)


@dataclass(frozen=True)
class Checks:
    doctests: str   # the examples' source, as doctest reads it ("" for none)
    asserts: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.doctests or self.asserts)

    def test(self) -> str:
        """A ``check(_)`` that runs the asserts, then the doctest examples on a copy of the program's
        globals, and fails unless every example ran and matched."""
        lines = ["def check(_):"]
        lines += [f"    {a}" for a in self.asserts]
        if self.doctests:
            lines += ["    import doctest",
                      f"    examples = doctest.DocTestParser().get_doctest({self.doctests!r}, dict(globals()), "
                      "'request', None, 0)",
                      "    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)",
                      "    result = runner.run(examples)",
                      "    assert result.attempted and not result.failed, f'{result.failed} doctest example(s) failed'"]
        return "\n".join(lines + ["    return None"]) + "\n"


def _last_user_text(messages: list[dict]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):  # OpenAI content parts
                return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else ""
    return ""


def request_checks(messages: list[dict]) -> Checks:
    """The doctest examples and asserts the last user message carries (empty when none)."""
    text = _last_user_text(messages)
    plain = _FENCE_LINE.sub("", text)
    try:
        examples = doctest.DocTestParser().get_examples(plain)
    except ValueError:  # inconsistent indentation: not usable examples
        examples = []
    # An example's expected output is its first line: in a chat message, what follows it without a
    # blank line is prose, an assert or a closing quote far more often than more output.
    doctests = "".join(">>> " + e.source.rstrip().replace("\n", "\n... ") + "\n" + e.want.partition("\n")[0] + "\n"
                       for e in examples)
    asserts = []
    for line in _ASSERT.findall(plain):
        try:
            ast.parse(line.strip())
        except SyntaxError:
            continue
        asserts.append(line.strip())
    return Checks(doctests, tuple(dict.fromkeys(asserts)))


def program_of(text: str) -> str | None:
    """The candidate's program: its first fenced code block, or all of it when that is Python that
    defines a function or class; None when it holds no program."""
    m = FENCE.search(text or "")
    if m:
        return m.group(1)
    try:
        tree = ast.parse(text or "")
    except SyntaxError:
        return None
    defines = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in tree.body)
    return text if defines else None


def run_checks(box: Sandbox, text: str, checks: Checks) -> Outcome:
    """Whether the candidate's program passes the request's checks (``no_program`` if it has none).
    Its ``reason`` is a fixed code (``sandbox.REASONS``) that may go back to a client; its
    ``output`` is what the program printed and must not."""
    program = program_of(text)
    if program is None:
        return Outcome(False, "no_program", 0.0, "")
    return box.run(program, checks.test(), "None")
