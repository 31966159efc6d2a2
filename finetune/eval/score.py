"""Judging a model's parsed tool calls against BFCL-style possible answers, as BFCL's AST checker does.

The Berkeley Function Calling Leaderboard (BFCL) scores a single-turn tool call by its structure, not by
running it: the right function, every required argument, no argument outside the possible answer, and
each value among the allowed ones. Scoring our own models with the same rules makes our numbers
comparable with the leaderboard's, and lets one scorer serve our own tool-call tasks too (they come
with an OpenAI tool list, so types are read from JSON Schema instead of BFCL's own type names).

The rules, as BFCL applies them to Python:

* the number of calls equals the number expected; parallel calls may come in any order;
* an expected ``[]`` means no call was due (irrelevance): correct only when the model made none;
* required arguments (the schema's ``required``) must be present, an argument the possible answer
  does not list is unexpected, and one listed without ``""`` among its allowed values must be given;
* types: an int is accepted where the schema says ``number`` (not a float for ``integer``, nor a bool
  for either); a value of the allowed values' own type is also accepted and then compared literally
  (BFCL's "variable" case, e.g. ``None`` or a string where the schema says integer);
* strings compare after BFCL's normalisation (lower case, ``' ,./-_*^'`` removed, ``'`` as ``"``), also
  as top-level list items and as dict values; lists must equal an allowed list; dicts are compared key
  by key with their own allowed values; a list of dicts dict by dict in order; no ``type`` means any.

One deliberate difference: parallel calls are paired one to one by search, where BFCL pairs them greedily
in the expected order and so rejects a right answer in some orders when an expected call allows several
values (BFCL's parallel_178).

Example::

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    score_calls([{"name": "get_weather", "arguments": {"city": "new york"}}],
                [{"get_weather": {"city": ["New York", "NYC"]}}], tools)   # (True, "ok")
"""

from __future__ import annotations

import json
import re

# BFCL's normalisation drops exactly these characters before comparing strings.
_IGNORED = re.compile(r"[ ,./\-_*^]")
_PYTHON = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list, "object": dict}


def score_calls(calls: list[dict], expected: list[dict], tools: list[dict]) -> tuple[bool, str]:
    """Whether `calls` ([{"name", "arguments"}], [] for a plain-text answer) are a correct answer given the
    possible answer `expected` (BFCL form, [{function_name: {arg: [allowed values]}}], [] when no call was
    due) and the offered `tools` (OpenAI form or bare {"name", "parameters"}; their JSON Schema gives the
    types and required arguments). Returns (correct, reason): "ok", or a stable code, a colon and a detail:
    wrong_function, missing_argument, unexpected_argument, wrong_value, wrong_type, wrong_count,
    call_not_due, no_call, bad_arguments."""
    schemas = _schemas(tools)
    if not expected:
        return (False, f"call_not_due: called {', '.join(_name(c) for c in calls)}") if calls else (True, "ok")
    names = [next(iter(e)) for e in expected]
    if not calls:
        return False, f"no_call: expected {', '.join(names)}"
    if len(calls) != len(expected):
        return False, f"wrong_count: {len(calls)} call(s), expected {len(expected)}"
    # verdict[i][j]: reason call j fails expected call i, or None when it fits.
    verdict = [[_check_call(call, exp, schemas) for call in calls] for exp in expected]
    if _pairable(verdict):
        return True, "ok"
    called = [_name(c) for c in calls]
    if sorted(called) != sorted(names):
        if len(names) == 1:
            return False, f"wrong_function: called {called[0]}, expected {names[0]}"
        return False, f"wrong_function: called {sorted(called)}, expected {sorted(names)}"
    # Same functions but some expected call has no fitting partner: report it against a same-named call.
    for i, row in enumerate(verdict):
        if all(reason is not None for reason in row):
            j = called.index(names[i])
            suffix = f" (expected call {i + 1})" if len(expected) > 1 else ""
            return False, row[j] + suffix
    return False, "wrong_value: no one-to-one pairing of the calls with the expected ones"


def normalise(text: str) -> str:
    """BFCL's string normalisation: case folded, spaces and ``,./-_*^`` removed, single quotes as double, so
    "April 1, 2024" equals "april 1 2024"."""
    return _IGNORED.sub("", text).lower().replace("'", '"')


def _name(call: dict) -> str:
    return str(call.get("name", ""))


def _schemas(tools: list[dict]) -> dict[str, dict]:
    """Function name -> parameters schema, from OpenAI-form or bare tools."""
    out = {}
    for tool in tools or []:
        spec = tool.get("function", tool) if tool.get("type") == "function" else tool
        if "name" in spec:
            out[spec["name"]] = spec.get("parameters") or {}
    return out


def _pairable(verdict: list[list[str | None]]) -> bool:
    """Whether each expected call i can have its own call j that fits it (augmenting paths; BFCL pairs
    greedily in expected order, which can miss a pairing that exists)."""
    owner: dict[int, int] = {}  # call j -> expected i

    def place(i: int, seen: set[int]) -> bool:
        for j, reason in enumerate(verdict[i]):
            if reason is None and j not in seen:
                seen.add(j)
                if j not in owner or place(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return all(place(i, set()) for i in range(len(verdict)))


def _check_call(call: dict, expected: dict, schemas: dict[str, dict]) -> str | None:
    """Why one call does not fit one expected call ({name: {arg: allowed}}), or None when it does."""
    (want, allowed), = expected.items()
    if _name(call) != want:
        return f"wrong_function: called {_name(call)}, expected {want}"
    args = call.get("arguments") or {}
    if isinstance(args, str):  # raw OpenAI arguments: a JSON object in a string
        try:
            args = json.loads(args)
        except ValueError:
            return f"bad_arguments: not JSON: {args[:80]!r}"
    if not isinstance(args, dict):
        return f"bad_arguments: {type(args).__name__}, expected an object"
    schema = schemas.get(want)
    props = (schema or {}).get("properties") or {}
    # Without the tool's schema, an argument is required when its allowed values do not include "".
    required = schema.get("required", []) if schema is not None else [k for k, v in allowed.items() if "" not in v]
    for param in required:
        if param not in args:
            return f"missing_argument: {param}"
    for param, value in args.items():
        if param not in allowed or (schema is not None and param not in props):
            return f"unexpected_argument: {param}"
        reason = _check_value(param, value, _as_list(allowed[param]), props.get(param) or {})
        if reason:
            return reason
    for param, values in allowed.items():
        if param not in args and "" not in _as_list(values):
            return f"missing_argument: {param}"
    return None


def _as_list(values) -> list:
    return values if isinstance(values, list) else [values]


def _type_of(schema: dict, value) -> str | None:
    """The JSON Schema type that applies to `value` (None: any); a list of types picks the fitting one."""
    kind = schema.get("type")
    if isinstance(kind, list):
        fits = [k for k in kind if k in _PYTHON and _is_a(value, k)]
        kind = fits[0] if fits else next((k for k in kind if k != "null"), None)
    return kind if kind in _PYTHON else None


def _is_a(value, kind: str) -> bool:
    # type() and not isinstance(): bool is not an integer here, as in BFCL.
    return type(value) is _PYTHON[kind] or (kind == "number" and type(value) is int)


def _first_type(allowed: list):
    """Type of the first allowed value that is not the "may be left out" marker (BFCL's reference type)."""
    return next((type(v) for v in allowed if v != ""), None)


def _check_value(param: str, value, allowed: list, schema: dict) -> str | None:
    """Why `value` is not among `allowed` under the parameter's `schema`, or None."""
    kind = _type_of(schema, value)
    if kind is None:
        # Any type: strings normalised, other values equal and of the same type.
        if any(_same_any(value, a) for a in allowed):
            return None
        return f"wrong_value: {param}={value!r} not in {allowed!r}"
    if kind == "number" and type(value) is int:
        value = float(value)
    if type(value) is tuple and schema.get("x-bfcl-type") == "tuple":  # a Python-parsed call; BFCL lists it
        value = list(value)
    python = _PYTHON[kind]
    reference = _first_type(allowed)
    if type(value) is python:
        if kind == "array" and not _items_typed(value, allowed, schema.get("items") or {}):
            return f"wrong_type: {param}={value!r} has items that are not {(schema.get('items') or {}).get('type')}"
    elif type(value) is not reference:
        return f"wrong_type: {param}={value!r} is {type(value).__name__}, expected {kind}"
    if reference is not None and reference is not python:
        # The possible answer holds another kind of value (None, a variable name...): compare literally.
        ok = value in allowed
    elif kind == "object":
        ok = any(_dict_fits(value, a) for a in allowed if isinstance(a, dict))
    elif kind == "array" and _type_of(schema.get("items") or {}, None) == "object":
        ok = any(_dicts_fit(value, a) for a in allowed)
    elif kind == "string":
        ok = normalise(value) in [normalise(a) for a in allowed if isinstance(a, str)]
    elif kind == "array":
        ok = _norm_items(value) in [_norm_items(a) for a in allowed if isinstance(a, list) or a == ""]
    else:
        ok = value in allowed
    return None if ok else f"wrong_value: {param}={value!r} not in {allowed!r}"


def _same_any(value, allowed) -> bool:
    if isinstance(value, str) and isinstance(allowed, str):
        return normalise(value) == normalise(allowed)
    return type(value) is type(allowed) and value == allowed


def _items_typed(value: list, allowed: list, items: dict) -> bool:
    """BFCL's one-level item type check: every item is of the items type, or of the type of the first
    value of an allowed list; passes outright when an allowed value is not a list (e.g. "")."""
    kind = _type_of(items, None)
    if kind is None:
        return True
    for option in allowed:
        if not isinstance(option, list):
            return True
        reference = _first_type(option)
        if all(type(v) is _PYTHON[kind] or type(v) is reference for v in value):
            return True
    return False


def _norm_items(items) -> list:
    """A list with its top-level strings normalised ("" = an empty list, as the optional marker)."""
    return [normalise(v) if isinstance(v, str) else v for v in (items or [])]


def _norm_scalar(value):
    return normalise(value) if isinstance(value, str) else value


def _dict_fits(value: dict, allowed: dict) -> bool:
    """A dict against one allowed dict {key: [allowed values]}: no unknown key, every given value allowed
    (strings normalised), every key without "" among its values given."""
    if not isinstance(value, dict):
        return False
    for key, item in value.items():
        if key not in allowed or _norm_scalar(item) not in [_norm_scalar(a) for a in _as_list(allowed[key])]:
            return False
    return all(key in value or "" in _as_list(values) for key, values in allowed.items())


def _dicts_fit(value: list, allowed) -> bool:
    """A list of dicts against one allowed list of allowed dicts, position by position."""
    options = allowed if isinstance(allowed, list) else [] if allowed == "" else None
    if options is None or len(value) != len(options):
        return False
    return all(isinstance(a, dict) and _dict_fits(v, a) for v, a in zip(value, options, strict=True))
