"""Tool-use preference pairs: a correct call from a real trace, and the same call made wrong.

Every assistant turn of a validated trace (any layout ``finetune data prepare`` reads) gives
pairs whose *chosen* side is what the trace did and whose *rejected* side is one corruption.

Invalid calls, which the gateway's schema check already drops (the judge never sees them in a
pool, but learns from them what a call is):

* ``wrong_function``: another declared tool called with the same arguments
* ``missing_required_argument``: a required argument dropped
* ``wrong_argument_type``: an argument given a value of another JSON type
* ``unknown_argument``: an argument the schema does not declare, added
* ``malformed_json``: the arguments' JSON broken (cut short, a trailing comma, single quotes or a
  missing colon)

Valid but wrong (``VALID_BUT_WRONG``): schema-valid answers that do the wrong thing, which is
what the judge must tell apart in a pool:

* ``nearest_function``: the declared tool closest in name and description to the right one,
  with the arguments carried over where they fit
* ``wrong_value``: one argument's value replaced by another member of its enum, a number off by
  one, the opposite boolean, or a string or number taken from elsewhere in the conversation
* ``swapped_arguments``: two arguments of one type given each other's values
* ``dropped_optional``: an optional argument the request asked for, left out
* ``call_instead_of_answer``: where the trace answered in plain text, a tool call
* ``answer_instead_of_call``: where the trace called a tool, a plain-text reply instead
* ``no_fitting_tool``: the same request with the called tools taken away, where a plain reply
  beats a call of the nearest tool left (BFCL's irrelevance case); with the kind above, the same
  replies are right or wrong only by whether an offered tool fits

A needless call (``call_instead_of_answer``, ``no_fitting_tool``) has its arguments filled from
what the user said, so it looks like a real attempt rather than a placeholder.

Which argument, which other tool, which value and which JSON defect is drawn from a generator
seeded by the trace and the turn, so that the judge learns what breaks a call rather than one
fixed token (the same trace always gives the same pairs). A corruption is kept only if the
toolkit's own call checker (the one ``data prepare`` applies) rejects it for the reason its label
names; a valid-but-wrong one only if the checker accepts it and it differs from what the trace
did. Calls are rendered as text (``<tool_call>{"name": ..., "arguments": ...}</tool_call>``) and
the tools go into the system message as one compact signature each (``read_file(path*: string,
start_line: integer) - Read a file.``, ``*`` = required), so a text-only judge with a short
context sees the whole contract next to the question.

Example::

    for pair in trace_pairs(validate_trace(to_canonical(record, "openai"))): ...
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re

from finetune import RecordError
from finetune.contracts.judging import judge_prompt, render_call, render_turn
from finetune.contracts.toolcalls import check_call, type_ok

_OTHER_TYPE = {"string": [12345, True, None, ["x"]], "integer": ["seven", "12", 3.5, [1]],
               "number": ["seven", "1.5", False, {}], "boolean": ["yes", "true", 1, "no"],
               "array": ["a,b", 3, {"item": "a"}], "object": ["x", [1, 2], 0], "null": [0, "none"]}
_PLACEHOLDER = {"string": "example", "integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {},
                "null": None}
_INVENTED = ["force", "dry_run", "overwrite", "retries", "user_id", "format", "async_mode", "callback_url",
             "priority", "debug", "encoding", "region"]
_INVENTED_VALUES = [True, "yes", 3, "json", None]
VALID_BUT_WRONG = ("nearest_function", "wrong_value", "swapped_arguments", "dropped_optional",
                   "call_instead_of_answer", "answer_instead_of_call", "no_fitting_tool")
_NO_CALL_REPLIES = ["I can't do that from here; you will have to do it yourself.",
                    "Sure, that is done.", "I don't have access to that, sorry.",
                    "Here is what I found: nothing needed changing.", "That should work as it is.",
                    "Let me know if you want me to look into it later."]
_WORD = re.compile(r"[a-z0-9]+")
# Strings and numbers a user names: quoted text, paths and identifiers, capitalised words inside a
# sentence (names of places, people, products), numbers.
_ENTITY = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?)(?!\w|\.\d)|\"([^\"]{1,60})\"|'([^']{1,60})'|([\w.-]*[./_][\w./-]+)|"
                     r"(?<=[a-z0-9,;:] )([A-Z][a-z]+(?: [A-Z][a-z]+)*)\b")


def _type_of(schema: dict) -> str | None:
    t = schema.get("type")
    return t[0] if isinstance(t, list) else t


def _corruptions(call: dict, tools: dict[str, dict], rng: random.Random):
    """(reason, corrupted call, raw arguments text or None) candidates for one correct call."""
    params = tools[call["name"]]["parameters"]
    props, args = params.get("properties") or {}, call["arguments"]
    others = sorted(n for n in tools if n != call["name"])
    if others:
        yield "wrong_function", {**call, "name": rng.choice(others)}, None
    required = [r for r in params.get("required", []) if r in args]
    if required:
        drop = rng.choice(required)
        yield "missing_required_argument", {**call, "arguments": {k: v for k, v in args.items() if k != drop}}, None
    typed = [k for k in args if k in props and _type_of(props[k]) in _OTHER_TYPE]
    if typed:
        k = rng.choice(typed)
        yield "wrong_argument_type", {**call, "arguments": {**args, k: rng.choice(_OTHER_TYPE[_type_of(props[k])])}}, None
    if props and params.get("additionalProperties") is not True:
        extra = rng.choice([n for n in _INVENTED if n not in props])
        yield "unknown_argument", {**call, "arguments": {**args, extra: rng.choice(_INVENTED_VALUES)}}, None
    text = json.dumps(args, ensure_ascii=False)
    if len(text) > 2:
        broken = rng.choice([text[:-1],                                   # cut short
                             text[:-1].rstrip() + ", }",                  # trailing comma
                             text.replace('"', "'"),                      # Python-style quotes
                             text.replace('": ', '" ', 1)])               # a missing colon
        yield "malformed_json", {**call, "arguments": broken}, broken


def _words(tool: dict) -> set[str]:
    return set(_WORD.findall(f"{tool['name']} {tool.get('description') or ''}".lower().replace("_", " ")))


def _nearest(name: str, tools: dict[str, dict]) -> str | None:
    """The other declared tool sharing the most name and description words with ``name``."""
    mine = _words(tools[name])
    scored = [(len(mine & _words(t)) / (len(mine | _words(t)) or 1), n) for n, t in tools.items() if n != name]
    return max(scored)[1] if scored else None


def _carry(args: dict, params: dict) -> dict:
    """Arguments for another tool: same-named ones kept, each required one filled from an argument
    of its type, or a placeholder."""
    props = params.get("properties") or {}
    out = {k: v for k, v in args.items() if k in props and type_ok(v, _type_of(props[k]))}
    for r in params.get("required", []):
        if r not in out:
            schema = props.get(r, {})
            t = _type_of(schema) or "string"
            same = [v for v in args.values() if type_ok(v, t)]
            out[r] = (schema.get("enum") or same or [_PLACEHOLDER.get(t, "example")])[0]
    return out


def _entities(text: str) -> list:
    found = []
    for m in _ENTITY.finditer(text):
        value = next(g for g in m.groups() if g is not None)
        if m.group(1) is not None:
            value = float(value) if "." in value else int(value)
        found.append(value)
    return found


def _other_value(value, schema: dict, context: list, rng: random.Random):
    """A different value of the same type for one argument (None when there is none)."""
    t = _type_of(schema)
    options = [v for v in schema.get("enum") or [] if v != value]
    if not options and isinstance(value, bool):
        options = [not value]
    elif not options and t in ("integer", "number") and not isinstance(value, bool):
        options = [v for v in context if isinstance(v, (int, float)) and not isinstance(v, bool) and v != value
                   and (t == "number" or isinstance(v, int))] or [value + 1, value - 1]
    elif not options and t == "string" and isinstance(value, str):
        options = [v for v in context if isinstance(v, str) and v != value and v not in value and value not in v]
    return rng.choice(options) if options else None


def _valid_but_wrong(call: dict, tools: dict[str, dict], context: list, rng: random.Random):
    """(reason, call) candidates that the schema accepts but that do not do what was asked."""
    params = tools[call["name"]]["parameters"]
    props, args = params.get("properties") or {}, call["arguments"]
    near = _nearest(call["name"], tools)
    if near:
        yield "nearest_function", {**call, "name": near, "arguments": _carry(args, tools[near]["parameters"])}
    keys = [k for k in args if k in props]
    rng.shuffle(keys)
    for k in keys:
        other = _other_value(args[k], props[k], context, rng)
        if other is not None:
            yield "wrong_value", {**call, "arguments": {**args, k: other}}
            break
    pairs = [(a, b) for a in keys for b in keys if a < b and type(args[a]) is type(args[b]) and args[a] != args[b]
             and _type_of(props[a]) == _type_of(props[b]) and not (props[a].get("enum") or props[b].get("enum"))]
    if pairs:
        a, b = rng.choice(sorted(pairs))
        yield "swapped_arguments", {**call, "arguments": {**args, a: args[b], b: args[a]}}
    optional = sorted(k for k in args if k not in params.get("required", []))
    if optional:
        drop = rng.choice(optional)
        yield "dropped_optional", {**call, "arguments": {k: v for k, v in args.items() if k != drop}}


def _rng(trace: dict, turn: int, call: int) -> random.Random:
    key = json.dumps([trace.get("id"), trace["messages"][:turn + 1], call], sort_keys=True, default=str)
    return random.Random(hashlib.sha256(key.encode()).digest())


def _checked(reason: str, call: dict, original: dict, tools: dict[str, dict]) -> bool:
    """Does the corruption really break the call the way its label says?"""
    if reason == "wrong_function":  # a declared tool that is not the one the trace called
        return call["name"] in tools and call["name"] != original.get("name")
    try:
        checked = check_call(call, tools, "corruption")
    except RecordError as exc:
        return exc.reason == reason
    # Valid by design; it must still differ from what the trace did.
    return reason in VALID_BUT_WRONG and \
        (checked["name"], checked["arguments"]) != (original.get("name"), original.get("arguments"))


def _needless_call(tools: dict[str, dict], context: list, rng: random.Random) -> dict:
    """A call of an offered tool that looks like a real attempt: each required argument is its
    enum's first member, else a value of its type from what the user said, else a placeholder."""
    name = rng.choice(sorted(tools))
    said = {f"_{i}": v for i, v in enumerate(context)}
    return {"id": None, "name": name, "arguments": _carry(said, tools[name]["parameters"])}


def _pair(pairs: list, prompt: list, chosen: list, group: str, reason: str, rejected: str) -> None:
    pairs.append({"prompt": prompt, "chosen": chosen, "reason": reason, "group": group,
                  "rejected": [{"role": "assistant", "content": rejected}]})


def trace_pairs(trace: dict) -> list[dict]:
    """Preference pairs from one validated canonical trace (see the module docstring). Each pair's
    ``group`` names the function(s) its turn calls (or the offered tools, for a plain answer), so
    a held-out split can keep every pair about one function on one side."""
    tools = {t["name"]: t for t in trace["tools"]}
    pairs = []
    messages = trace["messages"]
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or not tools:
            continue
        prompt = judge_prompt(trace["tools"], messages[:i])
        chosen = [{"role": "assistant", "content": render_turn(m)}]
        calls = m.get("tool_calls", [])
        group = ",".join(sorted({c["name"] for c in calls})) if calls else "answer:" + "|".join(sorted(tools))
        pair = functools.partial(_pair, pairs, prompt, chosen, group)
        context = [e for x in messages[:i] if x["role"] in ("user", "tool") for e in _entities(x.get("content") or "")]
        if not calls:
            needless = _needless_call(tools, context, _rng(trace, i, 0))
            if _checked("call_instead_of_answer", needless, {}, tools):
                pair("call_instead_of_answer", render_call(needless))
            continue
        for j, call in enumerate(calls):
            rng = _rng(trace, i, j)
            wrong = list(_corruptions(call, tools, rng))
            wrong += [(reason, bad, None) for reason, bad in _valid_but_wrong(call, tools, context, rng)]
            for reason, bad, raw in wrong:
                if _checked(reason, bad, call, tools):
                    rendered = [render_call(c) for c in calls]
                    rendered[j] = render_call(bad, raw)
                    pair(reason, render_turn(m, rendered))
        pair("answer_instead_of_call", _rng(trace, i, len(calls)).choice(_NO_CALL_REPLIES))
        _no_fitting_tool(pairs, trace, i, tools, group)
    return pairs


def _no_fitting_tool(pairs: list, trace: dict, turn: int, offered: dict[str, dict], group: str) -> None:
    """The same request with the tools it called taken away: a plain reply now beats the call of
    the nearest remaining tool (schema-valid, arguments carried over). Beside
    ``answer_instead_of_call`` on the full tool list, the same replies are right or wrong only by
    whether an offered tool fits the request."""
    m = trace["messages"][turn]
    called = {c["name"] for c in m["tool_calls"]}
    left = [t for t in trace["tools"] if t["name"] not in called]
    if not left:
        return
    tools = {t["name"]: t for t in left}
    first = m["tool_calls"][0]
    near = _nearest(first["name"], {**tools, first["name"]: offered[first["name"]]})
    rng = _rng(trace, turn, -1)
    call = {"id": None, "name": near, "arguments": _carry(first["arguments"], tools[near]["parameters"])}
    if not _checked("no_fitting_tool", call, {}, tools):
        return
    names = ", ".join(sorted(tools))
    reply = rng.choice([*_NO_CALL_REPLIES, f"None of the tools I have ({names}) can do that.",
                        f"I can't do that with {names}; it needs a tool I don't have."])
    _pair(pairs, judge_prompt(left, trace["messages"][:turn]), [{"role": "assistant", "content": reply}], group,
          "no_fitting_tool", render_call(call))
