"""Mutants: one edit each, distinct, spread over operator kinds, docstrings untouched."""

from __future__ import annotations

import ast

from finetune.judge.mutate import mutants, normalise

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


def test_mutants_are_single_distinct_edits():
    out = mutants(SOURCE, limit=50, seed=0)
    original = normalise(SOURCE)
    codes = [code for _, code in out]
    assert len(set(codes)) == len(codes) and original not in codes
    assert {kind for kind, _ in out} == {"compare", "arith", "bool", "off_by_one", "drop_branch", "wrong_return"}
    for _, code in out:
        ast.parse(code)
        assert '"""Sum of the last 3 items when k is 0; else of the first k items."""' in code
        changed = [a for a, b in zip(original.splitlines(), code.splitlines(), strict=False) if a != b]
        assert len(changed) <= 2  # one edit: a line changed (dropping a branch removes its lines too)


def test_limit_and_seed():
    assert len(mutants(SOURCE, limit=4, seed=1)) == 4
    assert mutants(SOURCE, limit=6, seed=3) == mutants(SOURCE, limit=6, seed=3)
    assert {k for k, _ in mutants(SOURCE, limit=6, seed=0)} >= {"compare", "arith", "bool", "off_by_one"}
