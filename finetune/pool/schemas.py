"""JSON Schemas that clients send (tool ``parameters``, ``response_format``), made safe to use.

A schema in a request is attacker-controlled code for the gateway: jsonschema matches ``pattern``
with Python's backtracking ``re`` (``^(.*)*x$`` against 27 characters: 22 s, doubling per
character), resolves ``$ref`` by fetching URLs, and recurses forever on ``{"$ref": "#"}``. So:

* :func:`schema_problems` says, before any member is called, every reason a schema cannot be used:
  not valid against the Draft 2020-12 metaschema, a ``$ref`` that does not resolve inside the
  schema itself (nothing is ever fetched), a ``$ref`` loop that never moves into the value, a
  pattern RE2 cannot compile, and sizes beyond what the checks can afford (:data:`MAX_SIZE`).
* :func:`validator` checks values with jsonschema's own keyword functions, except that patterns
  are matched by RE2 (linear in the text; ECMA-262 ``\\uXXXX`` escapes translated), nothing is
  fetched and ``format`` is not asserted. Inside :func:`time_limit`, validation stops with
  ``TimeoutError`` once the limit is spent (a schema of 20 nested ``anyOf`` is 2^20 checks).

Example::

    >>> schema = {"type": "string", "not": {"pattern": "^(.*)*x$"}}
    >>> schema_problems(schema, "response_format.json_schema.schema")
    []
    >>> with time_limit(1.0):
    ...     [e.message for e in validator(schema).iter_errors("a" * 40 + "x")]
    ["'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaax' should not be valid under {'pattern': '^(.*)*x$'}"]
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urljoin

import jsonschema
import re2
import referencing.exceptions
from jsonschema import Draft202012Validator, ValidationError
from jsonschema_specifications import REGISTRY as METASCHEMAS
from referencing.jsonschema import DRAFT202012

# What one request's schemas may cost to check, in units of ~10-20 us of one core: a JSON value is one
# (checking it against the metaschema, 6-20 us), a pattern 200 (compiling one, up to 2 ms) plus two per
# character (25 us a character for alternations of \p{L}). 20,000 units measured 0.2-0.45 s on 2 shared
# cores; OpenAI's own limit on a structured-output schema, 5,000 properties, is ~10,000 values.
MAX_SIZE = 20_000
PATTERN_COST = 200
# Nesting, in JSON levels: jsonschema recurses ~6 frames per level (RecursionError past 140 levels
# of "items"); OpenAI allows 10 levels of objects, about 20 JSON levels.
MAX_DEPTH = 64
# RE2 is linear in the text, times the size of the pattern's program: past ~5,500 instructions its
# DFA runs out of memory and the NFA takes over (16,000 characters: 50 ms at 4,505, 550 ms at 6,305).
MAX_PROGRAM = 5_000
MAX_REPORTED = 10  # metaschema errors listed per schema; the rest are counted
# Keywords whose values are schemas (as referencing's DRAFT202012 walks them), and those applied to
# the same value rather than a part of it: a loop through these alone never ends.
_ONE = {"additionalProperties", "contains", "contentSchema", "else", "if", "items", "not", "propertyNames", "then",
        "unevaluatedItems", "unevaluatedProperties"}
_LIST = {"allOf", "anyOf", "oneOf", "prefixItems"}
_MAP = {"$defs", "definitions", "dependentSchemas", "patternProperties", "properties"}
_IN_PLACE = {"allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas"}
_ECMA_ESCAPE = re.compile(r"\\(?:u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})|u([0-9a-f]{4})|u\{([0-9a-f]{1,6})\}|.)",
                          re.IGNORECASE | re.DOTALL)


def schema_size(schema: Any) -> int:
    """What checking ``schema`` costs, in the units of :data:`MAX_SIZE`: its JSON values, plus
    ``PATTERN_COST`` and the length of each ``pattern`` and ``patternProperties`` key. A request's
    schemas together must stay within ``MAX_SIZE``. Example: ``schema_size({"type": "string",
    "pattern": "^a+$"})`` is 3 values + 200 + 2 x 4 characters = 211."""
    total, stack = 0, [schema]
    while stack:
        value = stack.pop()
        total += 1
        if isinstance(value, dict):
            if isinstance(value.get("pattern"), str):
                total += PATTERN_COST + 2 * len(value["pattern"])
            if isinstance(value.get("patternProperties"), dict):
                total += sum(PATTERN_COST + 2 * len(p) for p in value["patternProperties"])
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return total


def schema_problems(schema: Any, where: str) -> list[str]:
    """Every reason ``schema`` (from a request, at field path ``where``) cannot be used, each as
    ``where.sub.path: message``; [] when it can. Results are cached by the schema's JSON text, as
    agents send the same tools with every turn. Example: ``schema_problems({"type": "object",
    "required": 5}, "tools[0].function.parameters")`` is
    ``["tools[0].function.parameters.required: 5 is not of type 'array'"]``."""
    return [f"{where}{path}: {message}" for path, message in _problems(json.dumps(schema))]


@functools.lru_cache(maxsize=256)
def _problems(text: str) -> tuple[tuple[str, str], ...]:
    schema = json.loads(text)
    size, depth = schema_size(schema), _depth(schema)
    if size > MAX_SIZE:
        return (("", f"too large to check ({size} units of JSON values and patterns; at most {MAX_SIZE})"),)
    if depth > MAX_DEPTH:
        return (("", f"nested {depth} levels deep; at most {MAX_DEPTH}"),)
    errors = list(_metaschema().iter_errors(schema))
    if errors:
        # sorted: jsonschema finds additionalProperties' errors in a set's order, which changes from run to run
        out = sorted({(_path(e.absolute_path), e.message) for e in map(_most_specific, errors)})
        if len(out) > MAX_REPORTED:
            out[MAX_REPORTED:] = [("", f"{len(out) - MAX_REPORTED} more errors against the JSON Schema 2020-12 "
                                       "metaschema")]
        return tuple(out)
    return tuple(_walk(schema))


def _most_specific(error: ValidationError) -> ValidationError:
    """Of an anyOf's alternatives, the one that reaches deepest: ``type[1]: 'strnig' is not one of
    [...]`` says more than ``type: [...] is not valid under any of the given schemas``."""
    while error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return error


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _path(parts) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _walk(root: Any) -> Iterator[tuple[str, str]]:
    """Patterns, references and loops, for a schema the metaschema accepts."""
    paths: dict[int, str] = {}  # id of each subschema object -> its path
    in_place: dict[int, list[int]] = {}  # -> the subschemas applied to the same value
    refs, first, anchored = [], {}, False
    stack = [(root, "", root.get("$id", "") if isinstance(root, dict) else "")]
    while stack:
        node, path, base = stack.pop()
        if not isinstance(node, dict):
            continue  # true or false
        if "$id" in node and node is not root:  # an embedded resource: references inside are relative to it
            base, anchored = urljoin(base, node["$id"]), True
        anchored = anchored or "$anchor" in node or "$dynamicAnchor" in node
        paths[id(node)] = path
        patterns = [(f"{path}.pattern", node["pattern"])] if "pattern" in node else []
        patterns += [(f"{path}.patternProperties.{p}", p) for p in node.get("patternProperties", ())]
        for where, pattern in patterns:
            problem = pattern_problem(pattern)
            if problem:
                yield where, problem
        for keyword in ("patternProperties", "unevaluatedProperties"):
            if keyword in node:
                first.setdefault(keyword, f"{path}.{keyword}")
        refs += [(f"{path}.{k}", node[k], base, id(node)) for k in ("$ref", "$dynamicRef") if k in node]
        edges, children = [], []
        for key, value in node.items():
            if key in _ONE:
                these = [(value, f"{path}.{key}")]
            elif key in _LIST:
                these = [(v, f"{path}.{key}[{i}]") for i, v in enumerate(value)]
            elif key in _MAP:
                these = [(v, f"{path}.{key}.{name}") for name, v in value.items()]
            else:
                continue
            if key in _IN_PLACE:
                edges += [id(v) for v, _ in these if isinstance(v, dict)]
            children += these
        in_place[id(node)] = edges
        stack += [(v, p, base) for v, p in reversed(children)]  # popped in the order the client wrote them
    if len(first) == 2:
        # jsonschema finds the properties that patternProperties evaluated with Python's re: a backtracking
        # engine, the very thing RE2 is here to keep out.
        yield first["unevaluatedProperties"], "not supported together with patternProperties (jsonschema would " \
                                              "match those patterns with a backtracking engine); use additionalProperties"
    registry = _registry(root, crawl=anchored)
    for where, ref, base, source in refs:
        try:
            target = registry.resolver(base).lookup(ref).contents
        except (referencing.exceptions.Unresolvable, ValueError):  # ValueError: not a URI ('http://[')
            yield where, f"{ref!r} does not resolve inside this schema (remote references are never fetched; " \
                         "put the definition under $defs and refer to it as '#/$defs/NAME')"
            continue
        if isinstance(target, dict):
            if id(target) not in paths:
                yield where, f"{ref!r} points at a part of the schema that is not a subschema (put the " \
                             "definition under $defs)"
                continue
            in_place[source].append(id(target))
    problem = _in_place_problem(in_place)
    if problem:
        yield paths[problem[0]], problem[1]


def _in_place_problem(edges: dict[int, list[int]]) -> tuple[int, str] | None:
    """A node on a loop of ``edges`` or in a chain too long to validate (jsonschema: RecursionError
    at 500 ``$ref`` hops), with why; iterative, as chains may be longer than Python's stack."""
    longest: dict[int, int] = {}  # node -> the longest chain from it, once all of it is seen
    for start in edges:
        if start in longest:
            continue
        on_path, stack = {start}, [(start, iter(edges[start]))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                on_path.discard(node)
                longest[node] = 1 + max((longest[c] for c in edges.get(node, ())), default=0)
                if longest[node] > MAX_DEPTH:
                    return node, f"a chain of over {MAX_DEPTH} subschemas ($ref, allOf, anyOf, oneOf, not, if) applied to " \
                                 "the same value"
            elif child in on_path:
                return child, "a $ref loop that never moves into the value: validation would recurse forever"
            elif child not in longest:
                on_path.add(child)
                stack.append((child, iter(edges.get(child, ()))))
    return None


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` (ECMA-262, as JSON Schema writes it) cannot be matched in linear time, or
    None. Example: ``pattern_problem("(a)\\\\1")`` says RE2 has no backreferences."""
    options = _options(max_mem=128 << 10)  # enough for MAX_PROGRAM instructions; fails a larger one in < 1 ms
    try:
        program = re2.compile(_re2_syntax(pattern), options).programsize
    except re2.error as exc:
        why = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        if "too large" in why:
            return f"{pattern!r} is too large to match in linear time (over {MAX_PROGRAM} RE2 instructions)"
        return f"{pattern!r} cannot be matched in linear time by RE2 ({why}); backreferences and lookaround are " \
               "not supported, and counted repetition stops at {1000}"
    if program > MAX_PROGRAM:
        return f"{pattern!r} is too large to match in linear time ({program} RE2 instructions; at most " \
               f"{MAX_PROGRAM}): check lengths with minLength/maxLength"
    return None


def _options(max_mem: int = 8 << 20) -> re2.Options:  # RE2's default max_mem
    options = re2.Options()
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    options.never_capture = True  # only whether it matches counts
    options.max_mem = max_mem
    return options


def _re2_syntax(pattern: str) -> str:
    """ECMA-262's ``\\uXXXX`` (a surrogate pair as one character) and ``\\u{X}`` as RE2's ``\\x{X}``."""
    def escape(m: re.Match) -> str:
        if m[1]:
            return "\\x{%x}" % (0x10000 + (int(m[1], 16) - 0xD800 << 10) + int(m[2], 16) - 0xDC00)
        return "\\x{%s}" % (m[3] or m[4]) if m[3] or m[4] else m[0]
    return _ECMA_ESCAPE.sub(escape, pattern)


@functools.lru_cache(maxsize=64)  # each RE2 may use up to 8 MiB (its default max_mem): 64 bound the cache to 512 MiB
def _compiled(pattern: str):
    return re2.compile(_re2_syntax(pattern), _options())


def _search(pattern: str, text: str) -> bool:
    # Bytes, so that a lone surrogate (json.loads makes one of "\ud800") is data, not an encoding error.
    return _compiled(pattern).search(text.encode("utf-8", "surrogatepass")) is not None


# jsonschema's pattern, patternProperties and additionalProperties (jsonschema/_keywords.py, 4.26), with
# re.search replaced by RE2: the only changes.
def _pattern(validator, patrn, instance, schema):
    if validator.is_type(instance, "string") and not _search(patrn, instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _pattern_properties(validator, patternProperties, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patternProperties.items():
        for k, v in instance.items():
            if _search(pattern, k):
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def _additional_properties(validator, aP, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    properties, patterns = schema.get("properties", {}), schema.get("patternProperties", {})
    extras = {p for p in instance if p not in properties and not any(_search(r, p) for r in patterns)}
    if validator.is_type(aP, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], aP, path=extra)
    elif not aP and extras:
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            joined = ", ".join(repr(extra) for extra in sorted(extras, key=str))
            yield ValidationError(f"Additional properties are not allowed ({joined} {verb} unexpected)")


_DEADLINE: ContextVar[float] = ContextVar("schema_deadline", default=float("inf"))


def _timed(keyword):
    """``keyword`` that first checks the time limit: every keyword of every subschema passes here."""
    def check(validator, value, instance, schema):
        if time.monotonic() > _DEADLINE.get():
            raise TimeoutError("checking the value against its schema ran over the time limit")
        return keyword(validator, value, instance, schema)
    return check


_Validator = jsonschema.validators.extend(Draft202012Validator, {
    name: _timed(keyword) for name, keyword in {**Draft202012Validator.VALIDATORS, "pattern": _pattern,
                                                "patternProperties": _pattern_properties,
                                                "additionalProperties": _additional_properties}.items()})


def validator(schema: Any) -> jsonschema.protocols.Validator:
    """A Draft 2020-12 validator for a schema that :func:`schema_problems` accepted: patterns
    matched by RE2 (search semantics, compiled once and cached), no ``$ref`` fetched, no ``format``
    asserted. Example: ``validator({"pattern": "^a+$"}).is_valid("aaa")`` is True."""
    return _Validator(schema, registry=_registry(schema))


def _registry(schema: Any, crawl: bool = True) -> referencing.Registry:
    """The schema, and nothing that can be fetched. Crawled (its anchors and embedded ``$id`` indexed)
    up front: referencing would otherwise crawl it again on each such lookup (3,000: 2 minutes)."""
    resource = DRAFT202012.create_resource(schema)
    registry = referencing.Registry().with_resource(resource.id() or "", resource)
    return registry.crawl() if crawl else registry


@contextmanager
def time_limit(seconds: float):
    """Validations inside stop with ``TimeoutError`` after ``seconds`` (checked before each
    keyword; one RE2 search is not interrupted but is bounded by :data:`MAX_PROGRAM`). The
    thread that validates is freed, which a timeout around it would not do. Example:
    ``with time_limit(1.0): errors = list(validator(schema).iter_errors(value))``."""
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


@functools.cache
def _metaschema() -> jsonschema.protocols.Validator:
    """Draft 2020-12's metaschema as one document, 4-7x faster to check against (this runs on the
    gateway's event loop): its vocabularies' properties merged into one object, ``$dynamicRef:
    #meta`` made ``$ref: #`` (what it resolves to when the metaschema is the root), annotations
    dropped. No ``format`` is asserted: RE2, not Python's re, says which patterns compile."""
    root = Draft202012Validator.META_SCHEMA
    return Draft202012Validator(_flatten(root, METASCHEMAS.resolver(root["$id"])), registry=referencing.Registry())


_NAMED = {"properties", "patternProperties", "dependentSchemas"}
_ANNOTATIONS = {"$id", "$schema", "$vocabulary", "$dynamicAnchor", "$comment", "$defs", "title", "deprecated", "default"}


def _flatten(node: Any, resolver: referencing.Resolver) -> Any:
    if isinstance(node, list):
        return [_flatten(n, resolver) for n in node]
    if not isinstance(node, dict):
        return node
    out, parts = {}, []
    for key, value in node.items():
        if key == "$dynamicRef":
            out["$ref"] = "#"
        elif key == "$ref":
            target = resolver.lookup(value)
            parts.append(_flatten(target.contents, target.resolver))
        elif key == "allOf":
            parts += _flatten(value, resolver)
        elif key in _NAMED:
            out[key] = {name: _flatten(s, resolver) for name, s in value.items()}
        elif key not in _ANNOTATIONS:
            out[key] = _flatten(value, resolver)
    rest = []
    for part in parts:
        # A vocabulary is {type, properties}: all of them together are one object with all their properties.
        if part.keys() <= {"type", "properties"} and out.get("type", part.get("type")) == part.get("type") \
                and not out.get("properties", {}).keys() & part.get("properties", {}).keys():
            out["properties"] = {**out.get("properties", {}), **part.get("properties", {})}
            out.update({k: v for k, v in part.items() if k == "type"})
        else:
            rest.append(part)
    if not out and len(rest) == 1:
        return rest[0]
    if rest:
        out["allOf"] = rest
    return out
