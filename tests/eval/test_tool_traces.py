"""benchmarks/tool_traces.py: deterministic, valid, shaped as documented, and disjoint from BFCL."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from collections import Counter
from pathlib import Path

import pytest

from finetune.data.traces.formats import to_canonical
from finetune.data.traces.validate import validate_trace

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "tool_traces.py"


def _load():
    spec = importlib.util.spec_from_file_location("tool_traces", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["tool_traces"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


tt = _load()


@pytest.fixture(scope="module")
def traces() -> list[dict]:
    return tt.generate(200, 0)


def _bfcl() -> tuple[set[str], set[str]]:
    """Function names and user questions of every BFCL_v4_*.json in the installed package, read here
    independently of the script."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("bfcl-eval not installed")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = sorted(data.glob("BFCL_v4_*.json"))
    assert len(files) >= 4
    names, questions = set(), set()
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue  # not JSON lines (format_sensitivity is one pretty-printed object)
            if isinstance(item, dict):
                names.update(f["name"] for f in item.get("function") or [] if isinstance(f, dict))
                questions.update(m["content"] for turn in item.get("question") or [] if isinstance(turn, list)
                                 for m in turn if isinstance(m, dict) and isinstance(m.get("content"), str))
    assert {"calculate_triangle_area", "spotify.play"} <= names
    return names, questions


def test_deterministic(traces):
    assert tt.generate(200, 0) == traces
    assert json.dumps(tt.generate(200, 0)) == json.dumps(traces)
    assert tt.generate(200, 1) != traces


def test_every_trace_passes_the_validator(traces):
    for record in traces:
        clean = validate_trace(to_canonical(record, "openai"))
        assert len(clean["tools"]) <= 4
        for m in record["messages"]:
            for call in m.get("tool_calls") or []:
                assert isinstance(json.loads(call["function"]["arguments"]), dict)


def test_shares(traces):
    counts = Counter(tt.shape_of(r) for r in traces)
    assert 70 <= counts["single"] <= 90
    assert 30 <= counts["multi"] <= 50
    assert 22 <= counts["parallel"] <= 38
    assert 22 <= counts["none"] <= 38
    assert 14 <= counts["multistep"] <= 26
    assert sum(counts.values()) == 200


def test_variety(traces):
    used = {t["function"]["name"] for r in traces for t in r["tools"]}
    called = {c["function"]["name"] for r in traces for m in r["messages"] for c in m.get("tool_calls") or []}
    assert len(used) >= 60 and len(called) >= 50
    assert len(tt.CATALOG) >= 60 and len({f.domain for f in tt.CATALOG}) >= 12
    assert len({r["messages"][0]["content"] for r in traces}) >= 150


def test_arguments_copy_the_request(traces):
    """Strings, numbers and list items appear verbatim in the request; integer parameters get JSON integers."""
    for r in traces:
        request = r["messages"][0]["content"]
        props = {t["function"]["name"]: t["function"]["parameters"]["properties"] for t in r["tools"]}
        for m in r["messages"]:
            for call in m.get("tool_calls") or []:
                name = call["function"]["name"]
                for key, value in json.loads(call["function"]["arguments"]).items():
                    kind = props[name][key]["type"]
                    if kind == "integer":
                        assert isinstance(value, int) and not isinstance(value, bool), (name, key, value)
                    if kind == "string" and "enum" not in props[name][key]:
                        assert value in request, (name, key, value, request)
                    if kind in ("integer", "number"):
                        assert str(value) in request, (name, key, value, request)
                    if kind == "array":
                        assert all(str(v) in request for v in value), (name, key, value, request)


def test_every_phrasing_of_every_function_renders():
    rng = random.Random(0)
    for f in tt.CATALOG:
        for template in f.templates:
            text, args = tt._request(f, rng, template)
            assert "{" not in text and set(args) <= set(f.params)
            if f.out:
                key, value, say = f.out
                json.dumps({key: value(args, rng)})
                tt._render(say, {**{k: tt._show(v) for k, v in args.items()}, "r": "x"})


def test_no_overlap_with_bfcl(traces):
    names, questions = _bfcl()
    bfcl = {n.lower().replace(".", "_") for n in names}
    ours = [f.name for f in tt.CATALOG]
    assert len(set(ours)) == len(ours)
    assert not [n for n in ours if n.lower().replace(".", "_") in bfcl]
    asked = {" ".join(q.lower().split()) for q in questions}
    assert not [m["content"] for r in traces for m in r["messages"]
                if m["role"] == "user" and " ".join(m["content"].lower().split()) in asked]
    assert not {n.lower() for n in ours} & {n.lower() for n in tt.eval_tool_names()}
    assert tt.check_overlap(traces).startswith("no overlap")
