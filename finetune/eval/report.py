"""The report of ``finetune eval``: which one should you ship?

:func:`summarise` turns the answers of an evaluation run (one row per contender and task) into
everything the report shows: per contender accuracy with a 95% interval, the paired difference to
the baseline, latency, tokens, cost, throughput and breakdowns; and every two contenders compared
on their common tasks, which the recommendation needs. :func:`write_report` writes ``report.md``,
``report.json`` (the summary) and three plots. Numbers without intervals would rank noise.

The recommendation rule (:func:`recommendation`), so that a noisy lead never decides alone:

1. consider the contenders that ran (a contender that failed to start is never recommended);
2. take the one with the best accuracy;
3. the candidates are it and those not significantly worse than it: paired p >= 0.05 against the
   best on their common tasks (McNemar exact when both score 0/1, else the paired bootstrap), or a
   difference in their favour there; one that shares no task with the best is not a candidate;
4. ship the cheapest candidate (cost per request), then the one with the lowest p50 latency.

The sentence gives the shipped contender's accuracy, interval, difference to the baseline and
cost; when the baseline is shipped it names the best alternative that does not pay; when a pool
(``pool`` or ``self_fusion``) ran and is not shipped it says what the best-scoring pool would have
given for its cost; when a pool is shipped it says what it gains over the best single model and
what it costs more.

Example::

    summary = summarise(contenders, rows, baseline="base")
    print(verdict_table(summary))
    write_report(summary, Path("runs/eval"))
    # Ship tuned: 62.0% [54.1, 69.4] on 120 tasks, +31.0 points over base (p < 0.001), at 1.0x base's
    # cost and 0.8 s p50; the pool does not pay here: demo-pool/best_of scores 64.0% (+2.0 points
    # over tuned, p = 0.62) at 3.0x the cost.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from finetune.eval.plots import draw
from finetune.eval.stats import mean_interval, paired_difference, pass_at_k, percentiles

ALPHA = 0.05
POOL_KINDS = ("pool", "self_fusion")
PASS_KS = (1, 5, 10)
HOW_TO_READ = (
    "Each accuracy comes with a 95% interval: the range of true accuracies these tasks are compatible with (Wilson "
    "score interval when every answer is right or wrong, a bootstrap over tasks when code tasks score partial credit). "
    "The comparison with the baseline is paired, on the tasks both answered: the difference in points with a "
    "paired-bootstrap 95% interval, and a p-value from McNemar's exact test (only the tasks exactly one of the two got "
    "right count) when both are scored 0/1, else from the bootstrap. p < 0.05 means a difference this large would be "
    "rare if the two were equally good; an interval that includes 0 means these tasks cannot tell them apart. The "
    "recommendation takes the most accurate contender and every one not significantly worse than it (p >= 0.05), "
    "and ships the cheapest of those, then the fastest.")


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits) + 0.0  # + 0.0: no -0.0 in the report


def _accuracy_by(rows: list[dict], key) -> dict:
    groups = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r["score"])
    return {k: (len(v), _r(sum(v) / len(v))) for k, v in sorted(groups.items())}


def _pass_at(rows: list[dict]) -> list[dict]:
    samples = [r["samples"] for r in rows if r["kind"] == "code" and r.get("samples")]
    top = max((len(s) for s in samples), default=0)
    if top <= 1:
        return []  # with one sample per task pass@1 is the accuracy already shown
    out = []
    for k in sorted({k for k in PASS_KS if k <= top} | {top}):  # and pass@n: any of the n samples right
        values = [pass_at_k(len(s), sum(map(bool, s)), k) for s in samples if len(s) >= k]
        out.append({"k": k, "tasks": len(values), "value": _r(sum(values) / len(values))})
    return out


def _points(d: dict, flip: bool = False) -> dict:
    """A paired difference in percentage points; ``flip`` turns A - B into B - A."""
    s = -1 if flip else 1
    low, high = (-d["high"], -d["low"]) if flip else (d["low"], d["high"])
    out = {"points": _r(100 * s * d["diff"], 2), "low": _r(100 * low, 2), "high": _r(100 * high, 2),
           "p": d["p"], "test": d["test"], "tasks": d["tasks"]}
    if "discordant" in d:
        out["discordant"] = d["discordant"][::-1] if flip else list(d["discordant"])
    return out


def _entry(c: dict, rows: list[dict], base_cost: float | None, vs_base: dict | None) -> dict:
    e = {k: c.get(k) for k in ("name", "kind", "description", "status", "error", "wall_s", "calls_per_request")}
    e["tasks"] = len(rows)
    if c["status"] != "ok" or not rows:
        return e
    acc = mean_interval([r["score"] for r in rows])
    p50, p95 = percentiles([r["latency_s"] for r in rows])
    cost = 1000 * sum(r["cost"] for r in rows) / len(rows)
    wrong = Counter(r["reason"] for r in rows if r["score"] < 1)
    e |= {"accuracy": _r(acc["mean"]), "ci": [_r(acc["low"]), _r(acc["high"])], "interval": acc["method"],
          "vs_baseline": vs_base, "latency_p50": _r(p50, 3), "latency_p95": _r(p95, 3),
          "tokens_in": _r(sum(r["tokens_in"] for r in rows) / len(rows), 1),
          "tokens_out": _r(sum(r["tokens_out"] for r in rows) / len(rows), 1),
          "cost_per_1k": _r(cost), "relative_cost": _r(cost / base_cost, 3) if base_cost else None,
          "answers_per_s": _r(len(rows) / c["wall_s"], 3) if c.get("wall_s") else None,
          "by_category": [{"kind": k, "category": cat, "tasks": n, "accuracy": a}
                          for (k, cat), (n, a) in _accuracy_by(rows, lambda r: (r["kind"], r["category"])).items()],
          "by_step": [{"step": s, "tasks": n, "accuracy": a} for s, (n, a) in _accuracy_by(
              [r for r in rows if r["kind"] == "tool" and r.get("step") is not None], lambda r: r["step"]).items()],
          "pass_at_k": _pass_at(rows), "failure_reasons": [[why, n] for why, n in wrong.most_common(10)],
          "judge": _judge_adds(rows)}
    return e


def _judge_adds(rows: list[dict]) -> dict | None:
    """A pool's judge against a random pick, on the requests where it chose among several valid answers:
    the share it got right, the expected share of a uniformly random pick among the same answers, and
    the share where at least one of them was right (what a perfect judge would get)."""
    choices = [j for r in rows for j in (r.get("judge") or [])]
    if not choices:
        return None
    n = len(choices)
    return {"choices": n, "judge": _r(sum(j["picked"] for j in choices) / n),
            "random_pick": _r(sum(j["random"] for j in choices) / n),
            "oracle": _r(sum(j["oracle"] for j in choices) / n)}


def summarise(contenders: list[dict], rows: list[dict], baseline: str) -> dict:
    """Everything the report shows, JSON-serialisable (this is report.json): run-level task counts,
    one entry per contender in run order (failed ones with their error and no numbers), the paired
    comparison of every two contenders that ran (``pairwise[a][b]``: a minus b in points), the
    contender to ship, the candidates it was chosen from and the recommendation sentence."""
    names = [c["name"] for c in contenders]
    if baseline not in names:
        raise ValueError(f"baseline {baseline!r} is not a contender ({', '.join(names)})")
    by = defaultdict(list)
    for r in rows:
        if r["contender"] not in names:
            raise ValueError(f"row for unknown contender {r['contender']!r} (task {r['task_id']})")
        by[r["contender"]].append(r)
    ran = [c["name"] for c in contenders if c["status"] == "ok" and by[c["name"]]]
    scores = {n: {r["task_id"]: r["score"] for r in by[n]} for n in ran}
    pairwise = {n: {} for n in ran}
    for i, a in enumerate(ran):
        for b in ran[i + 1:]:
            common = [t for t in scores[a] if t in scores[b]]
            if common:  # the same seed for every pair keeps the report reproducible
                d = paired_difference([scores[a][t] for t in common], [scores[b][t] for t in common])
                pairwise[a][b], pairwise[b][a] = _points(d), _points(d, flip=True)
    base_cost = 1000 * sum(r["cost"] for r in by[baseline]) / len(by[baseline]) if baseline in ran else None
    tasks = {r["task_id"]: (r["kind"], r["category"]) for r in rows}
    summary = {
        "baseline": baseline,
        "tasks": {"total": len(tasks), "by_kind": dict(sorted(Counter(k for k, _ in tasks.values()).items())),
                  "by_category": [{"kind": k, "category": c, "tasks": n}
                                  for (k, c), n in sorted(Counter(tasks.values()).items())]},
        "contenders": [_entry(c, by[c["name"]], base_cost, pairwise.get(c["name"], {}).get(baseline))
                       for c in contenders],
        "pairwise": pairwise,
    }
    decision = _decide(summary)
    summary |= {"ship": decision["ship"], "candidates": decision["candidates"],
                "recommendation": recommendation(summary)}
    return summary


def _ran(summary: dict) -> list[dict]:
    """The contenders that started and answered: the only ones with numbers, the only ones to ship."""
    return [e for e in summary["contenders"] if e["status"] == "ok" and e["tasks"]]


def _decide(summary: dict) -> dict:
    """The rule of the module docstring, on a summary: ``{"ship", "best", "candidates"}``."""
    order = {e["name"]: i for i, e in enumerate(summary["contenders"])}
    ran = _ran(summary)
    if not ran:
        return {"ship": None, "best": None, "candidates": []}
    best = min(ran, key=lambda e: (-e["accuracy"], e["cost_per_1k"], e["latency_p50"], order[e["name"]]))
    vs = {e["name"]: summary["pairwise"][e["name"]].get(best["name"]) for e in ran}
    # Without a common task there is no evidence that a contender is as good as the best.
    candidates = [e for e in ran if e is best or vs[e["name"]] and (vs[e["name"]]["p"] >= ALPHA or
                                                                    vs[e["name"]]["points"] >= 0)]
    ship = min(candidates, key=lambda e: (e["cost_per_1k"], e["latency_p50"], order[e["name"]]))
    return {"ship": ship["name"], "best": best["name"], "candidates": [e["name"] for e in candidates]}


def _p(p: float) -> str:
    # Three significant digits below 0.1, so 0.0496 never reads as "0.050" next to the 0.05 line.
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}" if p < 0.1 else f"p = {p:.2f}"


def _pts(points: float) -> str:
    """Signed points, one decimal; a difference that rounds to zero is 0.0, not -0.0."""
    return "0.0" if round(points, 1) == 0 else f"{points:+.1f}"


def _x(ratio: float) -> str:
    return f"{ratio:.1f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def _s(seconds: float) -> str:
    return f"{seconds:.1f}" if seconds >= 0.1 else f"{seconds:.3f}"


def _pct(a: float | None) -> str:
    return "" if a is None else f"{100 * a:.1f}%"


def _acc(e: dict) -> str:
    return f"{100 * e['accuracy']:.1f}% [{100 * e['ci'][0]:.1f}, {100 * e['ci'][1]:.1f}]"


def _vs(summary: dict, a: dict, b: dict) -> tuple[str, str]:
    """("+2.0 points over b" or "3.0 points below b", "p = 0.62"): a against b from their paired
    comparison, or from plain accuracies when they share no task."""
    vs = summary["pairwise"][a["name"]].get(b["name"])
    points = vs["points"] if vs else 100 * (a["accuracy"] - b["accuracy"])
    words = f"{_pts(points)} points over {b['name']}" if points >= 0 else f"{-points:.1f} points below {b['name']}"
    return words, _p(vs["p"]) if vs else "no common tasks"


def recommendation(summary: dict) -> str:
    """One plain sentence: what to ship and why, by the rule of the module docstring, with the
    shipped contender's accuracy and interval, its difference to the baseline, its cost and p50
    latency, and what the alternatives (a pool above all) would have given for their cost."""
    d = _decide(summary)
    if d["ship"] is None:
        failed = "; ".join(f"{e['name']} failed to start: {e['error']}" for e in summary["contenders"]
                           if e["status"] != "ok")
        return "Ship nothing: no contender ran" + (f" ({failed})." if failed else ".")
    by = {e["name"]: e for e in summary["contenders"]}
    ship, base, best = by[d["ship"]], by[summary["baseline"]], by[d["best"]]
    ran = _ran(summary)
    text = f"Ship {ship['name']}: {_acc(ship)} on {ship['tasks']} tasks"
    if ship is base:
        reason = ("the only contender that ran" if len(ran) == 1 else "the most accurate" if ship is best
                  else "since nothing is significantly better")
        text += f" at {_s(ship['latency_p50'])} s p50, {reason}"
    elif ship["relative_cost"] is not None:
        words, p = _vs(summary, ship, base)
        vs = summary["pairwise"][ship["name"]].get(base["name"])
        if vs and vs["p"] >= ALPHA:  # shipped for being as good and no dearer, not for a proven gain
            p += ", not significant on these tasks"
        text += (f", {words} ({p}), at {_x(ship['relative_cost'])} {base['name']}'s cost"
                 f" and {_s(ship['latency_p50'])} s p50")
    else:
        text += f", at {ship['cost_per_1k']:.4g} per 1k requests and {_s(ship['latency_p50'])} s p50"

    def cost(e: dict, of: dict = ship) -> str:  # e's cost next to another's, in words
        return f"{_x(e['cost_per_1k'] / of['cost_per_1k'])} the cost" if of["cost_per_1k"] else (
            f"a cost of {e['cost_per_1k']:.4g} per 1k requests")

    others = sorted((e for e in ran if e is not ship), key=lambda e: -e["accuracy"])
    singles = [e for e in others if e["kind"] not in POOL_KINDS]
    pools = [e for e in others if e["kind"] in POOL_KINDS]
    # The best single alternative gets its own clause when it is why the user might hesitate.
    if singles and ship["kind"] not in POOL_KINDS and (ship is base or singles[0] is best):
        alt = singles[0]
        words, p = _vs(summary, alt, ship)
        text += f"; {alt['name']} does not pay here: it scores {_pct(alt['accuracy'])} ({words}, {p}) at {cost(alt)}"
    if ship["kind"] in POOL_KINDS and singles:
        words, p = _vs(summary, ship, singles[0])
        text += f"; the pool pays here: {words}, the best single model ({p}), at {cost(ship, singles[0])}"
    elif ship["kind"] not in POOL_KINDS and pools:
        words, p = _vs(summary, pools[0], ship)
        text += (f"; the pool does not pay here: {pools[0]['name']} scores {_pct(pools[0]['accuracy'])}"
                 f" ({words}, {p}) at {cost(pools[0])}")
    return text + "."


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows])


def verdict_table(summary: dict) -> str:
    """The verdict table as Markdown (what report.md opens with; the CLI prints it too), one row per
    contender in run order; the shipped one is marked, one that failed to start shows its error."""
    base = summary["baseline"]
    header = ["contender", "accuracy [95% CI]", f"vs {base} (points, [CI], p)", "p50 / p95 latency",
              "tokens in / out", "cost per 1k requests (relative)", "answers/s"]
    rows = []
    for e in summary["contenders"]:
        name = f"**{e['name']}** (ship)" if e["name"] == summary.get("ship") else e["name"]
        if e["status"] != "ok" or not e["tasks"]:
            why = f"failed to start: {e['error']}" if e["status"] != "ok" else "no answers"
            rows.append([name, why] + [""] * 5)
            continue
        vs = e["vs_baseline"]
        rows.append([
            name, _acc(e),
            "baseline" if e["name"] == base else
            f"{_pts(vs['points'])} [{_pts(vs['low'])}, {_pts(vs['high'])}], {_p(vs['p'])}" if vs else "n/a",
            f"{_s(e['latency_p50'])} / {_s(e['latency_p95'])} s", f"{e['tokens_in']:.0f} / {e['tokens_out']:.0f}",
            f"{e['cost_per_1k']:.4g}" + (f" ({_x(e['relative_cost'])})" if e["relative_cost"] is not None else ""),
            f"{e['answers_per_s']:.2f}" if e["answers_per_s"] is not None else "n/a"])
    return _table(header, rows)


def _breakdowns(summary: dict, ran: list[dict]) -> list[str]:
    """The per-category, per-step, pass@k and failure-reason sections of report.md."""
    names = [e["name"] for e in ran]
    cats = {(c["kind"], c["category"]): c["tasks"] for c in summary["tasks"]["by_category"]}
    acc = {e["name"]: {(c["kind"], c["category"]): c["accuracy"] for c in e["by_category"]} for e in ran}
    out = ["## Per category", "", _table(["kind", "category", "tasks"] + names, [
        [k, c, n] + [_pct(acc[m].get((k, c))) for m in names] for (k, c), n in cats.items()]), ""]
    steps = {e["name"]: {s["step"]: s for s in e["by_step"]} for e in ran}
    if any(steps.values()):
        keys = sorted({s for v in steps.values() for s in v})
        out += ["## Per step (tool tasks, by turn of the agent loop)", "", _table(["step"] + names, [
            [s] + [f"{_pct(steps[m][s]['accuracy'])} ({steps[m][s]['tasks']})" if s in steps[m] else ""
                   for m in names] for s in keys]), ""]
    with_k = [e for e in ran if e["pass_at_k"]]
    if with_k:
        ks = sorted({p["k"] for e in with_k for p in e["pass_at_k"]})
        out += ["## pass@k (code tasks with several samples)", "", _table(["contender"] + [f"pass@{k}" for k in ks], [
            [e["name"]] + [next((_pct(p["value"]) for p in e["pass_at_k"] if p["k"] == k), "") for k in ks]
            for e in with_k]), ""]
    judged = [e for e in ran if e.get("judge")]
    if judged:
        out += ["## What the judge adds", "", "On the requests where the pool's judge chose among several valid "
                "answers: how often its pick was right, what a random pick among the same answers would score, and "
                "how often any of them was right (a perfect judge).", "",
                _table(["contender", "choices", "judge", "random pick", "best possible"], [
                    [e["name"], e["judge"]["choices"], _pct(e["judge"]["judge"]), _pct(e["judge"]["random_pick"]),
                     _pct(e["judge"]["oracle"])] for e in judged]), ""]
    out += ["## Top failure reasons", ""]
    for e in ran:
        # Reasons are error text: a backtick or newline in one would break the code span.
        reasons = ", ".join("`" + " ".join(why.replace("`", "'").split()) + f"` x{n}"
                            for why, n in e["failure_reasons"])
        out.append(f"- **{e['name']}**: {reasons or 'none'}")
    return out + [""]


def write_report(summary: dict, out: Path) -> list[Path]:
    """Write out/report.md, out/report.json and PNG plots (out/plots/accuracy_vs_cost.png,
    out/plots/accuracy_vs_latency.png, out/plots/categories.png); returns the paths written.
    report.md opens with the verdict table and the recommendation, then the breakdowns, the plots
    (relative links, so the folder can be moved) and how to read the numbers."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ran = _ran(summary)
    plots = draw(summary, ran, out / "plots")
    t = summary["tasks"]
    kinds = ", ".join(f"{n} {k}" for k, n in t["by_kind"].items())
    lines = ["# Which one should you ship?", "", f"{t['total']} tasks ({kinds}); baseline: {summary['baseline']}.",
             "", verdict_table(summary), "", f"**{summary['recommendation']}**", "", "## Contenders", ""]
    lines += [f"- **{e['name']}** ({e['kind']}): {_cell(e['description'])}" + (
        f"; model calls per request: {e['calls_per_request']:g}" if e.get("calls_per_request") else "")
        for e in summary["contenders"]]
    lines += [""] + (_breakdowns(summary, ran) if ran else [])
    lines += ["## Plots", ""] + [f"![{p.stem.replace('_', ' ')}](plots/{p.name})" for p in plots] + [""]
    lines += ["## How to read this", "", HOW_TO_READ, ""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    return [out / "report.md", out / "report.json", *plots]
