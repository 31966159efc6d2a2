"""Each trace layout, from fixtures written here, becomes the same canonical trace."""

from __future__ import annotations

import json

import pytest

from finetune.data.formats import RecordError, detect_format, to_canonical
from finetune.data.sources import read_records
from finetune.data.validate import validate_trace
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
