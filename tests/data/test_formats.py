"""Each trace layout, from fixtures written here, becomes the same canonical trace."""

from __future__ import annotations

import json

import pytest

from finetune import RecordError
from finetune.data.sources import read_records
from finetune.data.traces.formats import detect_format, to_canonical
from finetune.data.traces.validate import validate_trace
from tests.conftest import write_jsonl

WEATHER = {"name": "get_weather", "description": "Weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                          "required": ["city"]}}

# The one conversation every layout below encodes.
EXPECTED = {
    "tools": [WEATHER],
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"id": "call_0", "name": "get_weather", "arguments": {"city": "Paris", "days": 2}}]},
        {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_0"},
        {"role": "assistant", "content": "21 degrees."},
    ],
}

OPENAI = {"tools": [{"type": "function", "function": WEATHER}], "messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 2}'}}]},
    {"role": "tool", "tool_call_id": "call_0", "content": {"temp": 21}},
    {"role": "assistant", "content": "21 degrees."}]}

SHAREGPT = {"conversations": [
    {"from": "system", "value": "Be brief. <tools> [{'type': 'function', 'function': " + repr(WEATHER) + "}] </tools>"},
    {"from": "human", "value": "Weather in Paris?"},
    {"from": "gpt", "value": "<tool_call>\n{'arguments': {'city': 'Paris', 'days': 2}, 'name': 'get_weather'}\n</tool_call>"},
    {"from": "tool", "value": '<tool_response>\n{"temp": 21}\n</tool_response>'},
    {"from": "gpt", "value": "21 degrees."}]}

GLAIVE = {
    "system": "SYSTEM: Be brief. " + json.dumps(WEATHER, indent=4),
    "chat": "USER: Weather in Paris?\n\n\nASSISTANT: <functioncall> {\"name\": \"get_weather\", \"arguments\": "
            "'{\"city\": \"Paris\", \"days\": 2}'} <|endoftext|>\n\n\nFUNCTION RESPONSE: {\"temp\": 21}\n\n\n"
            "ASSISTANT: 21 degrees. <|endoftext|>\n\n\n"}

SWE = {"trajectory": [
    {"role": "system", "text": "Be brief."}, {"role": "user", "text": "Weather in Paris?"},
    {"role": "ai", "text": "", "tool_calls": [{"id": "call_0", "function": {"name": "get_weather",
                                                                          "arguments": {"city": "Paris", "days": 2}}}]},
    {"role": "tool", "text": '{"temp": 21}', "tool_call_id": "call_0"},
    {"role": "ai", "text": "21 degrees."}], "tools": [WEATHER]}


@pytest.mark.parametrize("record,fmt", [(OPENAI, "openai"), (SHAREGPT, "sharegpt"), (GLAIVE, "glaive"), (SWE, "swe_agent")])
def test_layouts_become_the_same_canonical_trace(record, fmt):
    assert detect_format(record) == fmt
    trace = validate_trace(to_canonical(record, fmt))
    if fmt == "glaive":  # Glaive's system string keeps its text before the schema
        assert trace["messages"][0]["content"] == "Be brief."
    assert trace == EXPECTED


def test_xlam_flat_parameters_and_optional_types():
    rec = {"id": 7, "query": "Lint a.py strictly, and sum [1, 2.5].",
           "tools": json.dumps([
               {"name": "lint", "description": "Lint.", "parameters": {
                   "path": {"type": "str", "description": "File"},
                   "profile": {"type": "str, optional", "description": "Profile", "default": "default"}}},
               {"name": "math.sum", "description": "Sum.", "parameters": {"xs": {"type": "List[float]"}}}]),
           "answers": json.dumps([{"name": "lint", "arguments": {"path": "a.py", "profile": "strict"}},
                                  {"name": "math.sum", "arguments": {"xs": [1, 2.5]}}])}
    assert detect_format(rec) == "xlam"
    trace = validate_trace(to_canonical(rec, "xlam"))
    assert trace["id"] == "7"
    lint, msum = trace["tools"]
    assert lint["parameters"]["properties"]["profile"]["type"] == "string"
    assert lint["parameters"]["required"] == ["path"]
    assert msum["name"] == "math.sum" and msum["parameters"]["properties"]["xs"]["type"] == "array"
    assert [c["name"] for c in trace["messages"][1]["tool_calls"]] == ["lint", "math.sum"]


def test_messy_schema_types_are_normalised():
    rec = {"messages": [{"role": "user", "content": "x"},
                        {"role": "assistant", "content": "", "tool_calls": [
                            {"function": {"name": "f", "arguments": {"a": {"k": 1}, "b": 1.5, "c": None}}}]}],
           "tools": [{"name": "f", "parameters": {"type": "dict", "properties": {
               "a": {"type": "dict"}, "b": {"type": "float"}, "c": {"type": "Optional[int]"}}, "required": ["a"]}}]}
    trace = validate_trace(to_canonical(rec, "openai"))
    props = trace["tools"][0]["parameters"]["properties"]
    assert (props["a"]["type"], props["b"]["type"], props["c"]["type"]) == ("object", "number", ["integer", "null"])
    assert trace["tools"][0]["parameters"]["required"] == ["a"]


@pytest.mark.parametrize("mutate,reason", [
    (lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments='{"city": "Par'), "malformed_json"),
    (lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments='["Paris"]'), "arguments_not_object"),
    (lambda r: r["messages"][2]["tool_calls"][0]["function"].update(name="get_wether"), "unknown_tool"),
    (lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments='{"days": 2}'), "missing_required_argument"),
    (lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments='{"city": "P", "zip": 1}'), "unknown_argument"),
    (lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments='{"city": 5}'), "wrong_argument_type"),
    (lambda r: r["messages"][3].update(tool_call_id="nope"), "orphan_tool_result"),
    (lambda r: r["messages"].insert(1, {"role": "tool", "content": "x"}), "orphan_tool_result"),
    (lambda r: r["messages"][4].update(content="  "), "empty_assistant_turn"),
    (lambda r: r["messages"].insert(5, {"role": "assistant", "content": "again"}), "bad_role_order"),
    (lambda r: r["messages"].insert(3, {"role": "user", "content": "hurry"}), "bad_role_order"),
    (lambda r: r["messages"].append({"role": "system", "content": "late"}), "bad_role_order"),
    (lambda r: r["messages"][1].update(role="narrator"), "unknown_role"),
    (lambda r: r["tools"][0]["function"]["parameters"]["properties"]["city"].update(type="quantity"), "bad_tool_schema"),
    (lambda r: r.update(messages=[r["messages"][0], r["messages"][1]]), "no_assistant_turn"),
    (lambda r: r["messages"][1].update(content=[{"type": "image_url", "image_url": "x"}]), "unsupported_content"),
])
def test_each_problem_has_its_reason(mutate, reason):
    rec = json.loads(json.dumps(OPENAI))
    mutate(rec)
    with pytest.raises(RecordError) as err:
        validate_trace(to_canonical(rec, "openai"))
    assert err.value.reason == reason, err.value.detail


def test_tool_result_without_id_matches_the_single_open_call():
    rec = json.loads(json.dumps(OPENAI))
    del rec["messages"][3]["tool_call_id"]
    assert validate_trace(to_canonical(rec, "openai")) == EXPECTED


def test_wrong_layout_override_is_a_record_error():
    with pytest.raises(RecordError) as err:
        to_canonical(OPENAI, "glaive")
    assert err.value.reason == "wrong_layout" and "messages" in err.value.detail


def test_readers_keep_locations(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [OPENAI, "", "{broken", SHAREGPT])
    got = list(read_records(path))
    assert [(r.line, r.error is None) for r in got] == [(1, True), (3, False), (4, True)]
    assert got[1].record == "{broken" and "invalid JSON" in got[1].error

    (tmp_path / "b.json").write_text(json.dumps([OPENAI, GLAIVE]))
    assert [r.line for r in read_records(tmp_path / "b.json")] == [1, 2]

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"query": "q", "tools": "[]", "answers": "[]"}] * 3), tmp_path / "c.parquet")
    assert [r.record["query"] for r in read_records(tmp_path / "c.parquet")] == ["q"] * 3

    from datasets import Dataset

    Dataset.from_list([{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}]
                      ).save_to_disk(str(tmp_path / "ds"))
    [row] = list(read_records(tmp_path / "ds"))
    assert validate_trace(to_canonical(row.record, "sharegpt"))["messages"][1] == {"role": "assistant", "content": "yo"}


def test_hermes_is_a_name_for_the_sharegpt_layout():
    assert validate_trace(to_canonical(SHAREGPT, "hermes")) == EXPECTED


def _hermes(tools: list[dict], *turns) -> dict:
    system = {"from": "system", "value": "<tools> " + json.dumps([{"type": "function", "function": t} for t in tools])
              + " </tools>"}
    return {"conversations": [system, *({"from": f, "value": v} for f, v in turns)]}


def _block(tag: str, obj) -> str:
    return f"<{tag}>\n{json.dumps(obj)}\n</{tag}>"


READ = {"name": "read_file", "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                                            "required": ["path"]}}


def test_parallel_tool_responses_in_one_turn_match_their_calls_by_name_then_order():
    calls = _block("tool_call", {"name": "get_weather", "arguments": {"city": "Paris"}}) + "\n" + \
        _block("tool_call", {"name": "read_file", "arguments": {"path": "a.txt"}}) + "\n" + \
        _block("tool_call", {"name": "get_weather", "arguments": {"city": "Oslo"}})
    # Answered out of order: the file first (by name), then the two weather calls in call order.
    responses = _block("tool_response", {"name": "read_file", "content": "hello"}) + "\n" + \
        _block("tool_response", {"name": "get_weather", "content": {"temp": 21}}) + "\n" + \
        _block("tool_response", {"temp": -3})  # unnamed: the oldest call still open
    rec = _hermes([WEATHER, READ], ("human", "Weather in Paris and Oslo, and read a.txt."), ("gpt", calls),
                  ("tool", responses), ("gpt", "21 and -3 degrees; a.txt says hello."))
    trace = validate_trace(to_canonical(rec, "hermes"))
    call_ids = {c["arguments"].get("city") or c["arguments"]["path"]: c["id"] for c in trace["messages"][2]["tool_calls"]}
    answered = [(m["tool_call_id"], m["content"]) for m in trace["messages"][3:6]]
    assert answered == [(call_ids["a.txt"], '{"name": "read_file", "content": "hello"}'),
                        (call_ids["Paris"], '{"name": "get_weather", "content": {"temp": 21}}'),
                        (call_ids["Oslo"], '{"temp": -3}')]


def test_a_response_naming_no_open_call_is_rejected_with_the_names():
    rec = _hermes([WEATHER, READ], ("human", "Read a.txt."),
                  ("gpt", _block("tool_call", {"name": "read_file", "arguments": {"path": "a.txt"}})),
                  ("tool", _block("tool_response", {"name": "get_weather", "content": 1})), ("gpt", "Done."))
    with pytest.raises(RecordError) as err:
        to_canonical(rec, "hermes")
    assert err.value.reason == "orphan_tool_result"
    assert "'get_weather'" in err.value.detail and "['read_file']" in err.value.detail


def test_leading_system_turns_merge_in_order_and_keep_the_tools():
    rec = _hermes([WEATHER], ("system", "You are the on-call assistant."), ("human", "Weather in Paris?"),
                  ("gpt", "Sunny."))
    rec["conversations"][0]["value"] = "Tools prompt. " + rec["conversations"][0]["value"]
    trace = validate_trace(to_canonical(rec, "hermes"))
    assert trace["messages"][0] == {"role": "system", "content": "Tools prompt.\n\nYou are the on-call assistant."}
    assert [t["name"] for t in trace["tools"]] == ["get_weather"]
    assert [m["role"] for m in trace["messages"]] == ["system", "user", "assistant"]
    late = json.loads(json.dumps(OPENAI))
    late["messages"].insert(2, {"role": "system", "content": "late"})  # after a user turn: still an error
    with pytest.raises(RecordError, match="system message after the start"):
        validate_trace(to_canonical(late, "openai"))


def test_a_null_user_turn_has_its_own_reason():
    rec = json.loads(json.dumps(OPENAI))
    rec["messages"][1]["content"] = None
    with pytest.raises(RecordError) as err:
        to_canonical(rec, "openai")
    assert err.value.reason == "null_user_content" and "messages[1]" in err.value.detail
    with pytest.raises(RecordError) as err:
        to_canonical(_hermes([], ("human", None), ("gpt", "Hi.")), "hermes")
    assert err.value.reason == "null_user_content" and "conversations[1]" in err.value.detail


@pytest.mark.parametrize("declared,normalised", [
    ("String", "string"), ("Boolean", ["boolean", "string"]), ("long", ["integer", "string"]),
    ("ArrayList", ["array", "string"]), ("ArrayList<String>", ["array", "string"]), ("String[]", ["array", "string"]),
    ("HashMap", ["object", "string"]), ("Map<String, Integer>", ["object", "string"]), ("List<Integer>", ["array", "string"]), ("any", None), ("", None),
    ("Optional[int]", ["integer", "null"]), ("List[str]", "array"), ("Dict", "object"),
])
def test_other_languages_type_names_map_to_json_types(declared, normalised):
    from finetune.data.traces.validate import normalise_tool

    tool = normalise_tool({"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": declared}}}}, "t")
    assert tool["parameters"]["properties"]["x"].get("type") == normalised


def test_source_code_values_for_java_types_are_kept_verbatim():
    job = {"name": "schedule_job", "parameters": {"type": "object", "required": ["cron", "retries"], "properties": {
        "cron": {"type": "String"}, "retries": {"type": "long"}, "tags": {"type": "ArrayList"},
        "config": {"type": "any"}}}}
    code = 'new ArrayList<>(List.of("nightly"))'
    rec = {"tools": [job], "messages": [{"role": "user", "content": "Schedule it."}, {"role": "assistant", "tool_calls": [
        {"function": {"name": "schedule_job", "arguments": {"cron": "0 3 * * *", "retries": 3, "tags": code,
                                                              "config": {"a": [1]}}}}]}]}
    call = validate_trace(to_canonical(rec, "openai"))["messages"][1]["tool_calls"][0]
    assert call["arguments"]["tags"] == code and call["arguments"]["retries"] == 3
    rec["messages"][1]["tool_calls"][0]["function"]["arguments"]["cron"] = 5  # String is still a string
    with pytest.raises(RecordError) as err:
        validate_trace(to_canonical(rec, "openai"))
    assert err.value.reason == "wrong_argument_type"


def test_the_shipped_public_layout_sample_adds_up():
    from tests.conftest import REPO

    got = {}
    for raw in read_records(REPO / "data" / "sample" / "hermes-fc.jsonl"):
        try:
            trace = validate_trace(to_canonical(raw.record, "hermes"))
            got[raw.record["id"]] = "ok"
            assert trace["messages"][0]["role"] == "system" and len(trace["tools"]) >= 1
        except RecordError as exc:
            got[raw.record["id"]] = exc.reason
    assert got == {"hfc-1": "ok", "hfc-2": "ok", "hfc-3": "ok", "hfc-4": "ok", "hfc-5": "null_user_content",
                   "hfc-6": "orphan_tool_result"}


def test_source_specs_name_unknown_layouts(tmp_path):
    from finetune import FinetuneError
    from finetune.data.prepare import parse_source

    assert parse_source("traces.jsonl:hermes") == ("traces.jsonl", "hermes")
    assert parse_source("traces.jsonl") == ("traces.jsonl", "auto")
    with pytest.raises(FinetuneError, match="unknown layout 'hermez'; layouts: auto, openai, sharegpt, hermes"):
        parse_source("traces.jsonl:hermez")
    odd = tmp_path / "a:b"  # a colon inside a real path is a path
    odd.write_text("")
    assert parse_source(str(odd)) == (str(odd), "auto")
