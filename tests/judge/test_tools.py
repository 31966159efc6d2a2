"""Tool-use pairs: every rejected call is broken the way its label says; chosen is the trace's."""

from __future__ import annotations

import json
import re
from collections import Counter

from finetune import RecordError
from finetune.contracts.toolcalls import check_call
from finetune.data.traces.formats import to_canonical
from finetune.data.traces.validate import validate_trace
from finetune.judge.config import JudgeDataOptions
from finetune.judge.data import build
from finetune.judge.tools import VALID_BUT_WRONG, trace_pairs
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
        "nearest_function", "wrong_value", "dropped_optional", "answer_instead_of_call", "call_instead_of_answer",
        "no_fitting_tool"])
    for p in pairs:
        chosen, rejected = p["chosen"][0]["content"], p["rejected"][0]["content"]
        assert chosen != rejected
        if p["reason"] == "no_fitting_tool":  # read_file taken away: a reply beats calling what is left
            assert "read_file" not in p["prompt"][0]["content"] and "run_tests" in p["prompt"][0]["content"]
            assert p["prompt"][1:] == [{"role": "user", "content": "Show me utils.py from line 10."}]
            assert "<tool_call>" not in chosen and p["group"] == "read_file"
            # verbose is required (no `required` list: every property without a default is); no boolean
            # was said, so it gets the placeholder.
            assert json.loads(CALL.search(rejected).group(1)) == {"name": "run_tests", "arguments": {"verbose": True}}
            continue
        assert "read_file" in p["prompt"][0]["content"] and p["prompt"][0]["role"] == "system"
        if p["reason"] == "call_instead_of_answer":
            assert chosen == "It defines one function, f." and p["prompt"][-1]["role"] == "tool"
            needless = json.loads(CALL.search(rejected).group(1))
            assert check_call(needless, tools, "test")
            # Its arguments come from what was said, not placeholders.
            assert needless["arguments"] in ({"path": "utils.py"}, {"verbose": True}), needless
            continue
        assert chosen == '<tool_call>{"name": "read_file", "arguments": {"path": "utils.py", "start": 10}}</tool_call>'
        assert p["group"] == "read_file"
        if p["reason"] == "answer_instead_of_call":
            assert "<tool_call>" not in rejected
            continue
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
        if p["reason"] in VALID_BUT_WRONG:  # the schema accepts it; it is still not what was asked
            assert check_call(call, tools, "test")["arguments"] == call["arguments"]
            assert {"nearest_function": call["name"] == "run_tests",
                    "wrong_value": call["arguments"] in ({"path": "utils.py", "start": 9},
                                                         {"path": "utils.py", "start": 11}),
                    "dropped_optional": call["arguments"] == {"path": "utils.py"}}[p["reason"]], p
            continue
        try:
            check_call(call, tools, "test")
            raise AssertionError(f"{p['reason']} passed the checker")
        except RecordError as exc:
            assert exc.reason == p["reason"]


def test_sample_traces_give_tool_pairs_and_rejects(tmp_path):
    sample = REPO / "data" / "sample"
    files = [sample / f for f in ("openai.jsonl", "hermes.jsonl", "glaive.jsonl", "xlam.json", "swe_agent.jsonl")]
    stats = build(JudgeDataOptions(out=tmp_path / "out", traces=files))
    assert stats["traces"] == {"in": 17, "ok": 12, "rejected": 5}  # data prepare's 6 rejects less its dedup
    assert stats["pairs"]["tools"] == sum(stats["tool_corruptions"].values()) == sum(stats["splits"].values())
    assert set(stats["tool_corruptions"]) >= {"wrong_function", "missing_required_argument", "wrong_argument_type",
                                              "unknown_argument", "malformed_json", *VALID_BUT_WRONG}
    rejects = (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()
    assert len(rejects) == 5


def test_shipped_tool_traces_are_what_the_generator_writes():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(REPO / "data" / "judge" / "make_tool_traces.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_corruptions_vary_across_traces_and_repeat_for_the_same_trace(tmp_path):
    """Invented argument names, wrong values and JSON defects are drawn per trace and turn (so the
    judge cannot learn one token), and building twice gives identical pairs."""
    from datasets import load_from_disk

    traces = REPO / "data" / "judge" / "tool-traces.jsonl"
    stats = build(JudgeDataOptions(out=tmp_path / "a", traces=[traces]))
    build(JudgeDataOptions(out=tmp_path / "b", traces=[traces]))
    assert stats["traces"] == {"in": 100, "ok": 100, "rejected": 0}
    a, b = (load_from_disk(str(tmp_path / x / "dataset")) for x in "ab")
    assert a["train"].to_list() == b["train"].to_list()
    rows = a["train"].to_list() + a["validation"].to_list()
    invented, defects, wrong_names = set(), set(), set()
    for row in rows:
        body = CALL.search(row["rejected"][0]["content"])
        if row["reason"] == "unknown_argument":
            chosen_args = json.loads(CALL.search(row["chosen"][0]["content"]).group(1))["arguments"]
            invented |= set(json.loads(body.group(1))["arguments"]) - set(chosen_args)
        elif row["reason"] == "malformed_json":
            defects.add("'" in body.group(1) and "quotes" or ", }" in body.group(1) and "comma"
                        or body.group(1).count("{") > body.group(1).count("}") and "cut" or "colon")
        elif row["reason"] == "wrong_function":
            wrong_names.add(json.loads(body.group(1))["name"])
    assert len(invented) >= 8 and defects == {"quotes", "comma", "cut", "colon"} and len(wrong_names) >= 10
    # Every tool of the prompt is there as one signature line, required arguments starred.
    system = rows[0]["prompt"][0]["content"]
    assert re.search(r"^\w+\(\w+\*: \w+", system, re.MULTILINE), system


def test_valid_but_wrong_pairs_pass_the_checker_and_take_values_from_the_conversation():
    """On the shipped synthetic traces: every valid-but-wrong call is one the gateway would accept,
    differs from the trace's, and a wrong value comes from the enum, the numbers around it or the
    conversation, never from nowhere."""
    rows = [json.loads(line) for line in (REPO / "data" / "judge" / "tool-traces.jsonl").read_text().splitlines()]
    seen = Counter()
    for row in rows:
        trace = validate_trace(to_canonical(row, "openai"))
        tools = {t["name"]: t for t in trace["tools"]}
        for p in trace_pairs(trace):
            if p["reason"] not in VALID_BUT_WRONG or p["reason"] == "answer_instead_of_call":
                continue
            seen[p["reason"]] += 1
            good = [json.loads(b) for b in CALL.findall(p["chosen"][0]["content"])]
            bad = [json.loads(b) for b in CALL.findall(p["rejected"][0]["content"])]
            assert bad != good
            for call in bad:
                check_call(call, tools, "test")  # raises if the gateway would drop it
            if p["reason"] == "wrong_value":
                (old, new), = [(g, b) for g, b in zip(good, bad, strict=True) if g != b]
                key, = [k for k in new["arguments"] if new["arguments"][k] != old["arguments"].get(k)]
                value, schema = new["arguments"][key], tools[new["name"]]["parameters"]["properties"][key]
                said = json.dumps([m.get("content") for m in p["prompt"]])
                assert value in (schema.get("enum") or []) or isinstance(value, bool) or str(value) in said or \
                    value in (old["arguments"][key] + 1, old["arguments"][key] - 1), (key, value)
    assert min(seen[r] for r in ("nearest_function", "wrong_value", "dropped_optional", "swapped_arguments")) >= 5, seen


def test_held_out_pairs_are_split_by_function(tmp_path):
    """No function is called in both splits' chosen answers: the held-out accuracy is on functions
    the judge never saw called."""
    from datasets import load_from_disk

    build(JudgeDataOptions(out=tmp_path / "d", traces=[REPO / "data" / "judge" / "tool-traces.jsonl"],
                           validation_fraction=0.3))
    data = load_from_disk(str(tmp_path / "d" / "dataset"))
    called = {split: {json.loads(b)["name"] for row in data[split] for b in CALL.findall(row["chosen"][0]["content"])}
              for split in ("train", "validation")}
    assert called["train"] and called["validation"] and not called["train"] & called["validation"]
