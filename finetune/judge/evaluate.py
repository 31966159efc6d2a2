"""``finetune judge eval``: how good is the judge on pairs it never trained on, and how biased.

* pairwise accuracy on the held-out (validation) pairs, overall, per source (``code:mutant``,
  ``code:candidate``, ``tools``, ``preferences``) and per corruption/failure reason;
* length bias: the correlation of the score with the answer's length in characters (a judge
  that prefers longer answers shows a clearly positive number);
* calibration: each pair in both orders, ``P(first is better) = sigmoid((s1 - s2) / T)`` against
  how often the first really is, in ten bins, as ``calibration.png`` and in ``eval.json``. ``T``
  (``temperature``) is fitted on these pairs (least log-loss) and goes into the run's
  ``judge.json``: the pool turns the judge's scores into the probability that its pick is right
  with it (the fusion record's ``confidence``). The expected calibration error (ECE) is reported
  before and after;
* for generative judges, agreement of the verdict after swapping the candidates' order
  (position bias) and the share of verdicts that parse;
* scoring throughput in candidates per second.

Example::

    metrics = evaluate(Path("runs/judge"), ["runs/judge-data"], Path("runs/judge"))
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from finetune import FinetuneError
from finetune.judge.data import load_pairs


def _by(keys: list[str], correct: list[bool]) -> dict:
    groups = defaultdict(list)
    for k, c in zip(keys, correct, strict=True):
        groups[k].append(c)
    return {k: {"pairs": len(v), "accuracy": round(sum(v) / len(v), 4)} for k, v in sorted(groups.items())}


def _bins(p: np.ndarray, y: np.ndarray) -> list[dict]:
    bins = []
    for lo in np.arange(0, 1, 0.1):
        sel = (p >= lo) & (p < lo + 0.1 if lo < 0.85 else p <= 1)
        if sel.any():
            bins.append({"from": round(float(lo), 1), "predicted": round(float(p[sel].mean()), 4),
                         "observed": round(float(y[sel].mean()), 4), "pairs": int(sel.sum())})
    return bins


def _ece(bins: list[dict]) -> float:
    """Expected calibration error: the pair-weighted mean gap between predicted and observed."""
    total = sum(b["pairs"] for b in bins)
    return round(sum(b["pairs"] * abs(b["predicted"] - b["observed"]) for b in bins) / total, 4)


def _both_orders(diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first = chosen, outcome 1, diff d) and (first = rejected, outcome 0, diff -d) for each pair."""
    return np.concatenate([diffs, -diffs]), np.concatenate([np.ones_like(diffs), np.zeros_like(diffs)])


def fit_temperature(diffs: np.ndarray) -> float:
    """The T of ``sigmoid(d / T)`` with the least log-loss on both orders of every pair."""
    d, y = _both_orders(diffs)
    grid = np.logspace(-2, 2, 401)
    loss = [np.mean(np.logaddexp(0, -d / t) * y + np.logaddexp(0, d / t) * (1 - y)) for t in grid]
    return round(float(grid[int(np.argmin(loss))]), 4)


def _calibration(diffs: np.ndarray, out: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d, y = _both_orders(diffs)
    t = fit_temperature(diffs)
    raw = _bins(1 / (1 + np.exp(-d)), y)
    bins = _bins(1 / (1 + np.exp(-d / t)), y)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.plot([b["predicted"] for b in raw], [b["observed"] for b in raw], "o-", alpha=0.5, label="judge, raw")
    ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], "o-", label=f"judge, T = {t:g}")
    ax.set_xlabel("predicted P(first answer is better)")
    ax.set_ylabel("observed share")
    ax.set_title("judge calibration (held-out pairs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return {"temperature": t, "ece": {"raw": _ece(raw), "calibrated": _ece(bins)}, "bins": bins}


def _reward_metrics(run: Path, pairs, out: Path) -> dict:
    from finetune.judge.score import RewardJudge

    judge = RewardJudge.from_run(run)
    start = time.perf_counter()
    chosen = judge.score(pairs["prompt"], pairs["chosen"])
    rejected = judge.score(pairs["prompt"], pairs["rejected"])
    seconds = time.perf_counter() - start
    correct = [c > r for c, r in zip(chosen, rejected, strict=True)]
    lengths = [len(a[-1]["content"]) for a in pairs["chosen"]] + [len(a[-1]["content"]) for a in pairs["rejected"]]
    scores = chosen + rejected
    corr = float(np.corrcoef(lengths, scores)[0, 1]) if np.std(lengths) > 0 and np.std(scores) > 0 else 0.0
    return {"pairs": len(correct), "accuracy": round(sum(correct) / len(correct), 4),
            "by_source": _by(pairs["source"], correct), "by_reason": _by(
                [r.split(":")[0] for r in pairs["reason"]], correct),
            "length_score_correlation": round(corr, 4),
            "calibration": _calibration(np.array(chosen) - np.array(rejected), out / "calibration.png"),
            "candidates_per_second": round(2 * len(correct) / seconds, 1)}


def evaluate(run: Path, datasets: list[str], out: Path) -> dict:
    """Score the held-out pairs of ``datasets`` with the judge in ``run``; write ``out/eval.json``."""
    run, out = Path(run), Path(out)
    info_path = run / "judge.json"
    if not info_path.exists():
        raise FinetuneError(f"{run} is not a judge run folder (no judge.json)")
    info = json.loads(info_path.read_text())
    pairs = load_pairs(datasets)["validation"]
    if pairs is None or len(pairs) == 0:
        raise FinetuneError(f"{datasets}: no held-out (validation) pairs to evaluate on")
    out.mkdir(parents=True, exist_ok=True)
    if info["kind"] == "reward_model":
        metrics = _reward_metrics(run, pairs, out)
    else:
        from finetune.judge.generative import generative_metrics

        metrics = generative_metrics(run, pairs, out)
    metrics = {"judge": str(run), "kind": info["kind"], "datasets": list(datasets), **metrics}
    (out / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
