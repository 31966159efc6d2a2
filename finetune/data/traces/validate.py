"""Validation of canonical traces, and normalisation of the messy tool schemas found in the wild.

What is unambiguous is normalised: ``"type": "dict"`` becomes ``object``, ``float`` becomes
``number``, ``"str, optional"`` becomes an optional ``string``, ``List[int]`` an array, tool results
given as objects become JSON text, missing call ids are numbered, a tool result with no id
answers the open call of its name (or the single call still open), and several leading system
turns become one. Type names of other languages (Java's ``String``, ``long``, ``ArrayList<T>``,
``HashMap``; JavaScript's ``any``; an empty type) map to JSON types; where such a name is not a
string type, the parameter also accepts a string, because data written for those languages
passes values as source code (``"new ArrayList<>(List.of(1, 2))"``), which is kept verbatim and
never evaluated. What is ambiguous is rejected with a ``RecordError`` whose reason code is
counted in ``stats.json``: an unknown type name, a tool result without id or name when several
calls are open, arguments that are not a JSON object, a call to a tool that is not declared, a
missing required argument, an argument that is not declared or has the wrong type.

Dotted function names (``weather.get``) are kept as they are: Llama and Hermes tool formats carry
them verbatim, and renaming would teach the model a name that no runtime serves.

Example::

    trace = validate_trace(to_canonical(record, "openai"))
"""

from __future__ import annotations

import json
import re
from typing import Any

from finetune import RecordError
from finetune.contracts.toolcalls import check_call
from finetune.data.traces.formats import loads_lenient

_TYPES = {
    "string": "string", "str": "string", "text": "string", "char": "string",
    "number": "number", "float": "number", "double": "number", "decimal": "number",
    "integer": "integer", "int": "integer",
    "boolean": "boolean", "bool": "boolean",
    "array": "array", "list": "array", "tuple": "array", "set": "array", "sequence": "array",
    "object": "object", "dict": "object", "dictionary": "object", "map": "object", "mapping": "object",
    "null": "null", "none": "null",
}
_ANY = {"any", "typing.any", "object?", "", "mixed", "unknown"}
# Java / JavaScript / C# names (lowercased); a value for one may be given as source code text.
_FOREIGN = {
    "long": "integer", "short": "integer", "byte": "integer", "biginteger": "integer", "bigint": "integer",
    "int32": "integer", "int64": "integer", "uint": "integer",
    "bigdecimal": "number", "float32": "number", "float64": "number",
    "character": "string", "charsequence": "string",
    "arraylist": "array", "linkedlist": "array", "vector": "array", "collection": "array", "iterable": "array",
    "hashset": "array", "treeset": "array", "linkedhashset": "array",
    "hashmap": "object", "treemap": "object", "linkedhashmap": "object", "hashtable": "object", "record": "object",
}
# Capitalised, these are Java's or JavaScript's types (Python's typing capitalises List, Dict...);
# so is any generic written with angle brackets (List<Integer>).
_BOXED = {"string", "boolean", "integer", "object", "number", "double", "float", "char", "map"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-:/]{0,127}$")


def _norm_type(raw: str, where: str) -> tuple[str | list[str] | None, bool]:
    """(JSON-schema type or None for "any", optional?) of a type name like ``List[int], optional``."""
    text = raw.strip()
    optional = False
    low = text.lower()
    if low.endswith(", optional") or low.endswith(" optional"):
        optional, text = True, text[: low.rfind("optional")].rstrip(" ,")
    m = re.fullmatch(r"(?i)optional\[(.*)\]", text)
    if m:  # typing's Optional[X] is X or None
        optional, text = True, f"Union[{m.group(1)}, None]"
    m = re.fullmatch(r"(?i)union\[(.*)\]", text)
    parts = [p.strip() for p in re.split(r",(?![^\[]*\])", m.group(1))] if m else (
        [p.strip() for p in re.split(r"\s+or\s+|\|", text)] if re.search(r"\s+or\s+|\|", text) else [text])
    out: list[str] = []
    for part in parts:
        if part.endswith("[]"):  # Java / TypeScript arrays: String[], int[]
            base, foreign = "array", True
        else:  # List[int] -> list, ArrayList<String> -> arraylist
            base = re.sub(r"\s*(\[.*\]|<.*>)$", "", part).strip().lower()
            foreign = base in _FOREIGN or (base in _BOXED and part[:1].isupper()) or part.endswith(">")
        if base in _ANY:
            return None, optional
        if foreign:  # source-code values are strings too
            for t in (_FOREIGN.get(base) or _TYPES[base], "string"):
                if t not in out:
                    out.append(t)
            continue
        if base not in _TYPES:
            raise RecordError("bad_tool_schema", f"{where}: unknown type {raw!r}")
        if _TYPES[base] not in out:
            out.append(_TYPES[base])
    if "null" in out and len(out) > 1:
        optional = True
    return (out[0] if len(out) == 1 else out), optional


def _norm_schema(schema: Any, where: str) -> dict:
    """Normalise one JSON-schema node (and its properties / items) in a copy."""
    if not isinstance(schema, dict):
        raise RecordError("bad_tool_schema", f"{where}: schema is not an object")
    out = dict(schema)
    t = out.get("type")
    if isinstance(t, str):
        norm, optional = _norm_type(t, where)
        if norm is None:
            out.pop("type")
        else:
            out["type"] = norm
        if optional:
            out["_optional"] = True
    elif isinstance(t, list):
        types = [_norm_type(x, where)[0] for x in t if isinstance(x, str)]
        out["type"] = [x for x in types if isinstance(x, str)]
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _norm_schema(v, f"{where}.{k}") for k, v in out["properties"].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = _norm_schema(out["items"], f"{where}[]")
    return out


def normalise_tool(tool: dict, where: str) -> dict:
    """A tool as ``{name, description, parameters}`` with a normalised object schema."""
    name = tool.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RecordError("bad_tool_schema", f"{where}: tool name {name!r} is not a function name")
    params = tool.get("parameters", tool.get("arguments"))
    if params is None:
        params = {"type": "object", "properties": {}}
    if isinstance(params, str):
        params = loads_lenient(params)
    if not isinstance(params, dict):
        raise RecordError("bad_tool_schema", f"{where}: parameters of {name!r} are not an object")
    if "properties" not in params and params.get("type") not in ("object", "dict"):
        # xLAM's flat layout: {"arg": {"type": "str", "description": ..., "default": ...}}
        params = {"type": "object", "properties": params}
    params = _norm_schema({**params, "type": "object"}, f"{where}.{name}")
    props = params.get("properties") or {}
    required = params.get("required")
    if required is None:
        required = [k for k, v in props.items() if not v.get("_optional") and "default" not in v]
    elif not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise RecordError("bad_tool_schema", f"{where}: `required` of {name!r} is not a list of names")
    for v in props.values():
        v.pop("_optional", None)
    params.pop("_optional", None)
    params["required"] = [r for r in required if r in props] if props else required
    desc = tool.get("description") or ""
    return {"name": name, "description": desc if isinstance(desc, str) else json.dumps(desc), "parameters": params}


def validate_trace(trace: dict) -> dict:
    """Check and normalise a canonical trace; return the clean copy or raise ``RecordError``."""
    tools_in = trace.get("tools") or []
    tools: dict[str, dict] = {}
    for i, t in enumerate(tools_in):
        tool = normalise_tool(t, f"tools[{i}]")
        if tool["name"] in tools:
            raise RecordError("bad_tool_schema", f"tools[{i}]: tool {tool['name']!r} declared twice")
        tools[tool["name"]] = tool
    out: list[dict] = []
    open_calls: list[str] = []  # ids of calls still waiting for their result, in order
    n_call = 0
    for i, m in enumerate(trace.get("messages") or []):
        where = f"messages[{i}]"
        role, prev = m["role"], (out[-1]["role"] if out else None)
        msg: dict[str, Any] = {"role": role, "content": m.get("content") or ""}
        if "train" in m:
            msg["train"] = m["train"]
        if role == "system":
            if out and out[-1]["role"] == "system" and len(out) == 1:
                # Several leading system turns (a tools prompt, then the task's own): one, in order.
                out[0]["content"] = "\n\n".join(t for t in (out[0]["content"], msg["content"]) if t.strip())
                continue
            if out:
                raise RecordError("bad_role_order", f"{where}: system message after the start")
        elif role == "user":
            if open_calls:
                raise RecordError("bad_role_order", f"{where}: user turn while tool call(s) {open_calls} have no result")
        elif role == "assistant":
            if prev in (None, "system"):
                raise RecordError("bad_role_order", f"{where}: the conversation starts with the assistant")
            if prev == "assistant":
                raise RecordError("bad_role_order", f"{where}: two assistant turns in a row")
            if open_calls:
                raise RecordError("bad_role_order", f"{where}: assistant turn while tool call(s) {open_calls} have no result")
            calls = []
            for j, c in enumerate(m.get("tool_calls") or []):
                call = check_call(c, tools, f"{where}.tool_calls[{j}]")
                if not call["id"]:
                    call["id"] = f"call_{n_call}"
                call["id"] = str(call["id"])
                n_call += 1
                calls.append(call)
            if len({c["id"] for c in calls}) != len(calls):
                raise RecordError("malformed_tool_call", f"{where}: two tool calls share one id")
            if not msg["content"].strip() and not calls:
                raise RecordError("empty_assistant_turn", f"{where}: assistant turn with no content and no tool call")
            if calls:
                msg["tool_calls"] = calls
                open_calls = [c["id"] for c in calls]
        elif role == "tool":
            if not open_calls:
                raise RecordError("orphan_tool_result", f"{where}: tool result with no open tool call")
            cid = m.get("tool_call_id")
            if cid is None and m.get("name") is not None:  # by tool name: the oldest open call of it
                named = [c["id"] for c in out_calls(out) if c["id"] in open_calls and c["name"] == m["name"]]
                if not named:
                    raise RecordError("orphan_tool_result", f"{where}: tool result for {m['name']!r}, which no open "
                                      f"call made")
                cid = named[0]
            elif cid is None:
                if len(open_calls) > 1:
                    raise RecordError("orphan_tool_result", f"{where}: tool result without tool_call_id or name "
                                      f"while {len(open_calls)} calls are open")
                cid = open_calls[0]
            if cid not in open_calls:
                raise RecordError("orphan_tool_result", f"{where}: tool_call_id {cid!r} answers no open call")
            open_calls.remove(cid)
            msg["tool_call_id"] = cid
        out.append(msg)
    if not any(m["role"] == "assistant" for m in out):
        raise RecordError("no_assistant_turn", "the trace has no assistant turn to learn from")
    clean = {"messages": out, "tools": list(tools.values())}
    if "id" in trace:
        clean["id"] = trace["id"]
    return clean


def out_calls(messages: list[dict]) -> list[dict]:
    """Every tool call made so far, newest last."""
    return [c for m in messages for c in m.get("tool_calls", [])]
