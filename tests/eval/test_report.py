"""finetune.eval.stats and finetune.eval.report: the numbers against known values, and the report
and its one-sentence recommendation on small hand-built runs whose right answer is obvious."""

from __future__ import annotations

import json
from math import comb

import pytest

from finetune.eval.report import recommendation, summarise, verdict_table, write_report
from finetune.eval.stats import (
    bootstrap_mean,
    mcnemar_exact,
    mean_interval,
    paired_difference,
    pass_at_k,
    percentiles,
    wilson,
)

# --- stats ---------------------------------------------------------------------------------------


def test_wilson_known_values():
    assert wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=5e-5)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-5)  # stays inside [0, 1] at the edge
    assert wilson(10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        wilson(3, 0)


def test_pass_at_k_known_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 5) == 1.0
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(10, 0, 5) == 0.0
    # The product form against the binomial form (exact here with integers).
    assert pass_at_k(200, 3, 10) == pytest.approx(1 - comb(197, 10) / comb(200, 10), rel=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)


def test_mcnemar_exact():
    assert mcnemar_exact(9, 1) == pytest.approx(0.0215, abs=5e-5)
    assert mcnemar_exact(1, 9) == mcnemar_exact(9, 1)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert 0 < mcnemar_exact(3000, 2000) < 1e-40  # exact integers: no underflow to 0 or overflow


def test_paired_difference_binary_uses_mcnemar():
    a = [1] * 9 + [0] * 1 + [1] * 20 + [0] * 10  # 9 only-a, 1 only-b, 20 both right, 10 both wrong
    b = [0] * 9 + [1] * 1 + [1] * 20 + [0] * 10
    d = paired_difference(a, b)
    assert d["test"] == "McNemar exact" and d["discordant"] == [9, 1]
    assert d["p"] == pytest.approx(0.0215, abs=5e-5)
    assert d["diff"] == pytest.approx(8 / 40)
    assert d["low"] > 0  # the bootstrap interval agrees


def test_paired_bootstrap_excludes_zero_for_a_better_one_and_includes_it_for_twins():
    better = [min(1.0, 0.2 + 0.6 * (i % 5) / 4) for i in range(60)]
    worse = [max(0.0, s - 0.3) for s in better]
    d = paired_difference(better, worse)
    assert d["test"] == "paired bootstrap"
    assert 0 < d["low"] <= d["diff"] <= d["high"] and d["p"] < 0.001
    same = paired_difference(better, better)
    assert same["low"] <= 0 <= same["high"] and same["p"] == 1.0
    noisy = paired_difference([0.2, 0.8, 0.4, 0.6] * 5, [0.8, 0.2, 0.6, 0.4] * 5)
    assert noisy["low"] < 0 < noisy["high"] and noisy["p"] > 0.05
    assert paired_difference(better, worse, seed=3) == paired_difference(better, worse, seed=3)  # deterministic


def test_bootstrap_mean_and_interval_choice():
    scores = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] * 10
    mean, low, high = bootstrap_mean(scores)
    assert mean == pytest.approx(0.5) and low < 0.5 < high and high - low < 0.2
    assert bootstrap_mean(scores) == bootstrap_mean(scores)
    assert mean_interval(scores)["method"] == "bootstrap"
    wil = mean_interval([1, 1, 1, 1, 1, 1, 1, 1, 0, 0])
    assert wil["method"] == "wilson" and (wil["low"], wil["high"]) == pytest.approx((0.4902, 0.9433), abs=5e-5)


def test_percentiles():
    assert percentiles([float(i) for i in range(1, 101)]) == pytest.approx([50.5, 95.05])


# --- report --------------------------------------------------------------------------------------

N_TOOL = 120


def contender(name: str, kind: str = "model", status: str = "ok", error: str | None = None) -> dict:
    c = {"name": name, "kind": kind, "description": f"{name} ({kind})", "status": status, "error": error,
         "wall_s": 60.0}
    return c | {"calls_per_request": 3.0} if kind == "pool" else c


def tool_rows(name: str, right, cost: float, latency: float) -> list[dict]:
    """120 tool tasks in three categories over steps 0-2; ``right(i)`` says whether task i is right."""
    return [{"contender": name, "task_id": f"tool-{i}", "kind": "tool", "category": ("search", "edit", "shell")[i % 3],
             "step": i % 3, "score": 1.0 if right(i) else 0.0, "samples": None, "latency_s": latency + 0.01 * (i % 10),
             "tokens_in": 400, "tokens_out": 50, "cost": cost, "reason": "ok" if right(i) else
             ("wrong tool" if i % 2 else "bad arguments")} for i in range(N_TOOL)]


def code_rows(name: str, passes, cost: float, latency: float) -> list[dict]:
    """20 code tasks with 5 samples each; ``passes(i)`` samples of task i pass."""
    return [{"contender": name, "task_id": f"code-{i}", "kind": "code", "category": "python", "step": None,
             "score": passes(i) / 5, "samples": [j < passes(i) for j in range(5)], "latency_s": latency,
             "tokens_in": 300, "tokens_out": 200, "cost": cost, "reason": "ok" if passes(i) == 5 else "tests failed"}
            for i in range(20)]


def run(*which: str) -> tuple[list[dict], list[dict]]:
    """Contenders and rows: base 30%, tuned 60%, pool a little (not significantly) better than tuned
    or, with "strong-pool", 85%; "broken" failed to start."""
    contenders = [contender("base"), contender("tuned")]
    rows = tool_rows("base", lambda i: i % 10 < 3, 1.0, 0.9) + tool_rows("tuned", lambda i: i % 10 < 6, 1.0, 0.8)
    if "same-tuned" in which:  # tuned just 2 tasks better than base and dearer: nothing pays
        contenders[1]["kind"] = "gguf"
        rows = tool_rows("base", lambda i: i % 10 < 3, 1.0, 0.9) + tool_rows(
            "tuned", lambda i: i % 10 < 3 or i in (5, 15), 1.2, 1.0)
    if "pool" in which:  # 4 tasks tuned misses, 2 it gets that the pool does not: McNemar p = 0.69
        contenders.append(contender("demo-pool/best_of", "pool"))
        rows += tool_rows("demo-pool/best_of", lambda i: (i % 10 < 6 and i not in (0, 1)) or i in (6, 7, 8, 9),
                          3.0, 2.0)
    if "strong-pool" in which:
        contenders.append(contender("self-fusion", "self_fusion"))
        rows += tool_rows("self-fusion", lambda i: i % 20 < 17, 3.0, 2.0)
    if "code" in which:
        for name, plus in (("base", 0), ("tuned", 2)):
            rows += code_rows(name, lambda i, plus=plus: min(5, i % 3 + plus), 1.0, 1.5)
    contenders.append(contender("broken", "endpoint", status="failed", error="connection refused | port 8000"))
    return contenders, rows


def test_ship_the_fine_tune_when_the_pool_does_not_pay():
    summary = summarise(*run("pool"), baseline="base")
    assert summary["ship"] == "tuned" and set(summary["candidates"]) == {"tuned", "demo-pool/best_of"}
    assert summary["recommendation"] == recommendation(summary) == (
        "Ship tuned: 60.0% [51.1, 68.3] on 120 tasks, +30.0 points over base (p < 0.001), at 1.0x base's cost and "
        "0.8 s p50; the pool does not pay here: demo-pool/best_of scores 61.7% (+1.7 points over tuned, p = 0.69) "
        "at 3.0x the cost.")
    tuned = next(e for e in summary["contenders"] if e["name"] == "tuned")
    assert tuned["vs_baseline"]["test"] == "McNemar exact" and tuned["vs_baseline"]["discordant"] == [36, 0]
    assert tuned["cost_per_1k"] == 1000.0 and tuned["relative_cost"] == 1.0 and tuned["answers_per_s"] == 2.0
    assert tuned["latency_p50"] == pytest.approx(0.845) and tuned["tokens_in"] == 400.0
    assert [s["accuracy"] for s in tuned["by_step"]] == [0.6, 0.6, 0.6]
    assert tuned["failure_reasons"] == [["bad arguments", 24], ["wrong tool", 24]]


def test_ship_the_baseline_when_nothing_is_significantly_better():
    summary = summarise(*run("same-tuned"), baseline="base")
    assert summary["ship"] == "base"
    assert summary["recommendation"] == (
        "Ship base: 30.0% [22.5, 38.7] on 120 tasks at 0.9 s p50, since nothing is significantly better; tuned does "
        "not pay here: it scores 31.7% (+1.7 points over base, p = 0.50) at 1.2x the cost.")
    best_is_baseline = summarise(*run(), baseline="tuned")
    assert best_is_baseline["ship"] == "tuned" and best_is_baseline["recommendation"].endswith(
        "at 0.8 s p50, the most accurate; base does not pay here: it scores 30.0% (30.0 points below tuned, "
        "p < 0.001) at 1.0x the cost.")


def test_a_gain_too_small_to_prove_says_so():
    """tuned 2 tasks better than base at the same cost and faster: it is shipped (as good, no dearer),
    and the sentence says the gain is not significant."""
    contenders = [contender("base"), contender("tuned")]
    rows = tool_rows("base", lambda i: i % 10 < 3, 1.0, 0.9) + tool_rows("tuned", lambda i: i % 10 < 3 or i in (5, 15),
                                                                        1.0, 0.8)
    summary = summarise(contenders, rows, baseline="base")
    assert summary["ship"] == "tuned" and summary["recommendation"].startswith(
        "Ship tuned: 31.7% [24.0, 40.5] on 120 tasks, +1.7 points over base (p = 0.50, not significant on these "
        "tasks), at 1.0x base's cost and 0.8 s p50")


def test_ship_the_pool_when_it_beats_every_single_model():
    summary = summarise(*run("pool", "strong-pool"), baseline="base")
    assert summary["ship"] == "self-fusion" and summary["candidates"] == ["self-fusion"]
    sentence = summary["recommendation"]
    assert sentence.startswith("Ship self-fusion: 85.0% [")
    assert "+55.0 points over base (p < 0.001), at 3.0x base's cost and 2.0 s p50" in sentence
    assert sentence.endswith("; the pool pays here: +25.0 points over tuned, the best single model (p < 0.001), "
                             "at 3.0x the cost.")


def test_failed_contender_is_reported_never_shipped():
    contenders, rows = run()
    summary = summarise(contenders, rows, baseline="base")
    broken = summary["contenders"][-1]
    assert broken["name"] == "broken" and broken["tasks"] == 0 and "accuracy" not in broken
    assert "broken" not in summary["candidates"] and "broken" not in summary["pairwise"]
    assert "| broken | failed to start: connection refused \\| port 8000 |" in verdict_table(summary)
    only_failed = summarise([contender("x", status="failed", error="no GPU")], [], baseline="x")
    assert only_failed["ship"] is None
    assert only_failed["recommendation"] == "Ship nothing: no contender ran (x failed to start: no GPU)."
    contenders[-1]["name"] = "base-failed"  # a failed baseline: no comparison, absolute costs
    no_base = summarise([contenders[-1]] + contenders[:-1], rows, baseline="base-failed")
    assert no_base["ship"] == "tuned" and no_base["contenders"][1]["relative_cost"] is None
    assert no_base["recommendation"].startswith("Ship tuned: 60.0% [51.1, 68.3] on 120 tasks, at 1000 per 1k requests")
    assert "| base | 30.0% [22.5, 38.7] | n/a |" in verdict_table(no_base)
    with pytest.raises(ValueError, match="baseline"):
        summarise(contenders, rows, baseline="nobody")


def test_breakdowns_per_category_and_step():
    contenders, rows = run()
    for r in rows:  # tuned gets every step-2 (shell) task wrong
        if r["contender"] == "tuned" and r["step"] == 2:
            r["score"], r["reason"] = 0.0, "timeout"
    tuned = summarise(contenders, rows, baseline="base")["contenders"][1]
    assert tuned["by_step"] == [{"step": 0, "tasks": 40, "accuracy": 0.6}, {"step": 1, "tasks": 40, "accuracy": 0.6},
                                {"step": 2, "tasks": 40, "accuracy": 0.0}]
    assert [(c["category"], c["accuracy"]) for c in tuned["by_category"]] == [
        ("edit", 0.6), ("search", 0.6), ("shell", 0.0)]
    assert tuned["failure_reasons"][0] == ["timeout", 40]


def test_code_tasks_get_bootstrap_intervals_and_pass_at_k():
    summary = summarise(*run("code"), baseline="base")
    tuned = next(e for e in summary["contenders"] if e["name"] == "tuned")
    assert tuned["interval"] == "bootstrap" and tuned["vs_baseline"]["test"] == "paired bootstrap"
    assert [p["k"] for p in tuned["pass_at_k"]] == [1, 5]
    # tuned passes 2, 3 or 4 of 5 samples: pass@1 = mean c/5 = 0.6 (20 tasks: 7x2, 7x3, 6x4), pass@5 = 1
    assert tuned["pass_at_k"][0]["value"] == pytest.approx((7 * 2 + 7 * 3 + 6 * 4) / 100, abs=1e-4)
    assert tuned["pass_at_k"][1]["value"] == 1.0
    assert summary["tasks"]["by_kind"] == {"code": 20, "tool": 120}
    assert json.loads(json.dumps(summary)) == summary  # JSON-serialisable, no tuples or numpy scalars


def test_write_report(tmp_path):
    summary = summarise(*run("pool", "code"), baseline="base")
    paths = write_report(summary, tmp_path / "eval")
    out = tmp_path / "eval"
    assert paths == [out / "report.md", out / "report.json", out / "plots" / "accuracy_vs_cost.png",
                     out / "plots" / "accuracy_vs_latency.png", out / "plots" / "categories.png"]
    for p in paths[2:]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "report.json").read_text()) == summary
    md = (out / "report.md").read_text()
    assert md.startswith("# Which one should you ship?")
    assert md.index(verdict_table(summary)) < md.index(f"**{summary['recommendation']}**") < md.index("## Per category")
    for section in ("## Per step", "## pass@k", "## Top failure reasons", "## How to read this",
                    "](plots/accuracy_vs_cost.png)", "](plots/categories.png)"):
        assert section in md
    header = verdict_table(summary).splitlines()[0]
    assert header == ("| contender | accuracy [95% CI] | vs base (points, [CI], p) | p50 / p95 latency | "
                      "tokens in / out | cost per 1k requests (relative) | answers/s |")
