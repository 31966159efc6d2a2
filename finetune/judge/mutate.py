"""Plausible wrong solutions made from right ones: one small AST edit per mutant.

A judge learns little from negatives that are obviously broken; the negatives that teach are one
token away from correct. Each mutant applies exactly one edit to a passing solution:

* ``compare``: ``<`` <-> ``<=``, ``>`` <-> ``>=``, ``==`` <-> ``!=``, ``<`` <-> ``>``
* ``arith``: ``+`` <-> ``-``, ``*`` -> ``+``, ``//`` <-> ``/``, ``%`` -> ``//``
* ``bool``: ``and`` <-> ``or``
* ``off_by_one``: an integer literal n -> n + 1 and n - 1 (range bounds, indices, constants)
* ``drop_branch``: an ``if`` body (or its ``else``) removed
* ``wrong_return``: ``return x`` -> ``return not x`` / ``return None``
* ``negate_condition``: the test of an ``if`` / ``elif`` / ``while`` / conditional expression /
  comprehension filter negated (``c`` -> ``not c``, ``not c`` -> ``c``)
* ``wrong_name``: a read of a local variable (parameter or assigned name of the same function)
  replaced by the next local, in order of first binding, that is already bound there
  (``xs[i]`` -> ``xs[k]``)
* ``swap_call_args``: the first two positional arguments of a call swapped (``range(a, b)`` ->
  ``range(b, a)``; not for ``min`` / ``max``, where it changes nothing)
* ``min_max``: ``min`` <-> ``max``, ``any`` <-> ``all``; ``sorted(...)`` / ``.sort(...)`` with its
  order reversed (``reverse=True`` added, or an existing ``reverse`` negated)
* ``method``: a method swapped for its mirror (``lower`` <-> ``upper``, ``startswith`` <->
  ``endswith``, ``lstrip`` <-> ``rstrip``, ``find`` <-> ``rfind``, ``keys`` <-> ``values``, ...);
  ``split()`` <-> ``split(' ')``
* ``slice_bound``: one bound (or the step) of a slice dropped (``x[1:]`` -> ``x[:]``)
* ``drop_statement``: one plain statement (a call such as ``append``, an augmented assignment,
  an assignment to an item, a re-assignment of a name bound before) removed from a block of 2+
  statements
* ``loop_control``: ``break`` <-> ``continue``
* ``unary``: a unary minus or ``not`` removed (``x[-1]`` -> ``x[1]``, ``not done`` -> ``done``)

Kinds are taken round-robin, in an order shuffled by the seed, so one kind cannot crowd out the
rest and a small ``limit`` still sees every kind over many problems.

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
_MIN_MAX = {"min": "max", "max": "min", "any": "all", "all": "any"}
_METHOD = {"lower": "upper", "upper": "lower", "startswith": "endswith", "endswith": "startswith",
           "lstrip": "rstrip", "rstrip": "lstrip", "find": "rfind", "rfind": "find", "islower": "isupper",
           "isupper": "islower", "isdigit": "isalpha", "isalpha": "isdigit", "keys": "values", "values": "keys",
           "appendleft": "append", "popleft": "pop"}
_NO_SWAP = {"min", "max", "print", "isinstance"}  # swapping their arguments changes nothing / only crashes
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _bound_names(func: ast.AST) -> dict[str, tuple[int, int]]:
    """A function's parameters and the names it assigns -> where each is first bound, in that order
    (no comprehension variables: they do not exist outside their comprehension)."""
    args = func.args
    params = args.posonlyargs + args.args + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]
    names = {a.arg: (a.lineno, a.col_offset) for a in params}
    scoped = {id(n) for node in ast.walk(func) if isinstance(node, ast.comprehension) for n in ast.walk(node.target)}
    after = {}  # a name assigned is bound once the value (or the loop's iterable) is read
    for node in ast.walk(func):
        value = getattr(node, "iter" if isinstance(node, ast.For | ast.AsyncFor) else "value", None)
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.For | ast.AsyncFor) and value:
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                after.update({id(n): (value.end_lineno, value.end_col_offset) for n in ast.walk(target)})
    body = func.body if isinstance(func.body, list) else [func.body]
    stores = [(after.get(id(n), (n.lineno, n.col_offset)), n.id) for stmt in body for n in ast.walk(stmt)
              if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and id(n) not in scoped]
    for at, name in sorted(stores):
        names.setdefault(name, at)
    return dict(sorted(names.items(), key=lambda item: item[1]))


def _name_sites(tree: ast.AST, index: dict[int, int]) -> dict[int, str]:
    """node index -> replacement, for every read of a local variable: the next local (in order of
    first binding) among those already bound there, so the mutant reads a name that has a value.
    The innermost function wins."""
    out: dict[int, str] = {}
    for func in (n for n in ast.walk(tree) if isinstance(n, _FUNCTIONS)):
        names = _bound_names(func)
        for node in ast.walk(func):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in names:
                here = (node.lineno, node.col_offset)
                bound = [name for name, at in names.items() if at < here or name == node.id]
                if len(bound) >= 2:
                    out[index[id(node)]] = bound[(bound.index(node.id) + 1) % len(bound)]
                else:
                    out.pop(index[id(node)], None)
    return out


def _bindings(tree: ast.AST) -> dict[str, list[tuple[int, int]]]:
    """name -> positions where it is bound (parameters and assignments; ``x += 1`` needs ``x`` already)."""
    augmented = {id(n.target) for n in ast.walk(tree) if isinstance(n, ast.AugAssign)}
    out: dict[str, list[tuple[int, int]]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            out.setdefault(node.arg, []).append((node.lineno, node.col_offset))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and id(node) not in augmented:
            out.setdefault(node.id, []).append((node.lineno, node.col_offset))
    return out


def _droppable(stmt: ast.stmt, bindings: dict[str, list[tuple[int, int]]]) -> bool:
    """A call statement, an augmented assignment, or an assignment to an item or to names bound
    before it (a re-assignment): dropping one leaves the code running, just wrong."""
    if isinstance(stmt, ast.Expr):
        return isinstance(stmt.value, ast.Call)
    if isinstance(stmt, ast.AugAssign):
        return True
    if isinstance(stmt, ast.Assign):
        here = (stmt.lineno, stmt.col_offset)
        names = [n.id for t in stmt.targets for n in ast.walk(t) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
        return all(any(at < here for at in bindings.get(name, [])) for name in names)
    return False


def _sites(tree: ast.AST) -> list[tuple[str, int, str]]:
    """Every (operator, node index, variant) this tree offers, in a stable order."""
    nodes = list(ast.walk(tree))
    index = {id(n): i for i, n in enumerate(nodes)}
    names = _name_sites(tree, index)
    bindings = _bindings(tree)
    sites = []
    for i, node in enumerate(nodes):
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
        elif isinstance(node, ast.Return) and node.value is not None:
            sites += [("wrong_return", i, "not"), ("wrong_return", i, "none")]
        elif isinstance(node, ast.Break | ast.Continue):
            sites.append(("loop_control", i, "swap"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.Not):
            sites.append(("unary", i, "drop"))
        elif isinstance(node, ast.Slice):
            sites += [("slice_bound", i, part) for part in ("lower", "upper", "step") if getattr(node, part)]
        elif isinstance(node, ast.comprehension):
            sites += [("negate_condition", i, str(k)) for k in range(len(node.ifs))]
        elif isinstance(node, ast.Name) and i in names:
            sites.append(("wrong_name", i, names[i]))
        elif isinstance(node, ast.Call):
            sites += _call_sites(node, i)
        if isinstance(node, ast.If):
            sites.append(("drop_branch", i, "body"))
            if node.orelse:
                sites.append(("drop_branch", i, "else"))
        if isinstance(node, ast.If | ast.While | ast.IfExp):
            sites.append(("negate_condition", i, "test"))
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and len(block) >= 2:
                sites += [("drop_statement", index[id(s)], "drop") for s in block if _droppable(s, bindings)]
    return sites


def _call_sites(node: ast.Call, i: int) -> list[tuple[str, int, str]]:
    sites = []
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    positional = [a for a in node.args if not isinstance(a, ast.Starred)]
    if len(positional) == len(node.args) >= 2 and name not in _NO_SWAP \
            and ast.dump(node.args[0]) != ast.dump(node.args[1]):
        sites.append(("swap_call_args", i, "swap"))
    if isinstance(func, ast.Name) and name in _MIN_MAX:
        sites.append(("min_max", i, "swap"))
    if (isinstance(func, ast.Name) and name == "sorted" and node.args) or (
            isinstance(func, ast.Attribute) and name == "sort" and not node.args):
        sites.append(("min_max", i, "reverse"))
    if isinstance(func, ast.Attribute):
        if name in _METHOD:
            sites.append(("method", i, "swap"))
        elif name == "split" and not node.keywords and (
                not node.args or (len(node.args) == 1 and isinstance(node.args[0], ast.Constant)
                                  and node.args[0].value == " ")):
            sites.append(("method", i, "split"))
    return sites


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST | None) -> None:
    """Put ``new`` where ``old`` is in ``tree`` (``None``: remove ``old`` from its statement list)."""
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list) and any(v is old for v in value):
                k = next(k for k, v in enumerate(value) if v is old)
                if new is None:
                    del value[k]
                else:
                    value[k] = new
                return
    raise ValueError("node not in tree")


def _negate(test: ast.expr) -> ast.expr:
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return test.operand
    return ast.UnaryOp(ast.Not(), test)


def _apply(tree: ast.AST, index: int, variant: str, kind: str = "") -> ast.AST:
    tree = copy.deepcopy(tree)
    node = next(n for i, n in enumerate(ast.walk(tree)) if i == index)
    if kind == "negate_condition":
        if isinstance(node, ast.comprehension):
            node.ifs[int(variant)] = _negate(node.ifs[int(variant)])
        else:
            node.test = _negate(node.test)
    elif kind == "drop_statement":
        _replace(tree, node, None)
    elif isinstance(node, ast.Compare):
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
    elif isinstance(node, ast.Break | ast.Continue):
        _replace(tree, node, ast.Continue() if isinstance(node, ast.Break) else ast.Break())
    elif isinstance(node, ast.UnaryOp):
        _replace(tree, node, node.operand)
    elif isinstance(node, ast.Slice):
        setattr(node, variant, None)
    elif isinstance(node, ast.Name):
        node.id = variant
    elif isinstance(node, ast.Call):
        _apply_call(node, kind, variant)
    return ast.fix_missing_locations(tree)


def _apply_call(node: ast.Call, kind: str, variant: str) -> None:
    if kind == "swap_call_args":
        node.args[0], node.args[1] = node.args[1], node.args[0]
    elif kind == "min_max" and variant == "swap":
        node.func.id = _MIN_MAX[node.func.id]
    elif kind == "min_max":
        reverse = next((k for k in node.keywords if k.arg == "reverse"), None)
        if reverse is None:
            node.keywords.append(ast.keyword("reverse", ast.Constant(True)))
        elif isinstance(reverse.value, ast.Constant):
            reverse.value = ast.Constant(not reverse.value.value)
        else:
            reverse.value = _negate(reverse.value)
    elif variant == "split":
        node.args = [] if node.args else [ast.Constant(" ")]
    else:
        node.func.attr = _METHOD[node.func.attr]


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
    kinds = sorted(by_kind)
    rng.shuffle(kinds)
    order = []
    while any(by_kind.values()):  # round-robin over kinds, so one kind cannot crowd out the rest
        for kind in kinds:
            if by_kind[kind]:
                order.append(by_kind[kind].pop())
    original, seen, out = ast.unparse(tree), set(), []
    for kind, index, variant in order:
        code = ast.unparse(_apply(tree, index, variant, kind))
        if code != original and code not in seen:
            seen.add(code)
            out.append((kind, code))
            if len(out) == limit:
                break
    return out
