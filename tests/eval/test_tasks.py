"""Evaluation tasks: each assistant turn of a held-out trace is one task with its real history and a
BFCL-form expectation; bad records go to the rejects file with file and line; the shipped
evaluation set shares no task and no function with anything the demo or the judge trains on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from finetune.data.prepare import Rejects
from finetune.eval.config import TaskFile, Tasks
from finetune.eval.tasks import load_tasks, task_key, tool_tasks
from tests.conftest import write_jsonl

REPO = Path(__file__).resolve().parents[2]
TOOL = {"type": "function", "function": {"name": "get_flight_status", "description": "Flight status.", "parameters": {
    "type": "object", "properties": {"flight_number": {"type": "string"}, "date": {"type": "string"},
                                     "units": {"type": "string", "default": "min"}},
    "required": ["flight_number"]}}}


def _call(i, name, args):
    return {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def test_every_assistant_turn_is_a_task_with_its_real_history(tmp_path):
    trace = {"tools": [TOOL], "messages": [
        {"role": "user", "content": "Is BA117 on time?"},
        {"role": "assistant", "content": None, "tool_calls": [_call(1, "get_flight_status", {"flight_number": "BA117"})]},
        {"role": "tool", "tool_call_id": "c1", "content": "delayed"},
        {"role": "assistant", "content": "It is delayed."}]}
    path = write_jsonl(tmp_path / "t.jsonl", [trace, {"category": "agent", **trace}])
    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        tasks, counts = tool_tasks(TaskFile(path=str(path)), rejects)
    assert dict(counts) == {"records": 2, "kept": 2, "rejected": 0}
    first, second = tasks[0], tasks[1]
    assert [m["role"] for m in first["messages"]] == ["user"]
    # an optional argument the trace left out may stay out, or be given its schema default
    assert first["expected"] == [{"get_flight_status": {"flight_number": ["BA117"], "date": [""], "units": ["", "min"]}}]
    assert (first["category"], first["step"]) == ("simple", 0)
    # the second turn sees the call and its result, and no call is due
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "tool"]
    assert second["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"flight_number": "BA117"}'
    assert (second["expected"], second["category"], second["step"]) == ([], "no_call", 1)
    assert [t["category"] for t in tasks[2:]] == ["agent", "agent"]  # the record's own category wins
    assert first["id"] == "t.jsonl:1:0" and tasks[3]["id"] == "t.jsonl:2:1"
    assert task_key(first) == task_key(json.loads(json.dumps(first))) != task_key(second)


def test_bad_records_go_to_rejects_with_file_and_line_and_counts_add_up(tmp_path):
    good = {"tools": [TOOL], "messages": [{"role": "user", "content": "BA1?"}, {"role": "assistant", "content": None,
            "tool_calls": [_call(1, "get_flight_status", {"flight_number": "BA1"})]}]}
    undeclared = json.loads(json.dumps(good))
    undeclared["messages"][1]["tool_calls"][0]["function"]["name"] = "cancel_flight"
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(good) + "\n{not json\n" + json.dumps(undeclared) + "\n" + json.dumps({"x": 1}) + "\n")
    problems = write_jsonl(tmp_path / "p.jsonl", [{"task_id": "a", "prompt": "def f():\n", "test": "", "entry_point": "f"},
                                                  {"task_id": "b", "prompt": "def g():\n"}])
    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        tasks, sources = load_tasks(Tasks(tool_calls=[TaskFile(path=str(path))], code=[TaskFile(path=str(problems))]),
                                    rejects)
    assert sources[str(path)] == {"records": 4, "kept": 1, "rejected": 3, "tasks": 1}
    assert sources[str(problems)] == {"records": 2, "kept": 1, "rejected": 1, "tasks": 1}
    rejected = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(Path(r["source"]).name, r["line"], r["reason"]) for r in rejected] == [
        ("t.jsonl", 2, "invalid_json"), ("t.jsonl", 3, "unknown_tool"), ("t.jsonl", 4, "wrong_layout"),
        ("p.jsonl", 2, "bad_problem")]
    assert "entry_point" in rejected[-1]["detail"] and "test" in rejected[-1]["detail"]
    assert [t["kind"] for t in tasks] == ["tool", "code"]


def test_every_layout_data_prepare_reads_gives_tasks(tmp_path):
    with Rejects(tmp_path / "rejects.jsonl") as rejects:
        for name, layout in [("openai.jsonl", None), ("hermes.jsonl", "hermes"), ("glaive.jsonl", None),
                             ("xlam.json", None), ("hermes-fc.jsonl", None)]:
            tasks, counts = tool_tasks(TaskFile(path=str(REPO / "data/sample" / name), format=layout), rejects)
            assert tasks and counts["records"] == counts["kept"] + counts["rejected"], name
            assert all(t["expected"] == [] or all(len(e) == 1 for e in t["expected"]) for t in tasks)
    parallel = [t for t in tasks if t["category"] == "parallel"]  # hermes-fc has parallel calls
    assert parallel and len(parallel[0]["expected"]) >= 2


def _functions_and_prompts(path: Path) -> tuple[set[str], set[str]]:
    text = path.read_text()
    names = set(re.findall(r'"name"\s*:\s*"([A-Za-z_][\w.]*)"', text))
    names |= set(re.findall(r"'name'\s*:\s*'([A-Za-z_][\w.]*)'", text))
    prompts = set()
    for line in text.splitlines():
        for m in re.finditer(r'"(?:content|value|query)"\s*:\s*"([^"]{12,})"', line):
            prompts.add(m.group(1).strip().lower())
    return names, prompts


def test_the_shipped_evaluation_set_shares_no_task_and_no_function_with_training_data():
    """What the demo evaluates (data/eval) against everything it trains on: the SmolLM2 LoRA
    recipe's sources, and the judge's traces and code problems."""
    recipe = yaml.safe_load((REPO / "recipes/smollm2/traces-lora.yaml").read_text())
    trained = [REPO / s["path"] for s in recipe["data"]["sources"]]
    trained += [REPO / "data/judge/tool-traces.jsonl", *sorted((REPO / "data/sample").iterdir())]
    eval_names, eval_prompts = _functions_and_prompts(REPO / "data/eval/tool-calls.jsonl")
    assert len(eval_names) >= 8 and len(eval_prompts) >= 15
    for path in trained:
        names, prompts = _functions_and_prompts(path)
        assert not eval_names & names, f"{path} trains on evaluation functions {eval_names & names}"
        assert not eval_prompts & prompts, f"{path} trains on evaluation prompts {eval_prompts & prompts}"
    code = [json.loads(line) for line in (REPO / "data/eval/code-problems.jsonl").read_text().splitlines()]
    judged = [json.loads(line) for f in ("problems.jsonl", "problems-extra.jsonl")
              for line in (REPO / "data/judge" / f).read_text().splitlines() if line.strip().startswith("{")]
    judged = [p for p in judged if isinstance(p, dict)]
    assert not {p["entry_point"] for p in code} & {p.get("entry_point") for p in judged}
