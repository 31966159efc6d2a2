"""Tool-use pairs: every rejected call is broken the way its label says; chosen is the trace's."""

from __future__ import annotations

import json
import re

from finetune.data.formats import RecordError, to_canonical
from finetune.data.validate import _check_call, validate_trace
from finetune.judge.data import JudgeDataOptions, build
from finetune.judge.tools import trace_pairs
from tests.conftest import REPO

TOOLS = [
    {"type": "function", "function": {"name": "read_file", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}, "start": {"type": "integer"}},
        "required": ["path"]}}},
    {"type": "function", "function": {"name": "run_tests", "parameters": {
        "type": "object", "properties": {"verbose": {"type": "boolean"}}}}},
]
TRACE = {"tools": TOOLS, "messages": [
    {"role": "user", "content": "Show me utils.py from line 10."},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "read_file",
                                                      "arguments": json.dumps({"path": "utils.py", "start": 10})}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "def f(): ..."},
    {"role": "assistant", "content": "It defines one function, f."},
]}
CALL = re.compile(r"<tool_call>(.*)</tool_call>", re.DOTALL)


def test_each_corruption_is_what_its_label_says():
    trace = validate_trace(to_canonical(TRACE, "openai"))
    tools = {t["name"]: t for t in trace["tools"]}
    pairs = trace_pairs(trace)
    assert sorted(p["reason"] for p in pairs) == sorted([
        "wrong_function", "missing_required_argument", "wrong_argument_type", "unknown_argument", "malformed_json",
        "call_instead_of_answer"])
    for p in pairs:
        chosen, rejected = p["chosen"][0]["content"], p["rejected"][0]["content"]
        assert chosen != rejected
        assert "read_file" in p["prompt"][0]["content"] and p["prompt"][0]["role"] == "system"
        if p["reason"] == "call_instead_of_answer":
            assert chosen == "It defines one function, f." and p["prompt"][-1]["role"] == "tool"
            continue
        assert chosen == '<tool_call>{"name": "read_file", "arguments": {"path": "utils.py", "start": 10}}</tool_call>'
        body = CALL.search(rejected).group(1)
        if p["reason"] == "malformed_json":
            try:
                json.loads(body)
                raise AssertionError("malformed JSON parsed")
            except json.JSONDecodeError:
                continue
        call = json.loads(body)
        if p["reason"] == "wrong_function":
            assert call["name"] == "run_tests"
            continue
        try:
            _check_call(call, tools, "test")
            raise AssertionError(f"{p['reason']} passed the checker")
        except RecordError as exc:
            assert exc.reason == p["reason"]


def test_sample_traces_give_tool_pairs_and_rejects(tmp_path):
    sample = REPO / "data" / "sample"
    files = [sample / f for f in ("openai.jsonl", "hermes.jsonl", "glaive.jsonl", "xlam.json", "swe_agent.jsonl")]
    stats = build(JudgeDataOptions(out=tmp_path / "out", traces=files))
    assert stats["traces"] == {"in": 17, "ok": 12, "rejected": 5}  # data prepare's 6 rejects less its dedup
    assert stats["pairs"]["tools"] == sum(stats["tool_corruptions"].values()) == sum(stats["splits"].values())
    assert set(stats["tool_corruptions"]) == {"wrong_function", "missing_required_argument", "wrong_argument_type",
                                              "unknown_argument", "malformed_json", "call_instead_of_answer"}
    rejects = (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()
    assert len(rejects) == 5
