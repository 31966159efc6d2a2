"""``finetune judge data``: preference pairs whose labels were checked by running the code.

Code problems come in the HumanEval layout (``task_id``, ``prompt``, ``canonical_solution``,
``test``, ``entry_point``, optional ``candidates``: completions of ``prompt``). For each problem
the canonical solution, every given candidate and up to ``mutants`` one-edit mutants of the
canonical solution (:mod:`finetune.judge.mutate`) run in the sandbox. A problem whose canonical
solution fails its own tests is rejected (its labels could not be trusted). Every failing
candidate or mutant becomes a *rejected* answer paired with a passing one as *chosen*; mutants
the tests still accept are discarded and counted. Existing preference data in TRL's layouts
(``chosen``/``rejected`` with or without ``prompt``, conversational or plain text) is accepted
with ``--preferences``. Tool-use pairs come from agent traces (``--traces``, any layout ``data
prepare`` reads): the call the trace made against checked corruptions of it
(:mod:`finetune.judge.tools`).

Validation is split by problem, by called function for tool pairs (functions called together
stay together) and by prompt for given preferences, so held-out pairs come from problems the
judge never saw and functions it never saw called. Output (``--out``)::

    dataset/        datasets DatasetDict, TRL's conversational preference layout
                    (prompt, chosen, rejected as message lists) plus source and reason columns
    results.jsonl   every executed candidate: task, kind, operator, passed, reason, duration
    rejects.jsonl   unusable input records with file, line and reason
    stats.json      counts per source and reason; counts add up (in = ok + rejected)

Example::

    build(JudgeDataOptions(problems=[Path("data/judge/problems.jsonl")], out=Path("runs/judge-data")))
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from finetune import FinetuneError, RecordError
from finetune.contracts.judging import judge_prompt
from finetune.data.sources import read_records
from finetune.data.traces.formats import tools_list
from finetune.data.traces.read import read_traces
from finetune.judge.config import JudgeDataOptions
from finetune.judge.mutate import mutants, normalise
from finetune.judge.sandbox import Limits, Sandbox
from finetune.judge.tools import trace_pairs

FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
ASK = "Complete the following Python function.\n\n```python\n{prompt}```"


def _reject(rejects: list, raw, reason: str) -> None:
    rejects.append({"source": raw.source, "line": raw.line, "reason": reason,
                    "record": raw.record if raw.error is None else str(raw.record)[:2000]})


def _problem_error(record) -> str | None:
    if not isinstance(record, dict):
        return "not_an_object"
    missing = [f for f in FIELDS if not isinstance(record.get(f), str) or not record[f].strip()]
    if missing:
        return f"missing_field:{','.join(missing)}"
    cands = record.get("candidates", [])
    if not isinstance(cands, list) or not all(isinstance(c, str) for c in cands):
        return "candidates_not_a_list_of_strings"
    try:
        normalise(record["prompt"] + record["canonical_solution"])
    except SyntaxError:
        return "canonical_solution_syntax_error"
    return None


def _code(prompt: str, completion: str) -> str:
    """The full function as a judge sees it; parseable code is unparsed like the mutants are."""
    try:
        return normalise(prompt + completion)
    except SyntaxError:
        return prompt + completion


def _message(role: str, text: str) -> list[dict]:
    return [{"role": role, "content": text}]


def _answer(code: str) -> list[dict]:
    return _message("assistant", f"```python\n{code}\n```")


def _in_validation(key: str, fraction: float, seed: int) -> bool:
    h = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def _code_pairs(opts: JudgeDataOptions, stats: dict, rejects: list, results: list) -> list[dict]:
    problems, sources = [], Counter()
    for raw in (r for path in opts.problems for r in read_records(path)):
        stats["problems"]["in"] += 1
        reason = raw.error and "invalid_json" or _problem_error(raw.record)
        if reason:
            _reject(rejects, raw, reason)
            continue
        problems.append((raw, raw.record))
    box = Sandbox(Limits(wall_seconds=opts.timeout, cpu_seconds=max(1, int(opts.timeout))), unsafe=opts.unsafe)
    by_problem: dict[int, list] = {}

    def execute(jobs):  # jobs: (problem index, kind, operator, code)
        with ThreadPoolExecutor(max(1, opts.workers)) as pool:
            outcomes = list(pool.map(lambda j: box.run(j[3], problems[j[0]][1]["test"],
                                                       problems[j[0]][1]["entry_point"]), jobs))
        for (n, kind, op, code), outcome in zip(jobs, outcomes, strict=True):
            results.append({"task_id": problems[n][1]["task_id"], "kind": kind, "operator": op, **outcome.to_dict()})
            stats["sandbox"][outcome.reason] += 1
            key = f"{kind}:{op}" if op else kind
            stats["candidates"].setdefault(key, {"run": 0, "passed": 0})
            stats["candidates"][key]["run"] += 1
            stats["candidates"][key]["passed"] += outcome.passed
            by_problem.setdefault(n, []).append((kind, op, code, outcome))

    # First the canonical solutions: a problem whose own solution fails has untrustworthy tests.
    canonical = {n: normalise(p["prompt"] + p["canonical_solution"]) for n, (_, p) in enumerate(problems)}
    execute([(n, "canonical", None, code) for n, code in canonical.items()])
    trusted = []
    for n, (raw, _) in enumerate(problems):
        outcome = by_problem[n][0][3]
        if outcome.passed:
            trusted.append(n)
        else:
            _reject(rejects, raw, f"canonical_solution_fails_its_tests:{outcome.reason}")
    jobs = []
    for n in trusted:
        p = problems[n][1]
        jobs += [(n, "candidate", None, _code(p["prompt"], c)) for c in p.get("candidates", [])]
        jobs += [(n, "mutant", op, code) for op, code in mutants(canonical[n], opts.mutants, opts.seed)]
    execute(jobs)
    pairs = []
    for n in trusted:
        runs, p = by_problem[n], problems[n][1]
        stats["problems"]["ok"] += 1
        passing = [code for kind, _, code, o in runs if o.passed and kind != "mutant"]
        failing = [(kind, op, code, o) for kind, op, code, o in runs if not o.passed]
        for k, (kind, op, code, o) in enumerate(failing):
            sources[kind] += 1
            pairs.append({"prompt": _message("user", ASK.format(prompt=p["prompt"])),
                          "chosen": _answer(passing[k % len(passing)]), "rejected": _answer(code),
                          "source": f"code:{kind}", "reason": f"{op or kind}:{o.reason}",
                          "group": p["task_id"]})
    stats["pairs"].update({f"code:{k}": v for k, v in sources.items()})
    return pairs


def _tool_pairs(opts: JudgeDataOptions, stats: dict, rejects: list) -> list[dict]:
    pairs, reasons = [], Counter()
    for path in opts.traces:
        for item in read_traces(path):
            stats["traces"]["in"] += 1
            if item.error:
                _reject(rejects, item.raw, item.error.reason)
                continue
            stats["traces"]["ok"] += 1
            for pair in trace_pairs(item.trace):
                reasons[pair["reason"]] += 1
                pairs.append({**pair, "source": "tools"})
    # Functions called together in one turn go to the same split: groups are the connected sets of
    # functions (so no function is called in the chosen answers of both splits).
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    for pair in pairs:
        names = pair["group"].split(",")
        for other in names[1:]:
            parent[root(other)] = root(names[0])
    for pair in pairs:
        pair["group"] = f"function:{root(pair['group'].split(',')[0])}"
    stats["pairs"]["tools"] = len(pairs)
    stats["tool_corruptions"] = dict(reasons)
    return pairs


def _as_messages(value, role: str):
    """Text, one message, or a list of messages -> messages; None when it is none of those. An
    assistant message may carry ``tool_calls`` instead of text (OpenAI / TRL conversational)."""
    if isinstance(value, str):
        return _message(role, value)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return None
    out = []
    for m in value:
        calls = m.get("tool_calls") if isinstance(m, dict) else None
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not (
                isinstance(m.get("content"), str) or (m.get("content") is None and isinstance(calls, list) and calls)):
            return None
        out.append({k: m[k] for k in ("role", "content", "tool_calls") if k in m})
    return out


def _preference(record) -> tuple[dict | None, str | None]:
    """One TRL preference record in any of its layouts -> conversational with explicit prompt,
    rendered in the judge's one prompt layout (tools as signatures, calls as text)."""
    if not isinstance(record, dict) or "chosen" not in record or "rejected" not in record:
        return None, "missing_chosen_or_rejected"
    chosen, rejected = record["chosen"], record["rejected"]
    if "prompt" in record:
        prompt = _as_messages(record["prompt"], "user")
        chosen, rejected = _as_messages(chosen, "assistant"), _as_messages(rejected, "assistant")
    elif isinstance(chosen, str) and isinstance(rejected, str):  # implicit prompt: the shared text prefix
        k = 0
        while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
            k += 1
        prompt = _message("user", chosen[:k]) if k else []
        chosen, rejected = _message("assistant", chosen[k:]), _message("assistant", rejected[k:])
    else:  # implicit prompt: the shared leading messages
        chosen, rejected = _as_messages(chosen, "assistant"), _as_messages(rejected, "assistant")
        if chosen is None or rejected is None:
            return None, "chosen_or_rejected_not_text_or_messages"
        k = 0
        while k < min(len(chosen), len(rejected)) - 1 and chosen[k] == rejected[k]:
            k += 1
        prompt, chosen, rejected = chosen[:k], chosen[k:], rejected[k:]
    if prompt is None or not chosen or not rejected:
        return None, "chosen_or_rejected_not_text_or_messages"
    if any(m["role"] == "system" for m in chosen + rejected):
        return None, "system_turn_in_answer"
    try:
        tools = tools_list(record.get("tools"))
    except RecordError as exc:
        return None, exc.reason
    pair = {}
    for key, answer in (("chosen", chosen), ("rejected", rejected)):
        rendered = judge_prompt(tools, prompt + answer)
        pair["prompt"], pair[key] = rendered[:-len(answer)], rendered[-len(answer):]
    if pair["chosen"] == pair["rejected"]:
        return None, "chosen_equals_rejected"
    return pair, None


def _given_pairs(opts: JudgeDataOptions, stats: dict, rejects: list) -> list[dict]:
    pairs = []
    for path in opts.preferences:
        for raw in read_records(path):
            stats["preferences"]["in"] += 1
            pair, reason = (None, "invalid_json") if raw.error else _preference(raw.record)
            if reason:
                _reject(rejects, raw, reason)
                continue
            stats["preferences"]["ok"] += 1
            pairs.append({**pair, "source": "preferences", "reason": "given",
                          "group": json.dumps(pair["prompt"], sort_keys=True)})
    stats["pairs"]["preferences"] = len(pairs)
    return pairs


def build(opts: JudgeDataOptions) -> dict:
    """Write the preference dataset, results, rejects and stats to ``opts.out``; return the stats."""
    from datasets import Dataset, DatasetDict

    stats = {"problems": {"in": 0, "ok": 0, "rejected": 0}, "traces": {"in": 0, "ok": 0, "rejected": 0},
             "preferences": {"in": 0, "ok": 0, "rejected": 0},
             "candidates": {}, "sandbox": Counter(), "pairs": {}, "rejects_by_reason": {}}
    rejects, results = [], []
    pairs = _code_pairs(opts, stats, rejects, results) if opts.problems else []
    pairs += _tool_pairs(opts, stats, rejects)
    pairs += _given_pairs(opts, stats, rejects)
    for kind in ("problems", "traces", "preferences"):
        stats[kind]["rejected"] = stats[kind]["in"] - stats[kind]["ok"]
    stats["rejects_by_reason"] = dict(Counter(r["reason"].split(":")[0] for r in rejects))
    if not pairs:
        raise FinetuneError("judge data: no preference pairs could be made; see the reasons above in "
                            + json.dumps(stats["rejects_by_reason"]))
    rng = random.Random(opts.seed)
    rng.shuffle(pairs)
    splits = {"train": [], "validation": []}
    for pair in pairs:
        held_out = _in_validation(pair.pop("group"), opts.validation_fraction, opts.seed)
        splits["validation" if held_out else "train"].append(pair)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    DatasetDict({k: Dataset.from_list(v) for k, v in splits.items() if v}).save_to_disk(str(out / "dataset"))
    stats["splits"] = {k: len(v) for k, v in splits.items()}
    stats["sandbox"] = dict(stats["sandbox"])
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    (out / "rejects.jsonl").write_text("".join(json.dumps(r, default=str) + "\n" for r in rejects))
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def load_pairs(folders: list[str]):
    """train and validation splits of every judge data folder, concatenated."""
    from datasets import concatenate_datasets, load_from_disk

    splits: dict[str, list] = {"train": [], "validation": []}
    for folder in folders:
        if not (Path(folder) / "dataset").exists():
            raise FinetuneError(f"judge.datasets: {folder} is not a `finetune judge data` folder (no dataset/)")
        data = load_from_disk(str(Path(folder) / "dataset"))
        for name in splits:
            if name in data:
                splits[name].append(data[name])
    if not splits["train"]:
        raise FinetuneError(f"judge.datasets {folders}: no training pairs")
    return {k: concatenate_datasets(v) if v else None for k, v in splits.items()}
