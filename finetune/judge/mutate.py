"""Plausible wrong solutions made from right ones: one small AST edit per mutant.

A judge learns little from negatives that are obviously broken; the negatives that teach are one
token away from correct. Each mutant applies exactly one edit to a passing solution:

* ``compare``: ``<`` <-> ``<=``, ``>`` <-> ``>=``, ``==`` <-> ``!=``, ``<`` <-> ``>``
* ``arith``: ``+`` <-> ``-``, ``*`` -> ``+``, ``//`` <-> ``/``, ``%`` -> ``//``
* ``bool``: ``and`` <-> ``or``
* ``off_by_one``: an integer literal n -> n + 1 and n - 1 (range bounds, indices, constants)
* ``drop_branch``: an ``if`` body (or its ``else``) removed
* ``wrong_return``: ``return x`` -> ``return not x`` / ``return None``

Mutants are only *candidates*: the sandbox decides. A mutant the tests still accept (an
equivalent mutant) is discarded, never labelled wrong. Both the original and the mutants are
rendered through ``ast.unparse``, so formatting never tells them apart.

Example::

    for op, code in mutants(source, limit=6, seed=0): ...
"""

from __future__ import annotations

import ast
import copy
import random

_COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
            ast.NotEq: ast.Eq}
_COMPARE_FLIP = {ast.Lt: ast.Gt, ast.Gt: ast.Lt}
_ARITH = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.FloorDiv: ast.Div, ast.Div: ast.FloorDiv,
          ast.Mod: ast.FloorDiv}
_BOOL = {ast.And: ast.Or, ast.Or: ast.And}


def _sites(tree: ast.AST) -> list[tuple[str, int, str]]:
    """Every (operator, node index, variant) this tree offers, in a stable order."""
    sites = []
    for i, node in enumerate(ast.walk(tree)):
        if isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) in _COMPARE:
                    sites.append(("compare", i, "swap"))
                if type(op) in _COMPARE_FLIP:
                    sites.append(("compare", i, "flip"))
        elif isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            sites.append(("arith", i, "swap"))
        elif isinstance(node, ast.AugAssign) and type(node.op) in _ARITH:
            sites.append(("arith", i, "swap"))
        elif isinstance(node, ast.BoolOp):
            sites.append(("bool", i, "swap"))
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            sites += [("off_by_one", i, "+1"), ("off_by_one", i, "-1")]
        elif isinstance(node, ast.If):
            sites.append(("drop_branch", i, "body"))
            if node.orelse:
                sites.append(("drop_branch", i, "else"))
        elif isinstance(node, ast.Return) and node.value is not None:
            sites += [("wrong_return", i, "not"), ("wrong_return", i, "none")]
    return sites


def _apply(tree: ast.AST, index: int, variant: str) -> ast.AST:
    tree = copy.deepcopy(tree)
    node = next(n for i, n in enumerate(ast.walk(tree)) if i == index)
    if isinstance(node, ast.Compare):
        table = _COMPARE if variant == "swap" else _COMPARE_FLIP
        k = next(k for k, op in enumerate(node.ops) if type(op) in table)
        node.ops[k] = table[type(node.ops[k])]()
    elif isinstance(node, (ast.BinOp, ast.AugAssign)):
        node.op = _ARITH[type(node.op)]()
    elif isinstance(node, ast.BoolOp):
        node.op = _BOOL[type(node.op)]()
    elif isinstance(node, ast.Constant):
        node.value += 1 if variant == "+1" else -1
    elif isinstance(node, ast.If):
        if variant == "body":
            node.body = [ast.Pass()]
        else:
            node.orelse = []
    elif isinstance(node, ast.Return):
        node.value = ast.UnaryOp(ast.Not(), node.value) if variant == "not" else ast.Constant(None)
    return ast.fix_missing_locations(tree)


def _without_docstrings(tree: ast.AST) -> set[int]:
    """ids of docstring nodes (never mutated: a docstring's numbers are not code)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.update(id(n) for n in ast.walk(first))
    return skip


def normalise(source: str) -> str:
    """The source as ``ast.unparse`` writes it (what mutants look like too)."""
    return ast.unparse(ast.parse(source))


def mutants(source: str, limit: int = 6, seed: int = 0) -> list[tuple[str, str]]:
    """Up to ``limit`` distinct (operator, mutated source) pairs, spread over operator kinds."""
    tree = ast.parse(source)
    skip = _without_docstrings(tree)
    nodes = list(ast.walk(tree))
    sites = [s for s in _sites(tree) if id(nodes[s[1]]) not in skip]
    rng = random.Random(seed)
    rng.shuffle(sites)
    by_kind: dict[str, list] = {}
    for site in sites:
        by_kind.setdefault(site[0], []).append(site)
    order = []
    while any(by_kind.values()):  # round-robin over kinds, so one kind cannot crowd out the rest
        for kind in sorted(by_kind):
            if by_kind[kind]:
                order.append(by_kind[kind].pop())
    original, seen, out = ast.unparse(tree), set(), []
    for kind, index, variant in order:
        code = ast.unparse(_apply(tree, index, variant))
        if code != original and code not in seen:
            seen.add(code)
            out.append((kind, code))
            if len(out) == limit:
                break
    return out
