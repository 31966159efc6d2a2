"""Trained-token throughput of `finetune train` against plain TRL SFTTrainer defaults (no packing).

One run, both sides on the same model (a random tiny Llama, or ``--model`` such as the imported
SmolLM2-135M-Instruct), the same prepared trace data and the same number of
optimizer steps, each side in its own process (so peak RSS is its own):

- finetune: ``finetune.train.run`` with its defaults (best-fit packing, padding-free rows);
- baseline: ``trl.SFTTrainer`` with ``SFTConfig`` defaults (padded batches, no packing), fed the
  same tokenized rows (so both train on the same masks).

The trace lengths spread like agent data: most traces are a few tool calls (100-600 tokens),
one in ten is a long trajectory (2,000-3,800 tokens; ``--long-share`` changes the share, and with
it the padding a padded batch carries). Throughput counts real (non-padding) tokens.

    .venv/bin/python benchmarks/train_throughput.py                # CPU, tiny model
    .venv/bin/python benchmarks/train_throughput.py --long-share 0.25   # over 40% padding for TRL
    .venv/bin/python benchmarks/train_throughput.py --model runs/smollm2 --seq 1024 --steps 2   # SmolLM2 LoRA
    .venv/bin/python benchmarks/train_throughput.py --hidden 4096 --layers 32 --steps 20   # GPU, 8B-like shape
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peak import peak_rss_mb

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORDS = ("def return self value list the file test error path import class for in if else none "
         "parser token model config run result line index string").split()


def make_traces(path: Path, n: int, seed: int = 0, long_share: float = 0.1) -> None:
    rng = random.Random(seed)
    say = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    tool = {"name": "shell", "description": "Run a shell command.",
            "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}
    with path.open("w") as fh:
        for i in range(n):
            long = rng.random() < long_share
            steps = rng.randint(12, 22) if long else rng.randint(1, 3)
            msgs = [{"role": "user", "content": say(rng.randint(10, 40))}]
            for s in range(steps):
                msgs.append({"role": "assistant", "content": say(rng.randint(0, 15)), "tool_calls": [
                    {"id": f"c{s}", "type": "function", "function": {"name": "shell", "arguments": json.dumps(
                        {"cmd": say(rng.randint(2, 8))})}}]})
                msgs.append({"role": "tool", "tool_call_id": f"c{s}",
                             "content": say(rng.randint(60, 140) if long else rng.randint(10, 80))})
            msgs.append({"role": "assistant", "content": say(rng.randint(10, 60))})
            fh.write(json.dumps({"id": f"t{i}", "messages": msgs, "tools": [tool]}) + "\n")


def prepare_traces(model: Path, folder: Path, n: int, seq: int, long_share: float = 0.1) -> dict:
    """``n`` generated traces in ``folder/traces.jsonl``, prepared with ``model``'s tokenizer into
    ``folder/data`` (no validation split); returns data prepare's stats."""
    from finetune.data.config import Prepare
    from finetune.data.prepare import prepare

    make_traces(folder / "traces.jsonl", n, long_share=long_share)
    return prepare(Prepare.of(model=str(model), sources=[(str(folder / "traces.jsonl"), "openai")],
                              out=str(folder / "data"), max_seq_length=seq, validation_fraction=0.0))


def recipe_for(model: str, data: str, out: str, steps: int, batch: int, seq: int, precision: str, **train):
    """The benchmark's LoRA recipe; ``train`` adds or replaces keys of its train section."""
    from finetune.contracts.schema import recipe_from_tree
    from finetune.train.config import Recipe

    return recipe_from_tree({
        "model": {"path": model}, "data": {"sources": [{"path": "unused.jsonl"}], "max_seq_length": seq},
        "train": {"datasets": [{"path": data}], "method": "lora", "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
                  "max_steps": steps, "per_device_batch_size": batch, "gradient_accumulation_steps": 1,
                  "lr_scheduler": "constant", "warmup_ratio": 0.0, "verify_samples": 0, "precision": precision,
                  "save_steps": 10_000, "output_dir": out, **train}}, "benchmark", Recipe)


def run_finetune(model, data, out, steps, batch, seq, precision, checkpointing) -> dict:
    from finetune.train.run import build

    s = build(recipe_for(model, data, out, steps, batch, seq, precision, gradient_checkpointing=checkpointing == "on"),
              show_progress=False)
    t0 = time.perf_counter()
    s.trainer.train()
    return {"seconds": time.perf_counter() - t0, "real_tokens": s.counting.tokens, "pad_tokens": s.counting.padding}


def run_baseline(model, data, out, steps, batch, seq, precision, checkpointing) -> dict:
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from finetune.data.prepare import load_prepared
    from finetune.train.callbacks import CountingCollator

    ds = load_prepared(data)["train"].select_columns(["input_ids", "labels"])
    tok = AutoTokenizer.from_pretrained(Path(data) / "tokenizer")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    m = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
    args = SFTConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, max_length=seq,
                     bf16=precision == "bf16", use_cpu=not torch.cuda.is_available(), report_to="none",
                     save_strategy="no", logging_steps=10_000, disable_tqdm=True, lr_scheduler_type="constant",
                     **({"gradient_checkpointing": False} if checkpointing == "off" else {}))
    trainer = SFTTrainer(model=m, args=args, train_dataset=ds, processing_class=tok,
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
    counting = CountingCollator(trainer.data_collator)
    trainer.data_collator = counting
    t0 = time.perf_counter()
    trainer.train()
    return {"seconds": time.perf_counter() - t0, "real_tokens": counting.tokens, "pad_tokens": counting.padding}


def child(which: str, *args) -> None:
    import os

    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    import datasets
    import torch

    datasets.disable_progress_bars()
    model, data, out, steps, batch, seq, precision, checkpointing = args
    r = (run_finetune if which == "finetune" else run_baseline)(model, data, out, int(steps), int(batch), int(seq),
                                                                precision, checkpointing)
    r["peak_rss_mb"] = peak_rss_mb()
    r["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    print("RESULT " + json.dumps(r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=400, help="traces to generate (default 400)")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per side (default 8)")
    ap.add_argument("--batch", type=int, default=4, help="rows per step, both sides (default 4)")
    ap.add_argument("--seq", type=int, default=4096, help="max_seq_length (default 4096)")
    ap.add_argument("--hidden", type=int, default=256, help="tiny model hidden size (default 256)")
    ap.add_argument("--layers", type=int, default=4, help="tiny model layers (default 4)")
    ap.add_argument("--long-share", type=float, default=0.1, help="share of long trajectories (default 0.1)")
    ap.add_argument("--model", help="a model folder instead of the tiny random Llama (e.g. runs/smollm2)")
    ap.add_argument("--checkpointing", choices=("defaults", "on", "off"), default="defaults",
                    help="gradient checkpointing: each side's default (TRL's SFTConfig: on; a recipe: off), "
                         "or the same on both sides (default: defaults)")
    ap.add_argument("--child", nargs=9, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(*a.child)
    import torch

    from finetune.model.tiny import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    model = a.model or build_tiny_model("llama", REPO / "data/tokenizers/ggml-vocab-llama-spm.gguf", tmp / "model",
                                        layers=a.layers, hidden=a.hidden)
    stats = prepare_traces(model, tmp, a.traces, a.seq, a.long_share)
    precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    shape = a.model or f"a random Llama, hidden {a.hidden} x {a.layers} layers"
    print(f"{stats['records_ok']} traces ({a.long_share:.0%} long), {stats['tokens_total']} tokens, {shape}, "
          f"{device}, {precision}, {a.steps} steps x batch {a.batch}, max_seq_length {a.seq}, "
          f"gradient checkpointing: {a.checkpointing}")
    res = {}
    for which in ("baseline", "finetune"):
        cmd = [sys.executable, __file__, "--child", which, str(model), str(tmp / "data"), str(tmp / which),
               str(a.steps), str(a.batch), str(a.seq), precision, a.checkpointing]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            sys.exit(f"{which} failed:\n{proc.stderr[-3000:]}")
        r = res[which] = json.loads(line[-1][7:])
        share = r["pad_tokens"] / max(1, r["real_tokens"] + r["pad_tokens"])
        gpu = f", peak GPU {r['peak_gpu_mb']:.0f} MB" if r["peak_gpu_mb"] else ""
        print(f"{which:9s} {r['real_tokens'] / r['seconds']:9.0f} real tokens/s  ({r['real_tokens']} real, "
              f"{share:.0%} padding, {r['seconds']:.1f} s)  peak RSS {r['peak_rss_mb']:.0f} MB{gpu}")
    f, b = res["finetune"], res["baseline"]
    ratio = (f["real_tokens"] / f["seconds"]) / (b["real_tokens"] / b["seconds"])
    print(f"ratio finetune/baseline: {ratio:.2f}x real tokens/s, peak RSS {f['peak_rss_mb'] / b['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
