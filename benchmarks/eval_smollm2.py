"""The long version of `make demo`'s verdict: does fine-tuning SmolLM2-135M-Instruct on tool-use
traces pay, and does fusing it pay, on function-calling tasks it never trained on?

1. Synthetic tool-use traces (``benchmarks/tool_traces.py``: 60+ functions over 12+ domains,
   single, distractor, parallel, no-call and multi-step shapes). No function name and no question
   is BFCL's or in ``data/eval``; the generator asserts it against the installed ``bfcl-eval``.
2. LoRA on SmolLM2 (``recipes/smollm2/traces-lora.yaml`` with these traces and ``--steps``; about
   25 minutes on 2 cores at the default), exported to GGUF q8_0 like the base.
3. ``finetune eval`` with: the base (GGUF q8_0), the tuned model (GGUF q8_0), a pool of the two
   judged by ``make demo``'s MiniLM reward model (best_of), and the tuned model's self-fusion
   (3 samples, judged); on BFCL categories (``--bfcl``, ``--limit`` items each), the held-out
   ``data/eval`` traces and code problems.
4. Our scorer against BFCL's own checker (run from the package) on every BFCL answer whose calls
   could be read; the judge against a random pick among the same valid answers (report.json).

    make demo    # runs/smollm2, runs/smollm2-base-export and the MiniLM judge runs/judge
    .venv/bin/python benchmarks/eval_smollm2.py --steps 200 --limit 40

Results go to ``runs/bench-eval`` (report.md, report.json, answers.jsonl, benchmark.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FT = str(REPO / ".venv" / "bin" / "finetune")


def _run(*argv: str) -> None:
    print("$", " ".join(argv), flush=True)
    subprocess.run(argv, cwd=REPO, check=True)


def train_and_export(work: Path, traces: Path, steps: int, timings: dict) -> None:
    """LoRA on the synthetic traces with the SmolLM2 recipe, then the merged model as GGUF q8_0."""
    start = time.perf_counter()
    _run(FT, "train", "recipes/smollm2/traces-lora.yaml",
         f"data.sources=[{{path: {traces}}}]", f"data.output_dir={work / 'data'}", "data.validation_fraction=0.02",
         f"train.output_dir={work / 'train'}", f"train.max_steps={steps}", "train.learning_rate=5e-4",
         "train.warmup_ratio=0.03", "train.save_steps=100000", "train.verify_samples=1", "--no-progress")
    timings["train_s"] = round(time.perf_counter() - start, 1)
    _run(FT, "export", str(work / "train"), "--format", "gguf-q8_0", "--out", str(work / "export"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench-eval")
    ap.add_argument("--traces", type=int, default=1200, help="synthetic training traces")
    ap.add_argument("--steps", type=int, default=200, help="LoRA optimizer steps (packed rows of 768 tokens)")
    ap.add_argument("--bfcl", default="simple_python,multiple,parallel,irrelevance")
    ap.add_argument("--limit", type=int, default=40, help="BFCL items per category")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--reuse", action="store_true", help="keep the trained and exported model of an earlier run "
                                                          "(and the eval cache): only evaluate what is missing")
    args = ap.parse_args()
    from benchmarks.tool_traces import generate

    for need in ("runs/smollm2", "runs/smollm2-base-export", "runs/judge"):
        if not (REPO / need).exists():
            sys.exit(f"{need} is missing: run `make demo` first")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    traces = work / "train.jsonl"
    timings = {}
    reuse = args.reuse and (work / "export" / "artifacts.json").is_file()
    if not reuse:
        traces.write_text("".join(json.dumps(t) + "\n" for t in generate(args.traces, seed=0)))
        train_and_export(work, traces, args.steps, timings)
    else:
        timings["train_s"] = json.loads((work / "train" / "run.json").read_text())["train_runtime_s"]
    pool_spec = work / "pool.yaml"
    pool_spec.write_text(json.dumps({
        "name": "smol-pool", "judge": {"run": str(REPO / "runs/judge")},
        "members": [{"name": "base", "export": str(REPO / "runs/smollm2-base-export"),
                     "sampling": {"temperature": 0.7, "max_tokens": args.max_tokens}},
                    {"name": "tuned", "export": str(work / "export"),
                     "sampling": {"temperature": 0.7, "max_tokens": args.max_tokens}}],
        "fusion": {"mode": "best_of", "quorum": 1, "member_timeout_s": 120}}))
    _run(FT, "pool", "build", str(pool_spec), "--out", str(work / "pool" / "manifest.json"))
    recipe = work / "eval.yaml"
    manifest = str(work / "pool" / "manifest.json")
    recipe.write_text(json.dumps({
        "out": str(work / "eval"), "generation": {"max_tokens": args.max_tokens},
        "tasks": {"bfcl": {"categories": args.bfcl.split(","), "limit": args.limit},
                  "tool_calls": [{"path": "data/eval/tool-calls.jsonl"}],
                  "code": [{"path": "data/eval/code-problems.jsonl"}]},
        "contenders": [{"name": "base", "export": str(REPO / "runs/smollm2-base-export"), "formats": ["gguf-q8_0"]},
                       {"name": "tuned", "export": str(work / "export"), "formats": ["gguf-q8_0"]},
                       {"name": "pool", "pool": manifest},
                       {"name": "self-fusion", "pool": manifest, "members": ["tuned"], "samples": 3}]}))
    start = time.perf_counter()
    _run(FT, "eval", str(recipe), "--no-progress")
    timings["eval_s"] = round(time.perf_counter() - start, 1)

    from finetune.eval import bfcl

    tasks = {t["id"]: t for c in args.bfcl.split(",") for t in bfcl.load(c, args.limit)}
    agree = total = 0
    disagreements = []
    for line in (work / "eval" / "answers.jsonl").read_text().splitlines():
        a = json.loads(line)
        if a["task_id"] in tasks and a["calls"] is not None:
            total += 1
            official, why = bfcl.official_check(tasks[a["task_id"]], a["calls"])
            agree += official == a["correct"]
            if official != a["correct"]:
                disagreements.append({"task": a["task_id"], "ours": a["reason"], "bfcl": why})
    report = json.loads((work / "eval" / "report.json").read_text())
    out = {"timings": timings, "bfcl_agreement": {"answers": total, "agree": agree,
                                                  "rate": round(agree / total, 4) if total else None,
                                                  "disagreements": disagreements[:20]},
           "contenders": {c["name"]: {k: c.get(k) for k in ("accuracy", "ci", "vs_baseline", "latency_p50",
                                                             "relative_cost", "answers_per_s", "judge")}
                          for c in report["contenders"]},
           "by_category": {c["name"]: {f"{x['kind']}/{x['category']}": x["accuracy"] for x in c.get("by_category", [])}
                           for c in report["contenders"]},
           "recommendation": report["recommendation"]}
    (work / "benchmark.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
