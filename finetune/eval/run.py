"""``finetune eval``: every contender answers every task, answers are scored, and the report says
which one to ship.

The run reads top to bottom: load the tasks (bad records to ``rejects.jsonl`` with file and line),
expand the contenders (an export folder gives one per servable format, a pool one per mode), and
for each contender start it, answer what the cache does not already hold (in groups of
``concurrency``, behind a progress bar with ETA), score, and stop it. A contender that fails to
start is reported as failed and the others still run. Then ``answers.jsonl`` (every task, every
contender: raw answer, parsed calls or code, score and reason) and the report
(:mod:`finetune.eval.report`).

**Cache.** Each scored answer is appended to ``cache/<contender key>.jsonl`` as soon as it exists,
keyed by the task's hash (:func:`finetune.eval.tasks.task_key`), the sample index and the
decoding settings. The contender key hashes its recipe entry and the size and modification time
of every file it loads, so retraining or re-exporting a model invalidates its answers, and an
interrupted or repeated run recomputes nothing it already has.

Example::

    from finetune.contracts.schema import load_recipe
    summary = evaluate(load_recipe("recipes/eval/demo.yaml", [], EvalRecipe))
    print(summary["recommendation"])
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from pathlib import Path

from finetune import FinetuneError
from finetune.contracts.artifacts import HF_FORMATS
from finetune.data.prepare import Rejects
from finetune.eval import report
from finetune.eval.config import Contender as Spec
from finetune.eval.config import EvalRecipe
from finetune.eval.contenders import Contender, EndpointModel, GGUFModel, HFModel, PoolModel, Reply, read_wire_calls
from finetune.eval.score import score_calls
from finetune.eval.tasks import load_tasks, task_key
from finetune.judge.execute import FENCE
from finetune.judge.sandbox import Limits, Sandbox
from finetune.pool.manifest import artifact_root, artifacts_of, load_manifest


def _fingerprint(paths: list[Path]) -> list:
    """(file, size, mtime) of everything under ``paths``: changes when a model is retrained or re-exported."""
    out = []
    for p in paths:
        files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else []
        out += [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return out


def expand(spec: Spec) -> list[tuple[Contender, list[Path]]]:
    """The contender(s) a recipe entry stands for, each with the files it loads."""
    if spec.model:
        adapter = Path(spec.adapter) if spec.adapter else None
        return [(HFModel(spec.name, Path(spec.model), adapter, spec.cost), [Path(spec.model)] + [adapter] * bool(adapter))]
    if spec.endpoint:
        return [(EndpointModel(spec.name, spec.endpoint, spec.tool_call_format, spec.cost), [])]
    if spec.pool:
        m = load_manifest(Path(spec.pool))  # every model the pool loads, its judge included
        files = [Path(spec.pool)] + [artifact_root(Path(spec.pool), a) / a.path for _, a in artifacts_of(m) if a.root]
        modes = spec.modes or [m.fusion.mode]
        return [(PoolModel(spec.name if len(modes) == 1 else f"{spec.name}/{mode}", Path(spec.pool), mode,
                           spec.members, spec.samples), files) for mode in modes]
    folder = Path(spec.export)
    listing = folder / "artifacts.json"
    if not listing.is_file():
        raise FinetuneError(f"contender {spec.name}: {folder} has no artifacts.json; is it a `finetune export` folder?")
    info = json.loads(listing.read_text())
    out = []
    for a in info["artifacts"]:
        fmt, path = a["format"], folder / a["path"]
        if spec.formats and fmt not in spec.formats:
            continue
        name = f"{spec.name}/{fmt}"
        if fmt in HF_FORMATS:
            out.append((HFModel(name, path, cost=spec.cost), [path]))
        elif fmt.startswith("gguf-") and fmt != "gguf-lora":
            out.append((GGUFModel(name, path, cost=spec.cost), [path]))
        elif fmt == "adapter" and info.get("source", {}).get("base_model"):
            base = Path(info["source"]["base_model"])
            out.append((HFModel(name, base, path, cost=spec.cost), [base, path]))
    if len(out) == 1:  # one format: the contender keeps its own name
        out[0][0].name = spec.name
    if not out:
        raise FinetuneError(f"contender {spec.name}: nothing in {folder} that eval can run"
                            + (f" among formats {spec.formats}" if spec.formats else "")
                            + " (safetensors, bnb-nf4, GGUF models, or an adapter whose base is recorded)")
    return out


def extract_code(text: str, task: dict) -> str:
    """The program to test: the first fenced block of the answer (or all of it), after the problem's
    prompt (its imports and helpers); an answer that is only the body continues the prompt."""
    m = FENCE.search(text)
    code = m.group(1) if m else text
    defines = re.search(rf"^\s*def\s+{re.escape(task['entry_point'])}\s*\(", code, re.M)
    return task["prompt"] + ("\n\n" + code if defines else code)


class _Scorer:
    def __init__(self, timeout_s: float):
        self.box = Sandbox(Limits(wall_seconds=timeout_s, cpu_seconds=max(1, int(timeout_s))))

    def __call__(self, task: dict, reply: Reply) -> tuple[bool, str, dict]:
        """(correct, reason, what was scored) of one reply; for a pool that chose among several valid
        answers, also whether each of them was right (what a random pick would have scored)."""
        if reply.failed:
            return False, reply.problem or "error", {}
        ok, reason, scored = self._score(task, reply.text, reply.calls, reply.problem)
        candidates = (reply.fusion or {}).get("candidates") or []
        if len(candidates) > 1:
            right = [self._score(task, c["content"] or "", *read_wire_calls(c, None)[1:])[0] for c in candidates]
            scored["judge"] = {"picked": ok, "candidates": len(right), "random": sum(right) / len(right),
                               "oracle": any(right)}
        return ok, reason, scored

    def _score(self, task: dict, text: str, calls: list[dict] | None, problem: str | None) -> tuple[bool, str, dict]:
        if task["kind"] == "code":
            program = extract_code(text, task)
            outcome = self.box.run(program, task["test"], task["entry_point"])
            return outcome.passed, "ok" if outcome.passed else outcome.reason, {"code": program}
        if calls is None:
            return False, problem or "unparseable", {"calls": None}
        ok, reason = score_calls(calls, task["expected"], task["tools"])
        return ok, reason, {"calls": calls}


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _load_cache(path: Path) -> dict[str, dict]:
    out = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                out[row["key"]] = row
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut short by an interruption: that answer is asked again
    return out


async def _run_one(c: Contender, files: list[Path], spec: Spec, recipe: EvalRecipe, jobs: list[tuple[dict, int, dict]],
                   cache_dir: Path, scorer: _Scorer, bar) -> tuple[dict, list[dict]]:
    """Answer and score every (task, sample) job for one contender; its meta and cached rows."""
    ckey = _key({"spec": spec.model_dump(), "name": c.name, "files": _fingerprint(files)})
    cache_path = cache_dir / f"{re.sub(r'[^A-Za-z0-9._-]', '_', c.name)}-{ckey}.jsonl"
    cached = _load_cache(cache_path)
    keyed = [(_key([task_key(t), s, g]), t, s, g) for t, s, g in jobs]
    todo = [j for j in keyed if j[0] not in cached]
    bar.update(len(keyed) - len(todo))
    meta = {"name": c.name, "kind": c.kind, "description": c.description, "status": "ok", "error": None,
            "wall_s": 0.0, "cached": len(keyed) - len(todo)}
    if todo:
        bar.set_description(f"{c.name} (starting)")
        try:
            await c.start()
        except Exception as exc:  # noqa: BLE001 (any failure to start is reported; the others still run)
            meta.update(status="failed", error=f"{type(exc).__name__}: {exc}".strip()[:500])
            bar.update(len(todo))
            return meta, []
        bar.set_description(c.name)
        try:
            with cache_path.open("a", encoding="utf-8") as fh:
                for i in range(0, len(todo), recipe.concurrency):
                    group = todo[i:i + recipe.concurrency]
                    # a group shares one decoding setting: split it where the setting changes
                    for gen in {json.dumps(g, sort_keys=True): g for _, _, _, g in group}.values():
                        part = [j for j in group if j[3] == gen]
                        start = time.perf_counter()
                        replies = await c.answer([t for _, t, _, _ in part], gen)
                        share = (time.perf_counter() - start) / len(part)  # of the contender's answering time
                        for (key, task, sample, _), reply in zip(part, replies, strict=True):
                            ok, reason, scored = await asyncio.to_thread(scorer, task, reply)
                            row = {"key": key, "task_id": task["id"], "sample": sample, "correct": ok,
                                   "reason": reason, "wall_s": share, "reply": reply.__dict__, **scored}
                            cached[key] = row
                            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                            fh.flush()
                        bar.update(len(part))
        finally:
            await c.close()
    got = [cached[k] for k, _, _, _ in keyed]
    meta["wall_s"] = round(sum(a.get("wall_s", 0.0) for a in got), 3)
    return meta, got


def _rows(meta: dict, answers: list[dict], tasks: dict[str, dict]) -> list[dict]:
    """One row per task (its samples folded together) in the shape the report reads."""
    by_task: dict[str, list[dict]] = {}
    for a in answers:
        by_task.setdefault(a["task_id"], []).append(a)
    rows = []
    for tid, group in by_task.items():
        t, n = tasks[tid], len(group)
        replies = [a["reply"] for a in group]
        rows.append({"contender": meta["name"], "task_id": tid, "kind": t["kind"], "category": t["category"],
                     "step": t["step"], "score": sum(a["correct"] for a in group) / n,
                     "samples": [a["correct"] for a in group] if t["kind"] == "code" else None,
                     "latency_s": sum(r["latency_s"] for r in replies) / n,
                     "tokens_in": sum(r["tokens_in"] for r in replies) / n,
                     "tokens_out": sum(r["tokens_out"] for r in replies) / n,
                     "cost": sum(r["cost"] for r in replies) / n,
                     "reason": next((a["reason"] for a in group if not a["correct"]), "ok"),
                     "judge": [a["judge"] for a in group if "judge" in a] or None})
    return rows


async def _evaluate(recipe: EvalRecipe, tasks: list[dict], out: Path, show_progress: bool):
    from tqdm import tqdm

    g = recipe.generation
    greedy = {"max_tokens": g.max_tokens, "temperature": g.temperature, "top_p": g.top_p, "seed": recipe.seed}
    jobs = []
    for t in tasks:
        if t["kind"] == "code" and recipe.tasks.code_samples > 1:
            jobs += [(t, s, {**greedy, "temperature": recipe.tasks.code_temperature, "seed": recipe.seed + s})
                     for s in range(recipe.tasks.code_samples)]
        else:
            jobs.append((t, 0, greedy))
    expanded = []
    for spec in recipe.contenders:
        try:
            expanded += [(c, files, spec) for c, files in expand(spec)]
        except FinetuneError as exc:  # reported like a contender that fails to start
            expanded.append((None, str(exc), spec))
    scorer = _Scorer(recipe.tasks.code_timeout_s)
    cache_dir = out / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    metas, answers = [], {}
    with tqdm(total=len(jobs) * len(expanded), disable=not show_progress, unit="answer", dynamic_ncols=True) as bar:
        for c, files, spec in expanded:
            if c is None:
                metas.append({"name": spec.name, "kind": "model", "description": "", "status": "failed",
                              "error": files, "wall_s": 0.0, "cached": 0})
                bar.update(len(jobs))
                continue
            meta, got = await _run_one(c, files, spec, recipe, jobs, cache_dir, scorer, bar)
            metas.append(meta)
            answers[c.name] = got
    return metas, answers


def evaluate(recipe: EvalRecipe, show_progress: bool = True) -> dict:
    """Run the evaluation the recipe describes; write the report and answers into ``recipe.out``;
    return the summary (what report.json holds)."""
    out = Path(recipe.out)
    out.mkdir(parents=True, exist_ok=True)
    with Rejects(out / "rejects.jsonl") as rejects:
        tasks, sources = load_tasks(recipe.tasks, rejects)
    names = [c.name for c in recipe.contenders]
    baseline = recipe.baseline or names[0]
    if baseline not in names:
        raise FinetuneError(f"baseline {baseline!r} is not a contender: {names}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    metas, answers = asyncio.run(_evaluate(recipe, tasks, out, show_progress))
    by_id = {t["id"]: t for t in tasks}
    rows = [r for m in metas if m["status"] == "ok" for r in _rows(m, answers[m["name"]], by_id)]
    # a baseline given by recipe name stands for its first expansion (`name/format`, `name/mode`)
    ran = [m["name"] for m in metas]
    baseline = baseline if baseline in ran else next(n for n in ran if n.startswith(f"{baseline}/"))
    with (out / "answers.jsonl").open("w", encoding="utf-8") as fh:
        for m in metas:
            for a in answers.get(m["name"], []):
                t = by_id[a["task_id"]]
                fh.write(json.dumps({"contender": m["name"], "task_id": t["id"], "kind": t["kind"],
                                     "category": t["category"], "step": t["step"], "sample": a["sample"],
                                     "answer": a["reply"]["text"], "calls": a.get("calls"), "code": a.get("code"),
                                     "expected": t.get("expected"), "correct": a["correct"], "reason": a["reason"],
                                     "latency_s": a["reply"]["latency_s"], "tokens_in": a["reply"]["tokens_in"],
                                     "tokens_out": a["reply"]["tokens_out"], "cost": a["reply"]["cost"],
                                     "fusion": a["reply"]["fusion"], "judge": a.get("judge")},
                                    ensure_ascii=False) + "\n")
    summary = report.summarise(metas, rows, baseline)
    summary["run"] = {"tasks": len(tasks), "sources": sources, "rejected": sum(s.get("rejected", 0) for s in
                                                                              sources.values()),
                      "generation": recipe.generation.model_dump(), "concurrency": recipe.concurrency,
                      "code_samples": recipe.tasks.code_samples, "seed": recipe.seed}
    summary["files"] = [str(p) for p in report.write_report(summary, out)] + [str(out / "answers.jsonl")]
    return summary
