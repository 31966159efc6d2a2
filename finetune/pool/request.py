"""The chat-completions request the gateway accepts: the OpenAI schema, checked once, before any
member is called, and the conversation normalised once into what each member takes.

``parse_request(raw)`` validates the body (JSON syntax, nesting, lone surrogates, types, ranges,
roles, tool calls and the tool results that answer them) and returns a :class:`Job`, or raises
:class:`BadRequest` listing every problem with its field path (``messages[2].content``). The gateway
answers that with HTTP 400; it is never retried into a fan-out.

What members are sent (:class:`Job`):

* ``wire``: the messages as the client sent them (unset fields left out), for endpoint members
  (vLLM, SGLang, TGI, another gateway), which take the OpenAI wire form as it is.
* ``messages``: the same conversation normalised for local llama.cpp members and for the judge:
  ``developer`` turns become ``system``, text parts are joined into one string, an assistant turn
  with only tool calls gets ``content: ""``, and ``name``/``refusal`` fields are dropped. That is
  what llama-cpp-python's server validates and what the toolkit's chat templates render.

Parameters the pool cannot honour are refused by name (``n`` above 1, ``logprobs``,
``logit_bias``, the legacy ``functions``, audio and other modalities); unknown fields are refused
as OpenAI does (``Unrecognized request argument``), so a typo is never silently ignored.

Requests that could never succeed are refused here rather than fanned out to every member:

* JSON Schemas (each tool's ``parameters``, the ``response_format`` schema) must be usable as
  :func:`finetune.pool.schemas.schema_problems` says (valid Draft 2020-12, every ``$ref`` inside
  the schema, patterns RE2 can match in linear time, within what checking may cost), and a tool's
  ``parameters`` must admit an object (``"type": "object"`` or no type): arguments are one. A tool
  without ``parameters`` takes none: members are sent ``{"type": "object", "properties": {}}``.
* ``stop``: at most 4 sequences (OpenAI's limit), each 1 to 200 characters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from finetune.pool.schemas import MAX_SIZE, schema_problems, schema_size

TOOL_NAME = r"^[A-Za-z0-9_.:-]{1,64}$"
# OpenAI's limit on stop sequences; members check every one after every token, so 80,000 of them
# cost 35x the CPU. 200 characters is more than any chat template's end marker or agent delimiter.
MAX_STOPS, MAX_STOP_CHARS = 4, 200
# What the pool refuses, and why (the rest of the schema it honours; see the README). n and logprobs
# are fields of the schema, checked by value; the others are not in it at all.
REFUSED = {
    "n": "the pool returns one fused answer per request; send n=1 (or several requests)",
    "logprobs": "a fused answer is chosen or merged from several models, so its token log-probabilities are not defined",
    "logit_bias": "token ids differ between members; the pool cannot apply a logit bias",
    "functions": "the legacy `functions` field is not supported; send `tools`",
    "function_call": "the legacy `function_call` field is not supported; send `tool_choice`",
    "audio": "this pool is text-only",
    "modalities": "this pool is text-only",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "reasoning_effort": "the pool's members are not reasoning models",
}


class BadRequest(Exception):
    """Every problem with a request, each as ``path: message``."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


def _text_parts(value: Any) -> Any:
    """Content parts: text only (the pool serves text models); other part types are named."""
    if isinstance(value, list):
        for i, part in enumerate(value):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in (None, "text"):
                raise ValueError(f"[{i}] is a content part of type {kind!r}; this pool is text-only "
                                 "(send text parts or a string)")
    return value


Content = Annotated[str | list[TextPart], Field(union_mode="left_to_right"), BeforeValidator(_text_parts)]


class SystemMessage(_Strict):
    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(_Strict):
    role: Literal["user"]
    content: Content
    name: str | None = None


class FunctionCall(_Strict):
    name: str = Field(pattern=TOOL_NAME)
    arguments: str


class ToolCall(_Strict):
    id: str = Field(min_length=1)
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(_Strict):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None
    refusal: str | None = None


class ToolMessage(_Strict):
    role: Literal["tool"]
    content: Content
    tool_call_id: str = Field(min_length=1)


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class Function(_Strict):
    name: str = Field(pattern=TOOL_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: Function


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class JsonSchema(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None


class StreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ChatRequest(_Strict):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    stop: str | list[str] | None = Field(default=None, union_mode="left_to_right")
    seed: int | None = None
    n: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    safety_identifier: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None


@dataclass
class Job:
    """One validated request, ready to send (see the module docstring)."""

    model: str
    messages: list[dict]        # normalised: local llama.cpp members and the judge
    wire: list[dict]            # as sent: endpoint members
    tools: list[dict] | None
    params: dict = field(default_factory=dict)  # sampling and constraints forwarded to every member
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool = True
    response_format: dict | None = None  # as sent (endpoint members get it as it is)
    schema: dict | None = None  # its JSON Schema ({} for json_object): every answer must match it
    stream: bool = False
    include_usage: bool = False
    prompt_tokens: dict[str, int | None] = field(default_factory=dict)  # local member -> counted (runtime)

    @property
    def max_tokens(self) -> int | None:
        return self.params.get("max_tokens")


_BRANCHES = {"str", "NamedToolChoice"}  # union branch labels without brackets


def _where(loc: tuple) -> str:
    """pydantic's error location as a field path: ('messages', 2, 'user', 'content') -> messages[2].content
    (the role tag after a message's index and union branch labels such as 'list[str]' left out)."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif (i == 2 and loc[0] == "messages") or "[" in part or part in _BRANCHES:
            continue
        else:
            out += f".{part}" if out else part
    return out or "body"


def _problems(exc: ValidationError) -> list[str]:
    seen, out = set(), []
    for e in exc.errors():
        path = _where(tuple(e["loc"]))
        if e["type"] == "extra_forbidden":
            top = e["loc"][-1]
            why = REFUSED.get(top) if len(e["loc"]) == 1 else None
            message = why or ("unrecognized request argument" if len(e["loc"]) == 1 else "unknown field")
        elif e["type"] == "union_tag_invalid":
            path, message = f"{path}.{e['ctx']['discriminator'].strip(chr(39))}", \
                f"{e['ctx']['tag']!r} is not one of {e['ctx']['expected_tags']}"
        elif e["type"] == "model_type":  # pydantic names the class; the client sent JSON
            message = "Input should be an object"
        else:
            message = e["msg"].removeprefix("Value error, ")
        if path not in seen:  # a union reports one error per alternative: the first says enough
            seen.add(path)
            out.append(f"{path}: {message}")
    return out


def _surrogate_path(value: Any, path: str = "") -> str | None:
    """Where a string with a lone surrogate is (it cannot be encoded to send to a member)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
    elif isinstance(value, dict):
        for k, v in value.items():
            found = _surrogate_path(k, path) or _surrogate_path(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _surrogate_path(v, f"{path}[{i}]")
            if found:
                return found
    return None


def _text(content) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else "".join(p.text for p in content)


def _normalised(m) -> dict:
    role = "system" if m.role == "developer" else m.role
    out = {"role": role, "content": _text(m.content)}
    if m.role == "assistant" and m.tool_calls:
        out["tool_calls"] = [c.model_dump() for c in m.tool_calls]
    if m.role == "tool":
        out["tool_call_id"] = m.tool_call_id
    return out


def _conversation_problems(req: ChatRequest) -> list[str]:
    """What the schema alone cannot say: tool results answer earlier calls, choices name offered tools,
    JSON Schemas are usable, stop sequences are few and short."""
    problems = []
    names = [t.function.name for t in req.tools or []]
    if len(set(names)) != len(names):
        problems.append("tools: a function name is declared twice")
    open_calls: set[str] = set()
    for i, m in enumerate(req.messages):
        if m.role == "assistant":
            if m.content is None and not m.tool_calls:
                problems.append(f"messages[{i}]: an assistant turn needs content or tool_calls")
            open_calls = {c.id for c in m.tool_calls or []}
        elif m.role == "tool":
            if m.tool_call_id not in open_calls:
                problems.append(f"messages[{i}].tool_call_id: {m.tool_call_id!r} answers no tool call of the "
                                "assistant turn before it")
        else:
            open_calls = set()
    if req.messages[-1].role == "assistant":
        problems.append(f"messages[{len(req.messages) - 1}]: the last turn is the assistant's; end with a user "
                        "or tool turn (assistant prefill is not supported)")
    if isinstance(req.tool_choice, NamedToolChoice) and req.tool_choice.function.name not in names:
        problems.append(f"tool_choice.function.name: {req.tool_choice.function.name!r} is not among the tools")
    elif req.tool_choice in ("required",) and not names:
        problems.append("tool_choice: 'required' needs tools")
    rf = req.response_format
    if rf is not None and rf.type == "json_schema" and (rf.json_schema is None or rf.json_schema.schema_ is None):
        problems.append("response_format.json_schema.schema: required for type json_schema")
    problems += _json_schema_problems(req) + _stop_problems(req.stop)
    if req.stream_options is not None and not req.stream:
        problems.append("stream_options: only allowed when stream is true")
    if req.n not in (None, 1):
        problems.append(f"n: {REFUSED['n']}")
    if req.logprobs or req.top_logprobs is not None:
        problems.append(f"logprobs: {REFUSED['logprobs']}")
    if req.max_tokens is not None and req.max_completion_tokens is not None and \
            req.max_tokens != req.max_completion_tokens:
        problems.append("max_tokens: differs from max_completion_tokens; send one")
    return problems


def _json_schema_problems(req: ChatRequest) -> list[str]:
    """The request's JSON Schemas: each usable, a tool's admitting the object its arguments are, and
    all together within what checking them may cost (they are checked on the gateway's event loop)."""
    found = [(f"tools[{i}].function.parameters", t.function.parameters) for i, t in enumerate(req.tools or [])
             if t.function.parameters is not None]
    rf = req.response_format
    if rf is not None and rf.type == "json_schema" and rf.json_schema is not None and rf.json_schema.schema_ is not None:
        found.append(("response_format.json_schema.schema", rf.json_schema.schema_))
    size = sum(schema_size(schema) for _, schema in found)
    if size > MAX_SIZE:
        return [f"{'tools' if req.tools else found[0][0]}: the request's JSON Schemas come to {size} units of JSON "
                f"values and patterns; at most {MAX_SIZE} are checked per request (send fewer or smaller schemas)"]
    problems = []
    for where, schema in found:
        found_here = schema_problems(schema, where)
        kind = schema.get("type", "object")
        if not found_here and where.startswith("tools") and "object" not in (kind if isinstance(kind, list) else [kind]):
            found_here = [f"{where}.type: {kind!r}, but a function's arguments are a JSON object; use \"type\": \"object\""]
        problems += found_here
    return problems


def _stop_problems(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else stop or []
    if len(stops) > MAX_STOPS:
        return [f"stop: {len(stops)} sequences; at most {MAX_STOPS}"]
    problems = []
    for i, sequence in enumerate(stops):
        where = "stop" if isinstance(stop, str) else f"stop[{i}]"
        if not sequence:
            problems.append(f"{where}: empty; a stop sequence needs at least one character")
        elif len(sequence) > MAX_STOP_CHARS:
            problems.append(f"{where}: {len(sequence)} characters; at most {MAX_STOP_CHARS}")
    return problems


def _tool(tool: Tool) -> dict:
    """The tool as members are sent it: without ``parameters`` (OpenAI allows it), it takes none."""
    out = tool.model_dump(exclude_none=True)
    out["function"].setdefault("parameters", {"type": "object", "properties": {}})
    return out


def parse_request(raw: bytes) -> Job:
    """The validated request as a :class:`Job`, or :class:`BadRequest` with every problem."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than Python parses
        raise BadRequest([f"body: not valid JSON ({exc if isinstance(exc, ValueError) else 'nested too deep'})"]) \
            from None
    where = _surrogate_path(body)
    if where:
        raise BadRequest([f"{where}: text with a lone UTF-16 surrogate (not encodable as UTF-8)"])
    try:
        req = ChatRequest.model_validate(body)
    except ValidationError as exc:
        raise BadRequest(_problems(exc)) from None
    problems = _conversation_problems(req)
    if problems:
        raise BadRequest(problems)
    wire = [m.model_dump(exclude_unset=True, by_alias=True) for m in req.messages]
    params = {k: v for k, v in req.model_dump(include={"temperature", "top_p", "stop", "seed", "presence_penalty",
                                                        "frequency_penalty"}).items() if v is not None}
    max_tokens = req.max_tokens or req.max_completion_tokens
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    schema = None
    if req.response_format is not None and req.response_format.type != "text":
        schema = req.response_format.json_schema.schema_ if req.response_format.type == "json_schema" else {}
    tool_choice = req.tool_choice.model_dump() if isinstance(req.tool_choice, NamedToolChoice) else req.tool_choice
    return Job(model=req.model, messages=[_normalised(m) for m in req.messages], wire=wire,
               tools=[_tool(t) for t in req.tools] if req.tools else None,
               params=params, tool_choice=tool_choice, parallel_tool_calls=req.parallel_tool_calls is not False,
               response_format=req.response_format.model_dump(exclude_none=True, by_alias=True)
               if req.response_format else None, schema=schema, stream=bool(req.stream),
               include_usage=bool(req.stream_options and req.stream_options.include_usage))
