"""BFCL tasks from the installed bfcl-eval package, and our scorer against BFCL's own checker on real items.

The agreement test judges right and deliberately wrong outputs, built from each sampled item's possible
answer, with both `score_calls` and the package's checker (`official_check`). Per-category rates:
``.venv/bin/pytest -q -s tests/eval/test_bfcl.py -k agreement``.
"""

from __future__ import annotations

import copy
import json
from collections import Counter

import pytest

pytest.importorskip("bfcl_eval", reason="bfcl-eval not installed: pip install --no-deps bfcl-eval==2026.3.23")

from jsonschema import Draft202012Validator  # noqa: E402

from finetune import FinetuneError  # noqa: E402
from finetune.eval import bfcl  # noqa: E402
from finetune.eval.score import score_calls  # noqa: E402

SAMPLE = 40  # items per category, evenly spread over the file


def sample(category: str) -> list[dict]:
    tasks = bfcl.load(category)
    step = max(1, len(tasks) // SAMPLE)
    return tasks[::step][:SAMPLE]


def test_version_is_the_pinned_one():
    assert bfcl.version() == "2026.3.23"


@pytest.mark.parametrize("category", bfcl.CATEGORIES)
def test_tasks_of_every_category(category):
    tasks = bfcl.load(category, limit=5)
    assert len(tasks) == 5
    for task in tasks:
        assert json.loads(json.dumps(task)) == task
        assert task["id"].startswith(f"bfcl/{category}/") and task["id"].split("/")[2].startswith(category)
        assert (task["kind"], task["source"], task["category"], task["step"]) == (
            "tool", "bfcl-eval 2026.3.23", f"bfcl:{category}", 0)
        assert task["messages"] and task["messages"][-1]["role"] == "user"
        assert [t["function"]["name"] for t in task["tools"]] == [f["name"] for f in task["bfcl"]["functions"]]
        for tool in task["tools"]:
            assert tool["type"] == "function" and tool["function"]["parameters"]["type"] == "object"
            Draft202012Validator.check_schema(tool["function"]["parameters"])
        assert (task["expected"] == []) == ("irrelevance" in category)


def test_file_order_limit_and_system_messages():
    tasks = bfcl.load("live_simple")
    assert len(tasks) == 258 and [t["id"] for t in tasks[:3]] == [
        "bfcl/live_simple/live_simple_0-0-0", "bfcl/live_simple/live_simple_1-1-0", "bfcl/live_simple/live_simple_2-2-0"]
    assert bfcl.load("live_simple", limit=3) == tasks[:3]
    assert any(m["role"] == "system" for t in tasks for m in t["messages"])


def test_bfcl_types_become_json_schema():
    first = bfcl.load("simple_python", limit=200)
    factorial = first[1]["tools"][0]["function"]
    assert factorial["name"] == "math.factorial"  # dots kept
    assert factorial["parameters"]["properties"]["number"] == {
        "type": "integer", "description": "The number for which factorial needs to be calculated."}
    assert factorial["description"].endswith("Note that the provided function is in Python 3 syntax.")
    props = {t["id"].split("/")[2]: t["tools"][0]["function"]["parameters"]["properties"] for t in first}
    assert props["simple_python_83"]["coord1"] == {"type": "array", "x-bfcl-type": "tuple",
                                                   "description": "The first coordinate as (latitude, longitude).",
                                                   "items": {"type": "number"}}
    assert props["simple_python_89"]["conditions"]["type"] == "object"
    assert props["simple_python_89"]["conditions"]["properties"]["school"]["type"] == "string"
    assert props["simple_python_109"]["data"] == {"x-bfcl-type": "any", "description": "The training data for the model."}
    assert props["simple_python_96"]["conditions"]["items"]["type"] == "object"


def test_unknown_category_names_the_valid_ones():
    with pytest.raises(FinetuneError, match="unknown BFCL category 'simple'.*simple_python.*live_irrelevance"):
        bfcl.load("simple")


def test_missing_package_says_how_to_install(monkeypatch):
    from importlib.metadata import PackageNotFoundError

    def missing(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(bfcl, "_dist_version", missing)
    with pytest.raises(FinetuneError, match=r"pip install --no-deps bfcl-eval==2026\.3\.23"):
        bfcl.load("simple_python")


def test_official_check_runs_the_package_checker():
    task = bfcl.load("simple_python", limit=1)[0]
    right = [{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}]
    assert bfcl.official_check(task, right) == (True, "ok")
    valid, reason = bfcl.official_check(task, [{"name": "calculate_triangle_area", "arguments": {"base": 10.0,
                                                                                              "height": 5}}])
    assert not valid and reason.startswith("type_error:simple")
    irrelevant = bfcl.load("irrelevance", limit=1)[0]
    assert bfcl.official_check(irrelevant, []) == (True, "ok")
    assert bfcl.official_check(irrelevant, right)[0] is False


def test_deliberate_difference_parallel_pairing():
    # parallel_178's first expected call allows either company; BFCL pairs greedily in expected order and
    # rejects these four right calls in this order, we find the one-to-one pairing and accept them.
    task = next(t for t in bfcl.load("parallel") if t["id"].endswith("/parallel_178"))
    calls = list(reversed(right_calls(task)))
    assert score_calls(calls, task["expected"], task["tools"]) == (True, "ok")
    assert bfcl.official_check(task, calls)[0] is False


# --- outputs built from the possible answer --------------------------------------------------------------


def pick(allowed: dict, optional: bool) -> dict:
    """The first allowed value of each key; optional keys (allowed list holding "") left out unless
    `optional`."""
    out = {}
    for key, values in allowed.items():
        given = [v for v in values if v != ""]
        if given and (optional or "" not in values):
            out[key] = copy.deepcopy(given[0])
    return out


def right_calls(task: dict, optional: bool = False) -> list[dict]:
    """Calls built from the possible answer with `pick`; a dict argument's allowed value is itself
    {key: [allowed values]} (also as list items), so it is picked from one level down."""
    calls = []
    for answer in task["expected"]:
        (name, allowed), = answer.items()
        args = pick(allowed, optional)
        props = schema(task, name).get("properties", {})
        for param, value in args.items():
            if isinstance(value, dict) and props.get(param, {}).get("type") == "object":
                args[param] = pick(value, optional)
            elif isinstance(value, list) and (props.get(param, {}).get("items") or {}).get("type") == "object":
                args[param] = [pick(v, optional) if isinstance(v, dict) else v for v in value]
        calls.append({"name": name, "arguments": args})
    return calls


def schema(task: dict, name: str) -> dict:
    return next(t["function"]["parameters"] for t in task["tools"] if t["function"]["name"] == name)


def first_arg(calls: list[dict], task: dict, test) -> tuple[dict, str] | None:
    """(arguments, param) of the first argument over all calls with test(value, schema type), or None."""
    for c in calls:
        props = schema(task, c["name"]).get("properties", {})
        for param, value in c["arguments"].items():
            if test(value, props.get(param, {}).get("type")):
                return c["arguments"], param
    return None


def variants(task: dict) -> dict[str, list[dict]]:
    """Named model outputs for one task: right ones and each kind of mistake that applies to it."""
    if not task["expected"]:
        # A few live_irrelevance items offer no tool at all: the model can only make one up.
        tool = task["tools"][0]["function"] if task["tools"] else {"name": "lookup", "parameters": {}}
        made_up = {p: "x" for p in tool["parameters"].get("required", [])}
        return {"no_call_none_due": [], "call_not_due": [{"name": tool["name"], "arguments": made_up}]}
    base = right_calls(task)
    out = {"right": base, "right_with_optional": right_calls(task, optional=True), "no_call": []}

    def mutated(kind: str, test, change) -> None:
        calls = copy.deepcopy(base)
        found = first_arg(calls, task, test)
        if found:
            args, param = found
            args[param] = change(args[param])
            out[kind] = calls

    renamed = copy.deepcopy(base)
    renamed[0]["name"] += "_v2"
    out["wrong_function"] = renamed
    invented = copy.deepcopy(base)
    invented[0]["arguments"]["invented_arg"] = "x"
    out["invented_argument"] = invented
    required = schema(task, base[0]["name"]).get("required", [])
    if any(p in base[0]["arguments"] for p in required):
        missing = copy.deepcopy(base)
        del missing[0]["arguments"][next(p for p in required if p in base[0]["arguments"])]
        out["missing_required"] = missing
    mutated("wrong_value", lambda v, t: type(v) is str, lambda v: v + " zq")
    mutated("wrong_number", lambda v, t: type(v) in (int, float), lambda v: v + 7)
    mutated("float_for_integer", lambda v, t: type(v) is int and t == "integer", float)
    mutated("int_for_float", lambda v, t: type(v) is float and v.is_integer() and t == "number", int)
    mutated("case_space_punct", lambda v, t: type(v) is str and v.strip(),
            lambda v: " " + v.upper().replace(" ", " - ") + ".")
    mutated("list_strings_case", lambda v, t: type(v) is list and any(type(x) is str for x in v),
            lambda v: [x.swapcase() if type(x) is str else x for x in v])
    mutated("dict_strings_case", lambda v, t: type(v) is dict, lambda v: {k: x.upper() if type(x) is str else x
                                                                          for k, x in v.items()})
    if len(base) > 1:
        out["parallel_reordered"] = base[::-1]
        out["parallel_one_missing"] = base[:-1]
    return out


def test_agreement_with_bfcl_checker():
    """Our scorer and BFCL's checker give the same verdict on >= 99% of outputs (per category printed)."""
    per_category: dict[str, Counter] = {}
    kinds: Counter = Counter()
    accepted: Counter = Counter()
    disagreements = []
    for category in bfcl.CATEGORIES:
        counts = per_category.setdefault(category, Counter())
        for task in sample(category):
            for kind, calls in variants(task).items():
                ours = score_calls(calls, task["expected"], task["tools"])
                official = bfcl.official_check(task, calls)
                counts["same" if ours[0] == official[0] else "different"] += 1
                kinds[kind] += 1
                accepted[kind] += ours[0]
                if ours[0] != official[0]:
                    disagreements.append(f"{task['id']} [{kind}] ours={ours} bfcl={official[1][:160]!r} "
                                         f"calls={json.dumps(calls)[:300]}")
    lines = [f"{c:24} {n['same']:4}/{n['same'] + n['different']:4} = {n['same'] / (n['same'] + n['different']):.2%}"
             for c, n in per_category.items()]
    same = sum(n["same"] for n in per_category.values())
    total = sum(n.total() for n in per_category.values())
    report = "\n".join(lines + [f"{'overall':24} {same:4}/{total:4} = {same / total:.2%}"])
    print("\nagreement with BFCL's checker\n" + report)
    assert same / total >= 0.99, report + "\ndisagreeing:\n" + "\n".join(disagreements)
    # The mistakes were exercised, and judged as they should be (so agreement is not about trivia).
    assert min(kinds[k] for k in ("float_for_integer", "int_for_float", "case_space_punct", "parallel_reordered",
                                  "call_not_due", "missing_required", "list_strings_case")) >= 5, kinds
    for kind in ("no_call", "call_not_due", "wrong_function", "invented_argument", "missing_required",
                 "wrong_value", "wrong_number", "float_for_integer", "parallel_one_missing"):
        assert accepted[kind] == 0, kind
    assert accepted["no_call_none_due"] == kinds["no_call_none_due"] > 0
    for kind in ("right", "int_for_float", "case_space_punct", "parallel_reordered"):
        assert accepted[kind] >= 0.9 * kinds[kind], (kind, accepted[kind], kinds[kind])
