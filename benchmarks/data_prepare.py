"""Throughput and peak memory of `finetune data prepare` against a plain-tokenization baseline.

Generates a corpus of agent traces (OpenAI layout: system prompt, two tools, 1-6 tool-call steps,
a final answer), then runs, each in its own process so peak RSS is its own:

- finetune: ``prepare`` (validation, dedup, rendering, per-turn loss masks, split, save), once per
  ``--workers`` value (``data.num_proc``: 1 and every core by default);
- baseline: what a plain SFT script does: ``json.loads`` + ``apply_chat_template(tokenize=True)``
  per record and ``save_to_disk``, with no validation and no masks (it trains on every token).

The ratio is the price of the checks and the masks; the runs with more workers give the scaling.
Peak RSS is the main process's; with workers, each worker's peak is shown beside it.

    .venv/bin/python benchmarks/data_prepare.py --records 50000 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peak import peak_rss_mb

REPO = Path(__file__).resolve().parents[1]
TOOLS = [
    {"type": "function", "function": {"name": "run_tests", "description": "Run tests and report failures.",
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "verbose": {"type": "boolean"}},
                    "required": ["path"]}}},
    {"type": "function", "function": {"name": "read_file", "description": "Read part of a file.",
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "start": {"type": "integer"},
                                                     "end": {"type": "integer"}}, "required": ["path"]}}},
]
WORDS = ("the test fails because the parser returns None when the input is empty so we guard it and add a "
         "regression test for the empty case then run the whole suite again").split()


def make_corpus(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    say = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    with path.open("w") as fh:
        for i in range(n):
            msgs = [{"role": "system", "content": "You are a coding agent. " + say(10)},
                    {"role": "user", "content": say(rng.randint(8, 40))}]
            for s in range(rng.randint(1, 6)):
                name = rng.choice(["run_tests", "read_file"])
                args = {"path": f"src/mod_{rng.randint(0, 99)}.py"}
                if name == "read_file":
                    args |= {"start": rng.randint(1, 50), "end": rng.randint(51, 200)}
                msgs.append({"role": "assistant", "content": say(rng.randint(0, 12)), "tool_calls": [
                    {"id": f"c{s}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]})
                msgs.append({"role": "tool", "tool_call_id": f"c{s}", "content": say(rng.randint(5, 60))})
            msgs.append({"role": "assistant", "content": say(rng.randint(10, 50))})
            fh.write(json.dumps({"id": f"r{i}", "messages": msgs, "tools": TOOLS}) + "\n")


def run_finetune(model: str, corpus: str, out: str, workers: int) -> dict:
    from finetune.data.config import Prepare
    from finetune.data.prepare import prepare

    stats = prepare(Prepare.of(model=model, sources=[(corpus, "openai")], out=out, max_seq_length=4096,
                               num_proc=workers))
    return {"records": stats["records_in"], "tokens": stats["tokens_total"], "ok": stats["records_ok"]}


def run_baseline(model: str, corpus: str, out: str, workers: int) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    rows, tokens = [], 0
    with open(corpus) as fh:
        for line in fh:
            rec = json.loads(line)
            for m in rec["messages"]:
                for c in m.get("tool_calls", []):
                    c["function"]["arguments"] = json.loads(c["function"]["arguments"])
            ids = tok.apply_chat_template(rec["messages"], tools=rec["tools"], tokenize=True, return_dict=True)["input_ids"]
            rows.append(ids)
            tokens += len(ids)
    Dataset.from_dict({"input_ids": rows}).save_to_disk(out)
    return {"records": len(rows), "tokens": tokens, "ok": len(rows)}


def child(which: str, model: str, corpus: str, out: str, workers: str) -> None:
    import resource

    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    import datasets

    datasets.disable_progress_bars()
    t0 = time.perf_counter()
    result = (run_finetune if which == "finetune" else run_baseline)(model, corpus, out, int(workers))
    result["seconds"] = time.perf_counter() - t0
    result["peak_rss_mb"] = peak_rss_mb()
    result["worker_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if int(workers) > 1 else 0
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=50_000, help="traces to generate (default 50000)")
    ap.add_argument("--model", help="model folder (default: a tiny Llama with the Llama 3 vocabulary, built here)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1],
                    help="data.num_proc values to run finetune with (default: 1 and every core)")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    tmp = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    model = args.model
    if model is None:
        from finetune.model.tiny import build_tiny_model

        model = str(build_tiny_model("llama", REPO / "data/tokenizers/ggml-vocab-llama-bpe.gguf", tmp / "model"))
    corpus = tmp / "corpus.jsonl"
    make_corpus(corpus, args.records)
    print(f"corpus: {args.records} traces, {corpus.stat().st_size / 1e6:.1f} MB; model {model}")
    results = {}
    for which, workers in [("baseline", 1), *(("finetune", w) for w in dict.fromkeys(args.workers))]:
        name = which if which == "baseline" else f"finetune x{workers}"
        proc = subprocess.run([sys.executable, __file__, "--child", which, model, str(corpus), str(tmp / name),
                               str(workers)], capture_output=True, text=True, check=True)
        results[name] = r = json.loads(proc.stdout.strip().splitlines()[-1])
        each = f" (+{r['worker_peak_rss_mb']:.0f} MB per worker)" if r["worker_peak_rss_mb"] else ""
        print(f"{name:12s} {r['records'] / r['seconds']:8.0f} records/s {r['tokens'] / r['seconds']:10.0f} tokens/s "
              f"{r['seconds']:7.1f} s  peak RSS {r['peak_rss_mb']:6.0f} MB{each}  ({r['tokens']} tokens, {r['ok']} kept)")
    b = results.pop("baseline")
    for name, f in results.items():
        print(f"ratio {name}/baseline: throughput {b['seconds'] / f['seconds']:.2f}x, "
              f"peak memory {f['peak_rss_mb'] / b['peak_rss_mb']:.2f}x (main process)")


if __name__ == "__main__":
    main()
