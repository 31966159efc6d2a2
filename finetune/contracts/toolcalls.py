"""The tool-call checker: is this call one the declared tools accept? Used on training traces
(``data.validate``), on the judge's corrupted calls (``judge.tools``) and on every member answer in
the pool (``pool.runtime``), so a call means the same thing at every stage. No torch.

Example::

    check_call({"name": "get_weather", "arguments": '{"city": "Paris"}'}, tools, "message 3")
    # -> {"id": None, "name": "get_weather", "arguments": {"city": "Paris"}}, or RecordError
"""

from __future__ import annotations

import json
from typing import Any

from finetune import RecordError

_PY_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
             "array": list, "object": dict, "null": type(None)}


def type_ok(value: Any, t: str | list[str] | None) -> bool:
    """Is ``value`` of JSON Schema type ``t`` (a name or a list of names; unknown names accept anything)?"""
    if t is None:
        return True
    types = t if isinstance(t, list) else [t]
    for name in types:
        py = _PY_TYPES.get(name)
        if py is None:
            return True
        if isinstance(value, bool) and name in ("integer", "number"):
            continue  # JSON true is not a number
        if isinstance(value, py):
            return True
    return False


def check_call(call: dict, tools: dict[str, dict], where: str) -> dict:
    """The call with parsed arguments, if it is one the tools accept; else ``RecordError`` with the
    reason: malformed_tool_call, malformed_json, arguments_not_object, unknown_tool,
    missing_required_argument, unknown_argument or wrong_argument_type. ``tools``: name ->
    normalised tool (``validate_trace`` normalises them); empty: only the call's shape is checked."""
    name = call.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RecordError("malformed_tool_call", f"{where}: tool call without a name")
    args = call.get("arguments")
    if args is None or args == "":
        args = {}
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as exc:
            raise RecordError("malformed_json", f"{where}: arguments of {name!r} are not JSON ({exc.msg})") from None
    if not isinstance(args, dict):
        raise RecordError("arguments_not_object", f"{where}: arguments of {name!r} are a {type(args).__name__}, not an object")
    if tools:
        tool = tools.get(name)
        if tool is None:
            raise RecordError("unknown_tool", f"{where}: call to {name!r}, which is not among the tools")
        params = tool["parameters"]
        props = params.get("properties") or {}
        for req in params.get("required", []):
            if req not in args:
                raise RecordError("missing_required_argument", f"{where}: {name!r} needs argument {req!r}")
        for key, value in args.items():
            if props and key not in props and params.get("additionalProperties") is not True:
                raise RecordError("unknown_argument", f"{where}: {name!r} has no argument {key!r}")
            spec = props.get(key)  # a schema, or true/false (any value / none), which JSON Schema allows
            if spec is False:
                raise RecordError("unknown_argument", f"{where}: {name!r} takes no argument {key!r}")
            if isinstance(spec, dict) and not type_ok(value, spec.get("type")):
                raise RecordError("wrong_argument_type", f"{where}: {name}.{key} should be {spec.get('type')}, got {type(value).__name__}")
    return {"id": call.get("id"), "name": name, "arguments": args}

