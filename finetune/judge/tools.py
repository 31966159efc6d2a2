"""Tool-use preference pairs: a correct call from a real trace, and the same call broken.

Every assistant turn of a validated trace (any layout ``finetune data prepare`` reads) gives
pairs whose *chosen* side is what the trace did and whose *rejected* side is one corruption:

* ``wrong_function``: another declared tool called with the same arguments
* ``missing_required_argument``: a required argument dropped
* ``wrong_argument_type``: an argument given a value of another JSON type
* ``unknown_argument``: an argument the schema does not declare, added
* ``malformed_json``: the arguments' JSON broken (cut short, a trailing comma, single quotes or a
  missing colon)
* ``call_instead_of_answer``: where the trace answered in plain text, a (schema-valid) tool call

Which argument, which other tool, which value and which JSON defect is drawn from a generator
seeded by the trace and the turn, so that the judge learns what breaks a call rather than one
fixed token (the same trace always gives the same pairs). A corruption is kept only if the
toolkit's own call checker (the one ``data prepare`` applies) rejects it for the reason its label
names. The two kinds that can be schema-valid are checked otherwise: a wrong function must be a
declared tool other than the one called, and a needless call must be a valid call. Calls are
rendered as text (``<tool_call>{"name": ..., "arguments": ...}</tool_call>``) and the tools go
into the system message as one compact signature each (``read_file(path*: string, start_line:
integer) - Read a file.``, ``*`` = required), so a text-only judge with a short context sees the
whole contract next to the question.

Example::

    for pair in trace_pairs(validate_trace(to_canonical(record, "openai"))): ...
"""

from __future__ import annotations

import hashlib
import json
import random

from finetune import RecordError
from finetune.contracts.judging import judge_prompt, render_call, render_turn
from finetune.contracts.toolcalls import check_call

_OTHER_TYPE = {"string": [12345, True, None, ["x"]], "integer": ["seven", "12", 3.5, [1]],
               "number": ["seven", "1.5", False, {}], "boolean": ["yes", "true", 1, "no"],
               "array": ["a,b", 3, {"item": "a"}], "object": ["x", [1, 2], 0], "null": [0, "none"]}
_PLACEHOLDER = {"string": "example", "integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {},
                "null": None}
_INVENTED = ["force", "dry_run", "overwrite", "retries", "user_id", "format", "async_mode", "callback_url",
             "priority", "debug", "encoding", "region"]
_INVENTED_VALUES = [True, "yes", 3, "json", None]


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
    # A needless call is valid by design; it must still differ from anything the trace did.
    return reason == "call_instead_of_answer" and \
        (checked["name"], checked["arguments"]) != (original.get("name"), original.get("arguments"))


def _needless_call(tools: dict[str, dict], rng: random.Random) -> dict:
    name = rng.choice(sorted(tools))
    params = tools[name]["parameters"]
    props = params.get("properties") or {}
    args = {r: _PLACEHOLDER.get(_type_of(props.get(r, {})) or "string", "example") for r in params.get("required", [])}
    return {"id": None, "name": name, "arguments": args}


def trace_pairs(trace: dict) -> list[dict]:
    """Preference pairs from one validated canonical trace (see the module docstring)."""
    tools = {t["name"]: t for t in trace["tools"]}
    pairs = []
    messages = trace["messages"]
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or not tools:
            continue
        prompt = judge_prompt(trace["tools"], messages[:i])
        chosen = [{"role": "assistant", "content": render_turn(m)}]
        calls = m.get("tool_calls", [])
        if not calls:
            needless = _needless_call(tools, _rng(trace, i, 0))
            if _checked("call_instead_of_answer", needless, {}, tools):
                pairs.append({"prompt": prompt, "chosen": chosen, "reason": "call_instead_of_answer",
                              "rejected": [{"role": "assistant", "content": render_call(needless)}]})
            continue
        for j, call in enumerate(calls):
            for reason, bad, raw in _corruptions(call, tools, _rng(trace, i, j)):
                if not _checked(reason, bad, call, tools):
                    continue
                rendered = [render_call(c) for c in calls]
                rendered[j] = render_call(bad, raw)
                pairs.append({"prompt": prompt, "chosen": chosen, "reason": reason,
                              "rejected": [{"role": "assistant", "content": render_turn(m, rendered)}]})
    return pairs
