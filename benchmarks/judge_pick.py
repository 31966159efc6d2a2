"""Is the pool's pick better than a coin on real tasks? Re-judges the valid answers a ``finetune
eval`` run saved for its pool and self-fusion contenders (``answers.jsonl``: every request's
candidates) with one or more reward judges, exactly as the gateway picks: the request rebuilt
and parsed as the gateway parses it, the request's own doctests and asserts run in the sandbox
first (``finetune.judge.execute``), ``judge_prompt`` + ``RewardJudge.score``, then
``hybrid_pick`` (the judge's calibrated probability plus call agreement). Each candidate is
scored right or wrong by the eval's own scorer (BFCL's AST rules, code executed).

Per contender and judge: the share of requests where the pick was right, next to a uniformly
random pick among the same valid answers (its expectation) and a perfect pick, with 95%
intervals and the paired difference pick - random (bootstrap over requests). Also the judge
alone (highest score, no agreement) and the agreement alone (most-shared calls; ties: random), so
each half of the hybrid is measured. The eval's tasks are evaluation data: no judge here was
trained or tuned on them.

    .venv/bin/python benchmarks/judge_pick.py --eval runs/bench-eval/eval --bfcl-limit 40 \\
        --judge demo=runs/judge --judge smollm2=/tmp/judges/smollm2
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _tasks(eval_dir: Path, bfcl_limit: int | None) -> dict[str, dict]:
    from finetune.contracts.schema import load_recipe
    from finetune.data.prepare import Rejects
    from finetune.eval.config import EvalRecipe
    from finetune.eval.tasks import load_tasks

    recipe_file = eval_dir.parent / "eval.yaml"
    overrides = [f"tasks.bfcl.limit={bfcl_limit}"] if bfcl_limit else []
    recipe = load_recipe(recipe_file, overrides, EvalRecipe)
    with Rejects(Path("/dev/null")) as rejects:
        tasks, _ = load_tasks(recipe.tasks, rejects)
    return {t["id"]: t for t in tasks}


def _choices(eval_dir: Path, tasks: dict[str, dict], scored: dict) -> list[dict]:
    """Every saved request that had two or more valid answers, with its parsed request; ``scored``
    gets every answer's score, per contender, by (task, sample)."""
    from finetune.pool.request import parse_request
    from finetune.pool.runtime import Answer

    out = []
    for line in (eval_dir / "answers.jsonl").read_text().splitlines():
        r = json.loads(line)
        candidates = (r.get("fusion") or {}).get("candidates") or []
        key = (r["task_id"], r["sample"])
        scored.setdefault(r["contender"], {})[key] = float(r["correct"])
        if len(candidates) < 2:
            continue
        if r["task_id"] not in tasks:
            raise SystemExit(f"task {r['task_id']} of {eval_dir}/answers.jsonl is not in the recipe's tasks; "
                             "pass the --bfcl-limit the eval ran with")
        task = tasks[r["task_id"]]
        body = {"model": "pool", "messages": task["messages"], **({"tools": task["tools"]} if task["tools"] else {})}
        out.append({"contender": r["contender"], "key": key, "task": task, "job": parse_request(json.dumps(body).encode()),
                    "answers": [Answer(c["member"], "ok", c["content"] or "", c.get("tool_calls") or [])
                                for c in candidates],
                    "recorded": r["judge"]["picked"]})
    return out


def _right(choices: list[dict]) -> None:
    """Whether each candidate is right, by the eval's scorer."""
    from finetune.eval.contenders import read_wire_calls
    from finetune.eval.run import _Scorer

    scorer = _Scorer(timeout_s=10.0)
    for c in choices:
        c["right"] = [scorer._score(c["task"], a.content, *read_wire_calls({"content": a.content, "tool_calls":
                                                                             a.tool_calls}, None)[1:])[0]
                      for a in c["answers"]]


def _executed(choices: list[dict]) -> None:
    """The candidates the judge sees after the request's own checks (as the gateway narrows them)."""
    from finetune.judge.execute import request_checks, run_checks
    from finetune.judge.sandbox import Sandbox

    box = Sandbox()
    for c in choices:
        checks = request_checks(c["job"].messages)
        keep = list(range(len(c["answers"])))
        if checks and not any(a.tool_calls for a in c["answers"]):
            passed = [i for i, a in enumerate(c["answers"]) if run_checks(box, a.content, checks).passed]
            keep = passed or keep
        c["judged"] = keep


def _interval(picks: list[float], random: list[float], group: list[dict], scored: dict[tuple, float],
              best: dict[tuple, float]) -> dict:
    """The pick's accuracy and its difference from a random pick, with 95% intervals; and, had the
    contender picked this way, its accuracy over all its tasks and the paired difference from the
    best single model (``best``) on them."""
    from finetune.eval.stats import mean_interval, paired_difference

    acc = mean_interval(picks)
    diff = paired_difference(picks, random)
    whole = {**scored, **{c["key"]: p for c, p in zip(group, picks, strict=True)}}
    keys = sorted(whole)
    vs_best = paired_difference([whole[k] for k in keys], [best[k] for k in keys])
    return {"accuracy": round(acc["mean"], 3), "ci": [round(acc["low"], 3), round(acc["high"], 3)],
            "minus_random": round(diff["diff"], 3), "minus_random_ci": [round(diff["low"], 3), round(diff["high"], 3)],
            "p": round(diff["p"], 3), "contender_accuracy": round(sum(whole.values()) / len(whole), 3),
            "minus_best_model": round(vs_best["diff"], 3), "minus_best_model_p": round(vs_best["p"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", type=Path, required=True, help="a `finetune eval` output folder (its parent holds eval.yaml)")
    ap.add_argument("--bfcl-limit", type=int, default=None, help="BFCL items per category the eval ran with")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    ap.add_argument("--judge", action="append", default=[], metavar="NAME=RUN", help="a reward judge run folder")
    args = ap.parse_args()

    from finetune.contracts.judging import judge_prompt
    from finetune.judge.score import RewardJudge
    from finetune.pool.runtime import agreement, as_judged, hybrid_pick

    scored: dict[str, dict[tuple, float]] = {}
    choices = _choices(args.eval, _tasks(args.eval, args.bfcl_limit), scored)
    _right(choices)
    _executed(choices)
    by = defaultdict(list)
    for c in choices:
        by[c["contender"]].append(c)
    singles = {n: v for n, v in scored.items() if n not in by}
    best_name = max(singles, key=lambda n: sum(singles[n].values()) / len(singles[n]))
    results = {"best_model": {"name": best_name, "accuracy": round(sum(singles[best_name].values())
                                                                   / len(singles[best_name]), 3)}}
    for contender, group in by.items():
        ctx = (group, scored[contender], singles[best_name])
        random = [sum(c["right"]) / len(c["right"]) for c in group]
        row = {"choices": len(group), "random_pick": round(sum(random) / len(group), 3),
               "perfect_pick": round(sum(any(c["right"]) for c in group) / len(group), 3),
               "the eval run's own pick": _interval([float(c["recorded"]) for c in group], random, *ctx)}
        votes = [agreement(c["answers"]) for c in group]
        row["call agreement alone"] = _interval(
            [(sum(r for r, v in zip(c["right"], vs, strict=True) if v == max(vs)) / vs.count(max(vs)))
             for c, vs in zip(group, votes, strict=True)], random, *ctx)
        row["request's checks, then random"] = _interval(
            [sum(c["right"][i] for i in c["judged"]) / len(c["judged"]) for c in group], random, *ctx)
        for spec in args.judge:
            name, _, run = spec.partition("=")
            judge = RewardJudge.from_run(Path(run))
            temperature = json.loads((Path(run) / "judge.json").read_text()).get("temperature")
            alone, hybrid = [], []
            for c in group:
                shown = [c["answers"][i] for i in c["judged"]]
                prompt = judge_prompt(c["job"].tools or [], c["job"].messages)
                scores = judge.score([prompt] * len(shown), [as_judged(a) for a in shown])
                alone.append(float(c["right"][c["judged"][max(range(len(shown)), key=scores.__getitem__)]]))
                hybrid.append(float(c["right"][c["judged"][hybrid_pick(scores, temperature, shown)[0]]]))
            row[f"{name}: judge alone"] = _interval(alone, random, *ctx)
            row[f"{name}: as the gateway picks"] = _interval(hybrid, random, *ctx)
        results[contender] = row
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    best = results.pop("best_model")
    print(f"best single model: {best['name']}, {best['accuracy']:.1%} of all tasks\n")
    print("| contender (requests; random, perfect pick) | pick | right [95% CI] | minus random [95% CI], p "
          "| contender, all tasks (minus best model, p) |")
    print("|---|---|---|---|---|")
    for contender, row in results.items():
        head = f"{contender} ({row['choices']}; {row['random_pick']:.1%}, {row['perfect_pick']:.1%})"
        for pick, r in row.items():
            if isinstance(r, dict):
                print(f"| {head} | {pick} | {r['accuracy']:.1%} [{r['ci'][0]:.1%}, {r['ci'][1]:.1%}] | "
                      f"{r['minus_random']:+.1%} [{r['minus_random_ci'][0]:+.1%}, {r['minus_random_ci'][1]:+.1%}], "
                      f"p={r['p']:.2f} | {r['contender_accuracy']:.1%} ({r['minus_best_model']:+.1%}, "
                      f"p={r['minus_best_model_p']:.2f}) |")
                head = ""


if __name__ == "__main__":
    main()
