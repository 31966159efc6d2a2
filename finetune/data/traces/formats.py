"""Trace layouts people actually have, each converted to one canonical, OpenAI-shaped trace.

Canonical trace (plain dicts, so it round-trips through JSON)::

    {"id": "...",
     "tools": [{"name": str, "description": str, "parameters": <JSON schema>}],
     "messages": [{"role": "system" | "user" | "assistant" | "tool",
                   "content": str,
                   "tool_calls": [{"id": str, "name": str, "arguments": dict | str}],  # assistant
                   "tool_call_id": str,                                                # tool
                   "train": bool}]}                                                    # optional

Converters only change the *shape*; whether a trace is usable (role order, arguments that parse,
calls that match the schemas) is decided in one place, ``validate.validate_trace``. A converter
raises ``RecordError`` only when the shape itself cannot be read.

Layouts: ``openai`` (messages + tools; also plain chat), ``sharegpt`` (ShareGPT / Hermes
function calling with ``<tools>``, ``<tool_call>``, ``<tool_response>`` tags; ``hermes`` is
another name for it), ``glaive``
(Glaive function-calling v2: a SYSTEM string and one chat string), ``xlam`` (query / tools /
answers), ``swe_agent`` (trajectories of role/text or role/content turns).
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from finetune import RecordError

LAYOUT_KEYS = {
    "openai": "`messages`",
    "sharegpt": "`conversations`",
    "glaive": "`system` + `chat`",
    "xlam": "`query` + `tools` + `answers`",
    "swe_agent": "`trajectory` or `history`",
}


# Other names people give a layout (``--source FILE:hermes``).
ALIASES = {"hermes": "sharegpt"}

_MATCHES = {
    "openai": lambda r: isinstance(r.get("messages"), list),
    "sharegpt": lambda r: isinstance(r.get("conversations"), list),
    "glaive": lambda r: isinstance(r.get("chat"), str),
    "xlam": lambda r: "query" in r and "answers" in r,
    "swe_agent": lambda r: isinstance(r.get("trajectory"), list) or isinstance(r.get("history"), list),
}


def layout_name(fmt: str) -> str:
    """The layout an alias names (``hermes`` -> ``sharegpt``); other names unchanged."""
    return ALIASES.get(fmt, fmt)


def matches(record: Any, fmt: str) -> bool:
    """Whether ``record`` has the keys that layout ``fmt`` (or its alias) needs."""
    return isinstance(record, dict) and _MATCHES[layout_name(fmt)](record)


def detect_format(record: Any) -> str | None:
    """The layout of one record (first match in the order above), or None when none fits."""
    return next((fmt for fmt in _MATCHES if matches(record, fmt)), None)


def detect_layout(record: Any) -> str:
    """The layout of one record, or ``RecordError("unknown_layout")`` naming the keys each layout needs."""
    fmt = detect_format(record)
    if fmt is None:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise RecordError("unknown_layout", f"no known layout fits keys {keys}; layouts: "
                          + ", ".join(f"{k} ({v})" for k, v in LAYOUT_KEYS.items()))
    return fmt


def loads_lenient(text: str) -> Any:
    """JSON, or a Python literal (Hermes data often holds ``{'name': 'f'}``). Never evaluates code."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise RecordError("malformed_json", f"not JSON: {text[:80]!r}") from None


def _text(content: Any, where: str) -> str:
    """Message content as a string: None -> "", text parts joined; other parts are refused."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", None) and isinstance(part.get("text"), str):
                out.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise RecordError("unsupported_content", f"{where}: content part of type {kind!r} (text only)")
        return "".join(out)
    if isinstance(content, (dict, int, float, bool)):
        return json.dumps(content, ensure_ascii=False)  # structured tool results
    raise RecordError("unsupported_content", f"{where}: content is a {type(content).__name__}")


def tools_list(raw: Any) -> list[dict]:
    """Tools from OpenAI's ``[{type: function, function: {...}}]`` or bare function dicts."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        raw = loads_lenient(raw)
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise RecordError("bad_tool_schema", f"`tools` is a {type(raw).__name__}, not a list")
    out = []
    for i, t in enumerate(raw):
        if isinstance(t, dict) and isinstance(t.get("function"), dict):
            t = t["function"]
        if not isinstance(t, dict):
            raise RecordError("bad_tool_schema", f"tools[{i}] is not an object")
        out.append(t)
    return out


# --------------------------------------------------------------------------- OpenAI


_ROLES = {"system": "system", "developer": "system", "user": "user", "human": "user",
          "assistant": "assistant", "ai": "assistant", "gpt": "assistant", "model": "assistant",
          "tool": "tool", "function": "tool", "ipython": "tool", "observation": "tool"}


def _openai_call(call: Any, where: str) -> dict:
    if not isinstance(call, dict):
        raise RecordError("malformed_tool_call", f"{where}: a tool call is not an object")
    fn = call.get("function") if isinstance(call.get("function"), dict) else call
    return {"id": call.get("id"), "name": fn.get("name"), "arguments": fn.get("arguments", fn.get("parameters"))}


def _openai_messages(messages: list, where: str = "messages") -> list[dict]:
    out = []
    for i, m in enumerate(messages):
        at = f"{where}[{i}]"
        if not isinstance(m, dict):
            raise RecordError("malformed_message", f"{at} is not an object")
        role = _ROLES.get(str(m.get("role", "")).lower())
        if role is None:
            raise RecordError("unknown_role", f"{at}: role {m.get('role')!r}")
        content = m.get("content", m.get("text"))
        if role == "user" and content is None:
            raise RecordError("null_user_content", f"{at}: a user turn whose content is null")
        msg: dict[str, Any] = {"role": role, "content": _text(content, at)}
        if role == "assistant":
            calls = m.get("tool_calls") or []
            if isinstance(m.get("function_call"), dict):  # the legacy single-call field
                calls = [*calls, m["function_call"]]
            if not isinstance(calls, list):
                raise RecordError("malformed_tool_call", f"{at}: tool_calls is not a list")
            if calls:
                msg["tool_calls"] = [_openai_call(c, at) for c in calls]
        if role == "tool":
            if m.get("tool_call_id") is not None:
                msg["tool_call_id"] = str(m["tool_call_id"])
            if isinstance(m.get("name"), str):
                msg["name"] = m["name"]
        if "train" in m:
            msg["train"] = bool(m["train"])
        elif m.get("weight") in (0, 1):  # Axolotl's per-turn switch
            msg["train"] = bool(m["weight"])
        out.append(msg)
    return out


def from_openai(rec: dict) -> dict:
    return {"messages": _openai_messages(rec["messages"]), "tools": tools_list(rec.get("tools"))}


# --------------------------------------------------------------------------- ShareGPT / Hermes

_TOOLS_BLOCK = re.compile(r"<tools>(.*?)</tools>", re.S)
_CALL_BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
_RESPONSE_BLOCK = re.compile(r"<tool_response>(.*?)</tool_response>", re.S)


def _json_objects(text: str) -> list[Any]:
    """Every JSON value in ``text``: one list, or objects one after another (Glaive, Hermes)."""
    text = text.strip()
    if not text:
        return []
    try:
        value = loads_lenient(text)
        return value if isinstance(value, list) else [value]
    except RecordError:
        pass
    dec, values, i = json.JSONDecoder(), [], 0
    while True:
        start = text.find("{", i)
        if start < 0:
            return values
        try:
            value, i = dec.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            raise RecordError("bad_tool_schema", f"tool definitions are not JSON: {exc.msg}") from None
        values.append(value)


def _response_name(text: str) -> str | None:
    """The function a Hermes ``<tool_response>`` names (``{"name": ..., "content": ...}``), if any."""
    try:
        value = loads_lenient(text)
    except RecordError:
        return None
    name = value.get("name") if isinstance(value, dict) else None
    return name if isinstance(name, str) else None


def from_sharegpt(rec: dict) -> dict:
    """ShareGPT / Hermes. Calls get ids here, and each ``<tool_response>`` (a ``tool`` turn often
    holds several, the answers to parallel calls) is matched to an open call: by the function it
    names, else in order. A response naming no open call is rejected, never guessed."""
    tools = tools_list(rec.get("tools"))
    messages: list[dict] = []
    open_calls: list[dict] = []  # calls of the latest assistant turn still without a response
    n_calls = 0
    for i, turn in enumerate(rec["conversations"]):
        at = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise RecordError("malformed_message", f"{at} is not an object")
        who = str(turn.get("from", turn.get("role", ""))).lower()
        raw_value = turn.get("value", turn.get("content"))
        value = _text(raw_value, at)
        if who == "function_call":
            who, value = "gpt", f"<tool_call>{value}</tool_call>"
        role = _ROLES.get(who) or {"function_response": "tool"}.get(who)
        if role is None:
            raise RecordError("unknown_role", f"{at}: from {who!r}")
        if role == "system":
            blocks = _TOOLS_BLOCK.findall(value)
            for block in blocks:
                tools += tools_list(_json_objects(block))
            value = _TOOLS_BLOCK.sub("", value).strip() if blocks else value
            messages.append({"role": "system", "content": value})
        elif role == "assistant":
            calls = []
            for block in _CALL_BLOCK.findall(value):
                try:
                    parsed = loads_lenient(block.strip())
                except RecordError:
                    parsed = None
                if not isinstance(parsed, dict):
                    raise RecordError("malformed_json", f"{at}: <tool_call> is not a JSON object: {block.strip()[:80]!r}")
                call = _openai_call(parsed, at)
                call["id"] = call["id"] or f"call_{n_calls}"
                n_calls += 1
                calls.append(call)
            msg = {"role": "assistant", "content": _CALL_BLOCK.sub("", value).strip() if calls else value}
            if calls:
                msg["tool_calls"] = calls
            messages.append(msg)
            open_calls = list(calls)
        elif role == "tool":
            responses = _RESPONSE_BLOCK.findall(value) or [value]
            for k, response in enumerate(responses):
                msg = {"role": "tool", "content": response.strip()}
                if open_calls:
                    name = _response_name(response)
                    match = next((c for c in open_calls if c["name"] == name), None) if name else open_calls[0]
                    if match is None:
                        raise RecordError("orphan_tool_result", f"{at}: <tool_response> {k + 1} of {len(responses)} "
                                          f"answers {name!r}, which no open call of the turn before made "
                                          f"(open: {[c['name'] for c in open_calls]})")
                    open_calls.remove(match)
                    msg["tool_call_id"] = match["id"]
                messages.append(msg)
        else:
            if role == "user" and raw_value is None:
                raise RecordError("null_user_content", f"{at}: a user turn whose value is null")
            messages.append({"role": role, "content": value})
    return {"messages": messages, "tools": tools}


# --------------------------------------------------------------------------- Glaive

_GLAIVE_TURN = re.compile(r"(?:^|\n)\s*(USER|ASSISTANT|FUNCTION RESPONSE):", re.S)
_GLAIVE_ARGS = re.compile(r"""^\{\s*"name"\s*:\s*"([^"]*)"\s*,\s*"arguments"\s*:\s*'(.*)'\s*\}$""", re.S)


def _glaive_call(text: str) -> dict:
    text = text.strip()
    try:
        call = json.loads(text)
    except json.JSONDecodeError:
        m = _GLAIVE_ARGS.match(text)  # Glaive quotes the arguments JSON with single quotes
        if not m:
            raise RecordError("malformed_json", f"<functioncall> is not JSON: {text[:80]!r}") from None
        call = {"name": m.group(1), "arguments": m.group(2)}
    if not isinstance(call, dict):
        raise RecordError("malformed_json", "<functioncall> is not a JSON object")
    return {"id": None, "name": call.get("name"), "arguments": call.get("arguments")}


def from_glaive(rec: dict) -> dict:
    system = rec.get("system") or ""
    if not isinstance(system, str):
        raise RecordError("malformed_message", "`system` is not a string")
    system = re.sub(r"^\s*SYSTEM:\s*", "", system)
    brace = system.find("{")
    tools = tools_list(_json_objects(system[brace:])) if brace >= 0 else []
    messages = [{"role": "system", "content": (system[:brace] if brace >= 0 else system).strip()}]
    if not messages[0]["content"]:
        messages = []
    parts = _GLAIVE_TURN.split(rec["chat"])
    if parts[0].strip():
        raise RecordError("malformed_message", f"chat text before the first turn marker: {parts[0].strip()[:60]!r}")
    for who, body in zip(parts[1::2], parts[2::2], strict=True):
        body = body.replace("<|endoftext|>", "").strip()
        if who == "USER":
            messages.append({"role": "user", "content": body})
        elif who == "FUNCTION RESPONSE":
            messages.append({"role": "tool", "content": body})
        elif "<functioncall>" in body:
            content, call = body.split("<functioncall>", 1)
            messages.append({"role": "assistant", "content": content.strip(), "tool_calls": [_glaive_call(call)]})
        else:
            messages.append({"role": "assistant", "content": body})
    return {"messages": messages, "tools": tools}


# --------------------------------------------------------------------------- xLAM


def from_xlam(rec: dict) -> dict:
    tools = tools_list(rec.get("tools"))
    answers = rec.get("answers")
    if isinstance(answers, str):
        answers = loads_lenient(answers)
    if not isinstance(answers, list):
        raise RecordError("malformed_tool_call", "`answers` is not a list of calls")
    if not isinstance(rec.get("query"), str):
        raise RecordError("malformed_message", "`query` is not a string")
    calls = [_openai_call(a, "answers") for a in answers]
    assistant: dict[str, Any] = {"role": "assistant", "content": ""}
    if calls:
        assistant["tool_calls"] = calls
    return {"messages": [{"role": "user", "content": rec["query"]}, assistant], "tools": tools}


# --------------------------------------------------------------------------- SWE-agent


def from_swe_agent(rec: dict) -> dict:
    turns = rec["trajectory"] if isinstance(rec.get("trajectory"), list) else rec["history"]
    # SWE-agent's own .traj `trajectory` holds action/observation steps, not role turns.
    if turns and isinstance(turns[0], dict) and "role" not in turns[0] and isinstance(rec.get("history"), list):
        turns = rec["history"]
    kept = [t for t in turns if not (isinstance(t, dict) and t.get("is_demo"))]
    return {"messages": _openai_messages(kept, "trajectory"), "tools": tools_list(rec.get("tools"))}


CONVERTERS = {"openai": from_openai, "sharegpt": from_sharegpt, "glaive": from_glaive,
              "xlam": from_xlam, "swe_agent": from_swe_agent}


def to_canonical(record: Any, fmt: str) -> dict:
    """Convert one raw record of layout ``fmt`` to the canonical trace (not yet validated)."""
    fmt = layout_name(fmt)
    if not matches(record, fmt):
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise RecordError("wrong_layout", f"not a {fmt} record (needs {LAYOUT_KEYS[fmt]}; found {keys})")
    trace = CONVERTERS[fmt](record)
    rid = record.get("id") if isinstance(record, dict) else None
    if rid is not None:
        trace["id"] = str(rid)
    return trace
