"""Mutants: one edit each, distinct, spread over operator kinds, docstrings untouched; each kind
makes exactly the edit it names; every mutant of every shipped problem is valid Python."""

from __future__ import annotations

import ast
import difflib
import json

import pytest

from finetune.judge.mutate import _apply, _sites, mutants, normalise
from tests.conftest import REPO

SOURCE = '''
def window_sum(xs, k):
    """Sum of the last 3 items when k is 0; else of the first k items."""
    if k == 0:
        return sum(xs[-3:])
    total = 0
    for i in range(k):
        if i < len(xs) and xs[i] > 0 or i == 0:
            total += xs[i]
    return total
'''
KINDS = {"compare", "arith", "bool", "off_by_one", "drop_branch", "wrong_return", "negate_condition", "wrong_name",
         "swap_call_args", "min_max", "method", "slice_bound", "drop_statement", "loop_control", "unary"}
PROBLEMS = [REPO / "data" / "judge" / "problems.jsonl", REPO / "data" / "judge" / "problems-extra.jsonl"]


def _edits(a: str, b: str) -> int:
    """Lines removed plus lines added going from a to b."""
    return sum(1 for line in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and line[:3] not in ("+++", "---"))


def test_mutants_are_single_distinct_edits():
    out = mutants(SOURCE, limit=50, seed=0)
    original = normalise(SOURCE)
    codes = [code for _, code in out]
    assert len(set(codes)) == len(codes) and original not in codes
    assert {kind for kind, _ in out} == {"compare", "arith", "bool", "off_by_one", "drop_branch", "wrong_return",
                                         "negate_condition", "wrong_name", "slice_bound", "unary"}
    for _, code in out:
        ast.parse(code)
        assert '"""Sum of the last 3 items when k is 0; else of the first k items."""' in code
        assert _edits(original, code) <= 2  # one edit: a line changed (or a one-line branch dropped)


def test_limit_and_seed():
    assert len(mutants(SOURCE, limit=4, seed=1)) == 4
    assert mutants(SOURCE, limit=6, seed=3) == mutants(SOURCE, limit=6, seed=3)
    for seed in range(5):  # round-robin: the first mutants are all of different kinds
        kinds = [k for k, _ in mutants(SOURCE, limit=6, seed=seed)]
        assert len(set(kinds)) == 6
    # the kinds' order is shuffled by the seed, so a small limit still reaches every kind over seeds
    assert {k for seed in range(30) for k, _ in mutants(SOURCE, limit=3, seed=seed)} == {
        k for k, _ in mutants(SOURCE, limit=100, seed=0)}


def _of_kind(kind: str, source: str) -> set[str]:
    return {code for k, code in mutants(source, limit=100, seed=0) if k == kind}


def _src(text: str) -> str:
    return normalise(text)


@pytest.mark.parametrize(("kind", "source", "expected"), [
    ("negate_condition", '''
def f(xs, n):
    while n > 0:
        n -= 1
    if xs:
        return [x for x in xs if x > n]
    return 1 if n else 2
''', ['''
def f(xs, n):
    while not n > 0:
        n -= 1
    if xs:
        return [x for x in xs if x > n]
    return 1 if n else 2
''', '''
def f(xs, n):
    while n > 0:
        n -= 1
    if not xs:
        return [x for x in xs if x > n]
    return 1 if n else 2
''', '''
def f(xs, n):
    while n > 0:
        n -= 1
    if xs:
        return [x for x in xs if not x > n]
    return 1 if n else 2
''', '''
def f(xs, n):
    while n > 0:
        n -= 1
    if xs:
        return [x for x in xs if x > n]
    return 1 if not n else 2
''']),
    # each read of a local becomes the next local already bound there (a, b, then c), cyclically
    ("wrong_name", '''
def f(a, b):
    c = a + len(b)
    return c * b
''', ['''
def f(a, b):
    c = b + len(b)
    return c * b
''', '''
def f(a, b):
    c = a + len(a)
    return c * b
''', '''
def f(a, b):
    c = a + len(b)
    return a * b
''', '''
def f(a, b):
    c = a + len(b)
    return c * c
''']),
    # not for min/max (commutative) nor for two equal arguments
    ("swap_call_args", '''
def f(s, n):
    return s.replace('a', 'b') * max(n, 2) + s.replace('a', 'a') + str(divmod(n, 3))
''', ['''
def f(s, n):
    return s.replace('b', 'a') * max(n, 2) + s.replace('a', 'a') + str(divmod(n, 3))
''', '''
def f(s, n):
    return s.replace('a', 'b') * max(n, 2) + s.replace('a', 'a') + str(divmod(3, n))
''']),
    ("min_max", '''
def f(xs, ys):
    ys.sort()
    return (min(xs), all(xs), sorted(xs, reverse=True), sorted(ys, reverse=xs))
''', ['''
def f(xs, ys):
    ys.sort(reverse=True)
    return (min(xs), all(xs), sorted(xs, reverse=True), sorted(ys, reverse=xs))
''', '''
def f(xs, ys):
    ys.sort()
    return (max(xs), all(xs), sorted(xs, reverse=True), sorted(ys, reverse=xs))
''', '''
def f(xs, ys):
    ys.sort()
    return (min(xs), any(xs), sorted(xs, reverse=True), sorted(ys, reverse=xs))
''', '''
def f(xs, ys):
    ys.sort()
    return (min(xs), all(xs), sorted(xs, reverse=False), sorted(ys, reverse=xs))
''', '''
def f(xs, ys):
    ys.sort()
    return (min(xs), all(xs), sorted(xs, reverse=True), sorted(ys, reverse=not xs))
''']),
    # split() <-> split(' '); other separators and methods without a mirror stay
    ("method", '''
def f(s):
    return s.strip().lower().split() + s.split(' ') + s.split(',') + [s.endswith('x')]
''', ['''
def f(s):
    return s.strip().upper().split() + s.split(' ') + s.split(',') + [s.endswith('x')]
''', '''
def f(s):
    return s.strip().lower().split(' ') + s.split(' ') + s.split(',') + [s.endswith('x')]
''', '''
def f(s):
    return s.strip().lower().split() + s.split() + s.split(',') + [s.endswith('x')]
''', '''
def f(s):
    return s.strip().lower().split() + s.split(' ') + s.split(',') + [s.startswith('x')]
''']),
    ("slice_bound", '''
def f(xs):
    return xs[1:-1] + xs[::2] + [xs[0]]
''', ['''
def f(xs):
    return xs[:-1] + xs[::2] + [xs[0]]
''', '''
def f(xs):
    return xs[1:] + xs[::2] + [xs[0]]
''', '''
def f(xs):
    return xs[1:-1] + xs[:] + [xs[0]]
''']),
    # a call, an augmented assignment, a re-assignment; never a first binding nor a return
    ("drop_statement", '''
def f(xs):
    out = []
    total = 0
    for x in xs:
        out.append(x)
        total += x
    total = total * 2
    return (out, total)
''', ['''
def f(xs):
    out = []
    total = 0
    for x in xs:
        total += x
    total = total * 2
    return (out, total)
''', '''
def f(xs):
    out = []
    total = 0
    for x in xs:
        out.append(x)
    total = total * 2
    return (out, total)
''', '''
def f(xs):
    out = []
    total = 0
    for x in xs:
        out.append(x)
        total += x
    return (out, total)
''']),
    ("loop_control", '''
def f(xs):
    for x in xs:
        if x < 0:
            continue
        if x > 9:
            break
    return x
''', ['''
def f(xs):
    for x in xs:
        if x < 0:
            break
        if x > 9:
            break
    return x
''', '''
def f(xs):
    for x in xs:
        if x < 0:
            continue
        if x > 9:
            continue
    return x
''']),
    ("unary", '''
def f(xs, done):
    flag = not done
    return (xs[-1], -xs[0], ~xs[1], flag)
''', ['''
def f(xs, done):
    flag = done
    return (xs[-1], -xs[0], ~xs[1], flag)
''', '''
def f(xs, done):
    flag = not done
    return (xs[1], -xs[0], ~xs[1], flag)
''', '''
def f(xs, done):
    flag = not done
    return (xs[-1], xs[0], ~xs[1], flag)
''']),
])
def test_each_kind_makes_its_edit(kind, source, expected):
    assert _of_kind(kind, source) == {_src(e) for e in expected}


def test_kinds_leave_what_they_should_not_touch():
    # no comprehension variable outside its comprehension, no name read before it is bound
    assert _of_kind("wrong_name", "def f(xs):\n    ys = [y * 2 for y in xs]\n    return ys") == {
        _src("def f(xs):\n    ys = [y * 2 for y in xs]\n    return xs")}
    assert _of_kind("wrong_name", "def f(a):\n    b = a\n    return b") == {
        _src("def f(a):\n    b = a\n    return a")}
    # a first binding or a lone statement is never dropped
    assert _of_kind("drop_statement", "def f(x):\n    y = x + 1\n    return y") == set()
    assert _of_kind("drop_statement", "def f(xs):\n    for x in xs:\n        print(x)\n    return 0") == set()


def _shipped_sources():
    for path in PROBLEMS:
        for line in path.read_text().splitlines():
            try:
                p = json.loads(line)
                yield p["task_id"], normalise(p["prompt"] + p["canonical_solution"])
            except (ValueError, KeyError, SyntaxError):
                continue  # the deliberately broken sample lines


def test_every_site_applies_and_every_mutant_of_every_shipped_problem_parses():
    seen_kinds = set()
    sources = list(_shipped_sources())
    assert len(sources) >= 80
    for task_id, source in sources:
        tree = ast.parse(source)
        for kind, index, variant in _sites(tree):
            ast.parse(ast.unparse(_apply(tree, index, variant, kind)))
        for kind, code in mutants(source, limit=100, seed=42):
            seen_kinds.add(kind)
            ast.parse(code)
            assert ast.get_docstring(ast.parse(code).body[0]) == ast.get_docstring(tree.body[0]), task_id
    assert seen_kinds == KINDS
