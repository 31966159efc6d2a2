"""The hostile probe's schema and stop attacks, each as the raw body ``parse_request`` reads: what
can never succeed is a 400 naming the field before any member is called, and what is accepted is
validated in linear time (finetune/pool/schemas.py)."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import jsonschema
import pytest
import referencing
from pydantic import BaseModel

from finetune.pool.request import MAX_STOP_CHARS, BadRequest, parse_request
from finetune.pool.schemas import MAX_SIZE, _metaschema, schema_problems, time_limit, validator

ASK = [{"role": "user", "content": "Show me utils.py."}]
PARAMS = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
FREEZE = {"type": "string", "minLength": 27, "maxLength": 27, "not": {"pattern": "^(.*)*x$"}}


def body(**fields) -> bytes:
    return json.dumps({"model": "pool", "messages": ASK, **fields}).encode()


def tools(parameters, **extra) -> list[dict]:
    function = {"name": "read_file", **({} if parameters is ... else {"parameters": parameters}), **extra}
    return [{"type": "function", "function": function}]


def answer_format(schema) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def refused(raw: bytes) -> list[str]:
    with pytest.raises(BadRequest) as err:
        parse_request(raw)
    return err.value.problems


def _best_of_3(fn) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def test_a_backtracking_pattern_cannot_freeze_validation():
    job = parse_request(body(response_format=answer_format({**FREEZE, "minLength": 40, "maxLength": 40})))
    start = time.perf_counter()
    with time_limit(5.0):
        assert validator(job.schema).is_valid("a" * 40)  # 2^40 steps for a backtracking engine
        assert not validator(job.schema).is_valid("a" * 39 + "x")
    assert time.perf_counter() - start < 1.0
    # What jsonschema's own `pattern` (Python's re) does: 4 more characters, ~16x the time.
    slow = re.compile("^(.*)*x$")
    short, long = (_best_of_3(lambda n=n: slow.search("a" * n)) for n in (14, 18))
    assert long > 4 * short, (short, long)


def test_patterns_are_searched_as_ecma_262_writes_them():
    check = validator({"type": "object", "properties": {"word": {"pattern": "b"}, "accent": {"pattern": "^\\u00e9+$"},
                                                        "emoji": {"pattern": "^\\uD83D\\uDE00$"}}})
    assert check.is_valid({"word": "abc", "accent": "éé", "emoji": "😀"})  # unanchored: search, not match
    assert [e.message for e in check.iter_errors({"word": "xyz"})] == ["'xyz' does not match 'b'"]
    assert validator({"pattern": "a"}).is_valid("\ud800a")  # a lone surrogate (json.loads makes them) is data


def test_pattern_keywords_behave_as_jsonschemas_own():
    schema = {"type": "object", "properties": {"id": {"type": "integer"}}, "patternProperties": {"^x-": {"type": "string"},
              "_n$": {"type": "number"}}, "additionalProperties": False, "propertyNames": {"pattern": "^[a-z_-]+$"}}
    plain = jsonschema.Draft202012Validator(schema)
    for value in [{"id": 1, "x-a": "s", "b_n": 2}, {"x-a": 5, "b_n": "2"}, {"other": 1, "Up": 2}, {"id": "1", "c": []},
                  "not an object"]:
        ours = sorted((list(e.absolute_path), e.message) for e in validator(schema).iter_errors(value))
        assert ours == sorted((list(e.absolute_path), e.message) for e in plain.iter_errors(value)), value
    open_schema = {"properties": {"a": {}}, "additionalProperties": {"type": "integer"}}
    assert [e.message for e in validator(open_schema).iter_errors({"a": "s", "b": "t"})] == \
        [e.message for e in jsonschema.Draft202012Validator(open_schema).iter_errors({"a": "s", "b": "t"})]


def test_patterns_re2_cannot_match_in_linear_time_are_a_400():
    problems = refused(body(response_format=answer_format({"type": "object", "properties": {
        "twice": {"type": "string", "pattern": "^(a+)\\1$"}, "ahead": {"type": "string", "pattern": "^(?=x)x+$"},
        "huge": {"type": "string", "pattern": "(.?){600}"}}, "patternProperties": {"(?<!a)b": {}}})))
    where = "response_format.json_schema.schema"
    assert [p.split(":")[0] for p in problems] == [f"{where}.patternProperties.(?<!a)b", f"{where}.properties.twice.pattern",
                                                   f"{where}.properties.ahead.pattern", f"{where}.properties.huge.pattern"]
    assert "RE2" in problems[1] and "backreferences and lookaround" in problems[1]
    assert "5404 RE2 instructions; at most 5000" in problems[3]


def test_a_tool_without_parameters_is_taken_as_no_arguments():
    for raw in (body(tools=tools(...)), body(tools=tools(None, description="The time."))):
        job = parse_request(raw)
        assert job.tools[0]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert parse_request(body(tools=tools(PARAMS))).tools[0]["function"]["parameters"] == PARAMS


def test_a_dangling_ref_is_a_400_naming_the_field(monkeypatch):
    def fetch(*args, **kwargs):
        raise AssertionError("a $ref was fetched")
    monkeypatch.setattr(urllib.request, "urlopen", fetch)
    defined = {**PARAMS, "$defs": {"path": {"type": "string"}}, "properties": {"path": {"$ref": "#/$defs/path"}}}
    assert parse_request(body(tools=tools(defined))).tools[0]["function"]["parameters"] == defined
    for ref in ("#/$defs/missing", "https://example.invalid/path.json", "path.json"):
        problems = refused(body(tools=tools({**defined, "properties": {"path": {"$ref": ref}}})))
        assert problems == [f"tools[0].function.parameters.properties.path.$ref: {ref!r} does not resolve inside this "
                            "schema (remote references are never fetched; put the definition under $defs and refer to "
                            "it as '#/$defs/NAME')"]
    outside = refused(body(response_format=answer_format({"x-defs": {"a": {}}, "$ref": "#/x-defs/a"})))
    assert outside[0].startswith("response_format.json_schema.schema.$ref: '#/x-defs/a' points at a part")


def test_a_schema_invalid_against_the_metaschema_is_a_400_naming_the_field():
    problems = refused(body(tools=tools({**PARAMS, "required": 5}) + [
        {"type": "function", "function": {"name": "run", "parameters": {"type": "object", "properties": {
            "target": {"type": "strnig"}, "tries": {"type": ["integer", "nul"], "minimum": "1"}}}}}]))
    assert problems == ["tools[0].function.parameters.required: 5 is not of type 'array'",
                        "tools[1].function.parameters.properties.target.type: 'strnig' is not one of ['array', "
                        "'boolean', 'integer', 'null', 'number', 'object', 'string']",
                        "tools[1].function.parameters.properties.tries.minimum: '1' is not of type 'number'",
                        "tools[1].function.parameters.properties.tries.type[1]: 'nul' is not one of ['array', "
                        "'boolean', 'integer', 'null', 'number', 'object', 'string']"]


def test_a_ref_loop_or_endless_chain_is_a_400():
    assert refused(body(response_format=answer_format({"$ref": "#"}))) == [
        "response_format.json_schema.schema: a $ref loop that never moves into the value: validation would recurse "
        "forever"]
    mutual = {"$defs": {"a": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/b"}]}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}},
              "properties": {"x": {"$ref": "#/$defs/a"}}}
    assert "a $ref loop" in refused(body(response_format=answer_format(mutual)))[0]
    chain = {"$defs": {f"a{i}": {"$ref": f"#/$defs/a{i + 1}"} for i in range(100)} | {"a100": {"type": "string"}},
             "$ref": "#/$defs/a0"}
    assert "a chain of over 64 subschemas" in refused(body(response_format=answer_format(chain)))[0]
    # a loop through the value's parts ends with the value: a tree of any depth is fine
    tree = {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}}
    assert parse_request(body(response_format=answer_format(tree))).schema == tree


def test_tool_parameters_must_admit_an_object():
    assert refused(body(tools=tools({"type": "string"}))) == [
        "tools[0].function.parameters.type: 'string', but a function's arguments are a JSON object; use "
        "\"type\": \"object\""]
    for fine in ({"type": ["object", "null"], "properties": {}}, {"properties": {"path": {"type": "string"}}}):
        parse_request(body(tools=tools(fine)))
    parse_request(body(response_format=answer_format({"type": "string"})))  # an answer may be any JSON


def test_eighty_thousand_stop_strings_are_refused():
    start = time.perf_counter()
    assert refused(body(stop=["s"] * 80_000)) == ["stop: 80000 sequences; at most 4"]
    assert time.perf_counter() - start < 1.0
    assert refused(body(stop=["a", "b", "c", "d", "e"])) == ["stop: 5 sequences; at most 4"]
    assert refused(body(stop="")) == ["stop: empty; a stop sequence needs at least one character"]
    assert refused(body(stop=["\n\n", "", "x" * (MAX_STOP_CHARS + 1)])) == [
        "stop[1]: empty; a stop sequence needs at least one character",
        f"stop[2]: {MAX_STOP_CHARS + 1} characters; at most {MAX_STOP_CHARS}"]
    assert parse_request(body(stop=["\n\n", "</answer>", "Observation:", "x" * MAX_STOP_CHARS])).params["stop"][1] \
        == "</answer>"


def test_schemas_too_large_to_check_are_refused_at_once():
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(MAX_SIZE // 4)}}
    start = time.perf_counter()
    problems = refused(body(tools=tools(wide), response_format=answer_format(wide)))
    assert time.perf_counter() - start < 1.0
    assert len(problems) == 1 and problems[0].startswith("tools: the request's JSON Schemas come to ")
    deep: dict = {}
    for _ in range(100):
        deep = {"items": deep}
    assert refused(body(response_format=answer_format(deep))) == [
        "response_format.json_schema.schema: nested 101 levels deep; at most 64"]


def test_unevaluated_properties_with_pattern_properties_are_refused():
    # jsonschema's unevaluatedProperties matches patternProperties with Python's re, not through the validator's keywords
    problems = refused(body(response_format=answer_format({"patternProperties": {"^(.*)*x$": {}},
                                                           "unevaluatedProperties": False})))
    assert problems[0].startswith("response_format.json_schema.schema.unevaluatedProperties: not supported together")


def test_nested_any_of_stops_at_the_time_limit():
    # Tiny, valid, and 2^30 checks for a value that fails every branch: only a time limit ends it.
    defs = {f"a{i}": {"anyOf": [{"$ref": f"#/$defs/a{i + 1}"}, {"$ref": f"#/$defs/a{i + 1}"}]} for i in range(30)}
    schema = {"$defs": {**defs, "a30": {"type": "string"}}, "$ref": "#/$defs/a0"}
    job = parse_request(body(response_format=answer_format(schema)))
    start = time.perf_counter()
    with pytest.raises(TimeoutError), time_limit(0.2):
        list(validator(job.schema).iter_errors(5))
    assert time.perf_counter() - start < 1.0
    assert validator(job.schema).is_valid("fine")  # no limit outside the block


def test_the_schemas_clients_send_are_accepted():
    class Step(BaseModel):
        tool: str
        args: dict[str, str] = {}

    class Plan(BaseModel):
        steps: list[Step]
        done: bool | None = None

    zod = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
           "properties": {"path": {"type": "string", "pattern": "^[\\w./-]+$", "description": "File path."},
                          "mode": {"type": "string", "enum": ["r", "w"], "default": "r"}}, "required": ["path"]}
    job = parse_request(body(tools=tools(zod), response_format=answer_format(Plan.model_json_schema())))
    assert job.schema == Plan.model_json_schema() and job.tools[0]["function"]["parameters"] == zod
    assert validator(job.schema).is_valid({"steps": [{"tool": "read_file", "args": {"path": "u.py"}}]})
    assert not validator(zod).is_valid({"path": "a b"})


def test_the_flat_metaschema_gives_the_official_verdicts():
    official = jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA,
                                               registry=referencing.Registry())
    corpus = [{}, True, {"$defs": {"x": {"type": ["string", "null"]}}, "anyOf": [{"$ref": "#/$defs/x"}, {"minimum": 0}]},
              {"type": "strnig"}, {"type": ["string", "strnig"]}, {"type": []}, {"required": 5}, {"required": ["a", "a"]},
              {"properties": {"a": 5}}, {"items": [{"type": "string"}]}, {"prefixItems": []}, {"anyOf": {}},
              {"minLength": -1}, {"minLength": 1.5}, {"enum": 5}, {"multipleOf": 0}, {"$id": "http://x#frag"},
              {"$anchor": "1bad"}, {"$ref": 5}, {"definitions": {"a": 5}}, {"dependencies": {"a": 5}},
              {"dependentRequired": {"a": [1]}}, {"if": 5, "then": 5, "else": 5}, {"contains": 1, "minContains": -1},
              {"unevaluatedProperties": 5}, {"title": 5, "deprecated": 5, "examples": 1}, {"contentEncoding": 5},
              {"$vocabulary": {"x": 5}}, {"$dynamicRef": 5}, {"$recursiveRef": 5},
              {"properties": {"a": {"properties": {"b": {"type": "x", "maximum": "1"}}}}}, 5, "x"]
    for schema in corpus:
        # the official one repeats a type error once per vocabulary; the flat one says it once
        assert {(tuple(e.absolute_path), e.message) for e in _metaschema().iter_errors(schema)} == \
            {(tuple(e.absolute_path), e.message) for e in official.iter_errors(schema)}, schema
    assert schema_problems(FREEZE, "s") == []
