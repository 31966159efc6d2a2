"""judge data: labels come from execution, counts add up, held-out problems stay held out."""

from __future__ import annotations

import json

import pytest

from finetune.cli import main
from finetune.judge.config import JudgeDataOptions
from finetune.judge.data import build
from finetune.judge.sandbox import Sandbox
from tests.conftest import REPO, write_jsonl

PROBLEMS = REPO / "data" / "judge" / "problems.jsonl"
PREFERENCES = [
    {"prompt": "Which is faster?", "chosen": "A dict lookup.", "rejected": "A list scan."},
    {"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}],
     "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Go away."}]},
    {"chosen": "Q: 2+2? A: 4", "rejected": "Q: 2+2? A: 5"},
    {"prompt": [{"role": "user", "content": "x"}], "chosen": [{"role": "assistant", "content": "y"}],
     "rejected": [{"role": "assistant", "content": "z"}]},
    {"chosen": "same", "rejected": "same"},
    {"rejected": "only"},
    "not an object",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("judge-data")
    prefs = write_jsonl(out / "prefs.jsonl", [json.dumps(p) for p in PREFERENCES])
    stats = build(JudgeDataOptions(out=out / "data", problems=[PROBLEMS], preferences=[prefs], timeout=5))
    return out / "data", stats


def test_counts_add_up(built):
    out, stats = built
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert stats["problems"] == {"in": 13, "ok": 10, "rejected": 3}
    assert stats["preferences"] == {"in": 7, "ok": 4, "rejected": 3}
    assert len(rejects) == 6 and sum(stats["rejects_by_reason"].values()) == 6
    reasons = {(r["line"], r["reason"].split(":")[0]) for r in rejects if r["source"].endswith("problems.jsonl")}
    assert reasons == {(11, "missing_field"), (12, "canonical_solution_fails_its_tests"), (13, "invalid_json")}
    assert sum(stats["pairs"].values()) == sum(stats["splits"].values())
    results = (out / "results.jsonl").read_text().splitlines()
    assert len(results) == sum(c["run"] for c in stats["candidates"].values()) == sum(stats["sandbox"].values())


def test_kept_mutants_fail_and_discarded_ones_passed(built):
    from datasets import load_from_disk

    out, _ = built
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    mutant_runs = [r for r in results if r["kind"] == "mutant"]
    assert any(r["passed"] for r in mutant_runs) and any(not r["passed"] for r in mutant_runs)
    data = load_from_disk(str(out / "dataset"))
    pairs = [row for split in data.values() for row in split]
    rejected_mutants = [p for p in pairs if p["source"] == "code:mutant"]
    assert len(rejected_mutants) == sum(not r["passed"] for r in mutant_runs)
    # Re-run every kept mutant and a chosen answer: the labels are what execution says.
    problems = {json.loads(line)["prompt"]: json.loads(line) for line in PROBLEMS.read_text().splitlines()[:10]}
    box = Sandbox()
    for pair in rejected_mutants[:12]:
        problem = next(p for prompt, p in problems.items() if prompt in pair["prompt"][0]["content"])
        code = pair["rejected"][0]["content"].removeprefix("```python\n").removesuffix("\n```")
        assert not box.run(code, problem["test"], problem["entry_point"]).passed
        chosen = pair["chosen"][0]["content"].removeprefix("```python\n").removesuffix("\n```")
        assert box.run(chosen, problem["test"], problem["entry_point"]).passed


def test_layout_and_split_by_problem(built):
    from datasets import load_from_disk

    out, _ = built
    data = load_from_disk(str(out / "dataset"))
    assert set(data) == {"train", "validation"}
    assert set(data["train"].column_names) == {"prompt", "chosen", "rejected", "source", "reason"}
    prompts = {s: {json.dumps(r["prompt"]) for r in data[s] if r["source"].startswith("code")} for s in data}
    assert prompts["train"] and prompts["validation"] and not prompts["train"] & prompts["validation"]
    given = [r for s in data for r in data[s] if r["source"] == "preferences"]
    by_chosen = {r["chosen"][-1]["content"]: r for r in given}
    assert by_chosen["Hello!"]["prompt"] == [{"role": "user", "content": "hi"}]
    assert by_chosen["4"]["prompt"] == [{"role": "user", "content": "Q: 2+2? A: "}]
    assert by_chosen["A dict lookup."]["rejected"] == [{"role": "assistant", "content": "A list scan."}]


def test_cli(tmp_path, capsys):
    prefs = write_jsonl(tmp_path / "p.jsonl", [json.dumps(p) for p in PREFERENCES[:4]])
    assert main(["judge", "data", "--preferences", str(prefs), "--out", str(tmp_path / "o")]) == 0
    assert "preferences: 4 in, 4 ok, 0 rejected" in capsys.readouterr().out
    assert main(["judge", "data", "--out", str(tmp_path / "x")]) == 2


def test_preferences_with_tool_calls_and_a_tools_column(tmp_path):
    """TRL's conversational layout for tool use: assistant messages with tool_calls (no content)
    as chosen / rejected, the tools in their own column; rendered as the judge reads requests."""
    from datasets import load_from_disk

    from finetune.contracts.judging import judge_prompt

    weather = {"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    forecast = {"type": "function", "function": {
        "name": "get_forecast", "description": "Forecast for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

    def call(name):
        return [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": name, "arguments": '{"city": "Paris"}'}}]}]

    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris now?"}]
    rows = [{"prompt": prompt, "chosen": call("get_weather"), "rejected": call("get_forecast"),
             "tools": json.dumps([weather, forecast])},
            {"prompt": prompt, "chosen": call("get_weather"), "rejected": call("get_forecast"), "tools": [weather, forecast]},
            {"prompt": prompt, "chosen": call("get_weather"), "rejected": [{"role": "assistant", "content": 5}]}]
    stats = build(JudgeDataOptions(out=tmp_path / "o", preferences=[write_jsonl(tmp_path / "p.jsonl", rows)],
                                   validation_fraction=0))
    assert stats["preferences"] == {"in": 3, "ok": 2, "rejected": 1}
    pairs = list(load_from_disk(str(tmp_path / "o" / "dataset"))["train"])
    assert len(pairs) == 2 and pairs[0] == pairs[1]
    pair = pairs[0]
    assert pair["prompt"] == judge_prompt([weather, forecast], prompt)  # the gateway's layout, exactly
    assert "get_weather(city*: string) - Weather for a city." in pair["prompt"][0]["content"]
    assert pair["chosen"] == [{"role": "assistant",
                               "content": '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'}]
    assert '"get_forecast"' in pair["rejected"][0]["content"]
    reject = json.loads((tmp_path / "o" / "rejects.jsonl").read_text().splitlines()[0])
    assert reject["line"] == 3 and reject["reason"] == "chosen_or_rejected_not_text_or_messages"
