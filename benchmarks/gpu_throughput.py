"""`finetune train` against TRL's defaults on an 8B-shaped Llama at 4k tokens, on a lent H100/H200:
real tokens/s, MFU and peak GPU memory, LoRA and QLoRA, with and without Liger's kernels.

Eight configurations, each in its own process (its own peak memory, and Liger's patches, which
are global to a process, stay in it):

- side ``finetune``: ``finetune.train.run.build`` on a recipe: best-fit packing, padding-free rows;
  ``flash_attention_2`` when flash-attn imports, else ``sdpa``, which packing turns into
  ``sdpa_segments`` (per-sample attention); the output says which;
- side ``trl``: ``trl.SFTTrainer`` with ``SFTConfig`` defaults (padded batches, no packing, sdpa),
  the same tokenized rows, LoRA settings and 4-bit config;
- both sides recompute activations (gradient checkpointing: TRL's default, which our recipe then
  sets too, so that the difference is packing; ``--no-gradient-checkpointing`` turns it off on both);
- methods ``lora`` and ``qlora`` (NF4, quantized on load), each with ``train.liger_kernel`` off and
  on (``SFTConfig.use_liger_kernel`` on the trl side): Liger's RMSNorm, RoPE and SwiGLU kernels.
  Liger's fused linear cross-entropy is not among them: TRL 1.16's SFTTrainer refuses it because it
  always scores tokens with its own chunked LM head, which never builds the full logits either,
  on both sides.

The model is random-initialised from a ``LlamaConfig`` of Llama 3.1 8B's shape (hidden 4096, 32
layers, 32 heads, 8 KV heads, intermediate 14336, rope theta 500000, vocabulary 128256, one more
row for the pad the real Llama 3 tokenizer is fitted with), built on the GPU in bf16 and saved to
local disk once, outside the timing, so that both sides load it as they would load a real model.
``--layers`` makes it shallower; the output and the JSON then say SCALED. The data is
``train_throughput.py``'s mixed-length agent traces, prepared with the real Llama 3 tokenizer.

Timing: each configuration runs ``--warmup`` optimizer steps, then ``--steps`` timed ones (the
device synchronised at each step end). Tokens/s counts the real (non-padding) input tokens of the
timed steps (the Trainer's own ``num_input_tokens_seen`` with ``non_padding``).

MFU = tokens/s x FLOPs per token / peak, the peak being this chip's own bf16 rate, measured first
(back-to-back 8192^3 matrix products on random data for about 2 s). FLOPs per token (PaLM's count,
approximate)::

    4 x N_frozen + 6 x N_trainable + 12 x layers x hidden x S

N_frozen: the base's weights but the input embedding (forward 2, input gradient 2); N_trainable:
the adapters (forward 2, both gradients 4); S: the token-weighted mean sample length of the data,
sum(len^2) / sum(len), since packed samples never attend across each other and padding is no
useful work. These are model FLOPs: recomputed activations count nothing. (Full fine-tuning would
be 6 x N.)

A global budget (``--budget-s``, 480 s, setup included) skips the configurations that would not
finish in time, saying so, and stops one that runs past it; the JSON is rewritten after each one.

Wheels for the device machine (Python 3.12, torch 2.11, transformers 5.17, no network; it lacks
trl, bitsandbytes, liger-kernel, datasets and pydantic and has other versions of the rest). Here,
from the repository root (``/.whl/`` is gitignored), 27 MB in all::

    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
      --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \\
      --platform manylinux2014_x86_64 -d .whl trl==1.16.0 bitsandbytes==0.50.2 liger-kernel==0.8.5 \\
      transformers==5.24.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \\
      pydantic==2.14.4 pydantic_core==2.50.5 typing-inspection==0.4.5 annotated-types==0.8.0 gguf==0.19.0 \\
      typing_extensions==4.16.0
    zip -qd .whl/bitsandbytes-*.whl 'bitsandbytes/libbitsandbytes_cuda1[12]*' \\
      'bitsandbytes/libbitsandbytes_rocm*' 'bitsandbytes/libbitsandbytes_xpu*'  # 43 MB -> 7 MB: keeps cu130, cu132

(versions as in constraints.txt; liger-kernel is no dependency of the project). Then one device
call, carrying ``.whl``, with a timeout of 540 s::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \\
      && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 benchmarks/gpu_throughput.py

It writes ``$OUT/gpu_throughput.json`` (``--out`` otherwise). Here, on the CPU, the same code path
on a tiny shape (hidden 64, 2 layers, seq 1024, batch 2, 1 + 1 steps, fp32; Liger skipped, with the
reason; QLoRA runs, bitsandbytes' 4-bit works on the CPU)::

    .venv/bin/python benchmarks/gpu_throughput.py --dry-run --out runs/gpu_throughput_dry.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peak import peak_rss_mb
from train_throughput import REPO, prepare_traces, recipe_for

LLAMA3_8B = {"hidden": 4096, "layers": 32, "heads": 32, "kv_heads": 8, "intermediate": 14336, "vocab": 128256,
             "rope_theta": 500000.0}
TINY = {"hidden": 64, "layers": 2, "heads": 2, "kv_heads": 1, "intermediate": 192, "vocab": 0, "rope_theta": 500000.0}
# Most wanted first: when the budget runs short, the guard drops the tail.
CONFIGS = [(method, liger, side) for method, liger in (("lora", False), ("qlora", False), ("lora", True),
                                                       ("qlora", True)) for side in ("finetune", "trl")]


def measure_peak(device: str, dtype, n: int, seconds: float) -> float:
    """TFLOP/s of back-to-back n x n x n matrix products on random data: the ceiling MFU is read against."""
    import torch

    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    c = torch.empty_like(a)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        torch.mm(a, b, out=c)
    sync()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            torch.mm(a, b, out=c)
        reps += 10
        sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def build_model(out: Path, tokenizer_dir: Path, shape: dict, dtype, device: str) -> dict:
    """A random Llama of ``shape``, initialised on ``device`` in ``dtype`` and saved to ``out`` with
    the tokenizer; returns its parameter counts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=max(shape["vocab"], len(tok)), hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
        intermediate_size=shape["intermediate"], rope_parameters={"rope_type": "default", "rope_theta": shape["rope_theta"]},
        max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(out, max_shard_size="4GB")
    tok.save_pretrained(out)
    total = sum(p.numel() for p in model.parameters())
    counts = {"parameters": total, "non_embedding": total - model.get_input_embeddings().weight.numel(),
              "vocab_size": config.vocab_size}
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return counts


def trl_defaults(recipe, cuda: bool):
    """TRL's SFTTrainer as its docs use it: SFTConfig defaults (gradient checkpointing on, unless the
    recipe turns it off on both sides) but for what a benchmark must set (steps, batch, length,
    precision, the recipe's constant LR, no saving or logging), with our LoRA and 4-bit settings."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from finetune.data.prepare import load_prepared
    from finetune.train.callbacks import CountingCollator
    from finetune.train.model import DTYPES, adapter_config, quantization_config

    t = recipe.train
    data = Path(t.datasets[0].path)
    kwargs = {"dtype": DTYPES[t.precision], "device_map": {"": 0} if cuda else None}
    if t.method == "qlora":
        kwargs["quantization_config"] = quantization_config(t, sharded=False)
    model = AutoModelForCausalLM.from_pretrained(recipe.model.path, **kwargs)
    args = SFTConfig(output_dir=t.output_dir, max_steps=t.max_steps, per_device_train_batch_size=t.per_device_batch_size,
                     max_length=recipe.data.max_seq_length, bf16=t.precision == "bf16", use_cpu=not cuda,
                     learning_rate=t.learning_rate, lr_scheduler_type="constant", use_liger_kernel=t.liger_kernel,
                     gradient_checkpointing=t.gradient_checkpointing,  # TRL's default is on
                     report_to="none", save_strategy="no", logging_steps=10_000, disable_tqdm=True,
                     include_num_input_tokens_seen="non_padding")
    trainer = SFTTrainer(model=model, args=args, processing_class=AutoTokenizer.from_pretrained(data / "tokenizer"),
                         train_dataset=load_prepared(data)["train"].select_columns(["input_ids", "labels"]),
                         peft_config=adapter_config(t, model))
    counting = trainer.data_collator = CountingCollator(trainer.data_collator)
    return trainer, counting


def run_config(c: dict) -> dict:
    """One configuration, in this (child) process: set its trainer up, warm up, time the steps."""
    import torch
    from transformers import TrainerCallback

    from finetune.train.run import build

    cuda = c["device"] == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    quant = {"quantization": {"compute_dtype": "bfloat16" if c["precision"] == "bf16" else "float32"}}
    recipe = recipe_for(c["model"], c["data"], c["out"], c["warmup"] + c["steps"], c["batch"], c["seq"],
                        c["precision"], method=c["method"], liger_kernel=c["liger"], report_to=[],
                        gradient_checkpointing=c["gradient_checkpointing"],
                        attn_implementation=c["attention"], **(quant if c["method"] == "qlora" else {}))
    if c["side"] == "finetune":
        session = build(recipe, show_progress=False)
        trainer, counting = session.trainer, session.counting
    else:
        trainer, counting = trl_defaults(recipe, cuda)

    marks = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            sync()
            marks[state.global_step] = (time.perf_counter(), state.num_input_tokens_seen)

    trainer.add_callback(Clock())
    trainer.train()
    (t0, n0), (t1, n1) = marks[c["warmup"]], marks[c["warmup"] + c["steps"]]
    return {"seconds": t1 - t0, "real_tokens": n1 - n0, "tokens_per_s": (n1 - n0) / (t1 - t0),
            "padding_share": round(counting.padding_share, 4),
            "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None, "peak_rss_mb": peak_rss_mb()}


def child(spec: str) -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import datasets

    datasets.disable_progress_bars()
    print("RESULT " + json.dumps(run_config(json.loads(spec))), flush=True)


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "liger-kernel",
                "triton", "flash-attn", "pyarrow", "huggingface-hub", "tokenizers", "fsspec", "pydantic"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def unmet(method: str, liger: bool, cuda: bool) -> str | None:
    """Why a configuration cannot run on this machine, or None."""
    import importlib.util

    from transformers.utils import is_liger_kernel_available

    if liger and not cuda:
        return "Liger's kernels are Triton kernels and need a CUDA GPU"
    if liger and not is_liger_kernel_available():
        return "liger-kernel is not installed (carry its wheel: see the docstring)"
    if method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (carry its wheel: see the docstring)"
    return None


def over_budget(kind: tuple, walls: list[tuple[tuple, float]], spent: float, budget: float) -> str | None:
    """Why the next configuration would not end inside the budget, judged by the slowest finished
    one of the same kind (method, liger), or of any plus a quarter (quantizing on load, compiling
    Liger's kernels), or None."""
    same = [w for k, w in walls if k == kind]
    need = max(same) if same else 1.25 * max((w for _, w in walls), default=0.0)
    if spent + need >= budget:
        return f"time budget: {spent:.0f} of {budget:.0f} s spent" + (
            f", and a configuration takes about {need:.0f} s" if need else "")
    return None


def ratios(rows: list[dict], memory: str) -> list[dict]:
    """finetune / trl per (method, liger): real tokens/s and peak memory (``memory``: the field compared)."""
    out = []
    for method, liger, _ in CONFIGS[::2]:
        pair = {r["side"]: r for r in rows if (r["method"], r["liger"]) == (method, liger) and r["status"] == "ok"}
        f, t = pair.get("finetune"), pair.get("trl")
        both = f is not None and t is not None
        out.append({"method": method, "liger": liger, "tokens_per_s": f["tokens_per_s"] / t["tokens_per_s"] if both
                    else None, "peak_memory": f[memory] / t[memory] if both else None, "memory_field": memory})
    return out


def prepare(a, tmp: Path) -> dict:
    """Everything outside the timing, once: the chip's peak, the tokenizer, the data, the model on
    disk. Returns the report's header (the run's settings and what it measured so far)."""
    import torch
    from transformers.utils import is_flash_attn_2_available

    from finetune.data.prepare import load_prepared
    from finetune.model.tiny import build_tiny_model
    from finetune.train.config import Train
    from finetune.train.model import attention as packed_attention

    dry = a.dry_run
    cuda = torch.cuda.is_available() and not dry
    if not (cuda or dry):
        sys.exit("no CUDA GPU here: this benchmark is for a GPU machine (--dry-run checks it on the CPU)")
    shape = {**(TINY if dry else LLAMA3_8B), **({"layers": a.layers} if a.layers else {})}
    device, precision, dtype = ("cuda", "bf16", torch.bfloat16) if cuda else ("cpu", "fp32", torch.float32)
    peak = measure_peak(device, dtype, 8192 if cuda else 1024, 2.0 if cuda else 0.5)
    # The real tokenizer, fitted as data prepare fits it (distinct pad, chat template): Llama 3's on the
    # GPU; the dry run's cost is TRL's chunked LM head on the CPU, so it takes the 32k SentencePiece one.
    vocab = "ggml-vocab-llama-spm.gguf" if dry else "ggml-vocab-llama-bpe.gguf"
    tok_dir = build_tiny_model("llama", REPO / "data" / "tokenizers" / vocab, tmp / "tokenizer", layers=1, hidden=32)
    seq = a.seq or (1024 if dry else 4096)
    stats = prepare_traces(tok_dir, tmp, a.traces or (60 if dry else 400), seq)
    lengths = [len(x) for x in load_prepared(tmp / "data")["train"]["input_ids"]]
    t0 = time.monotonic()
    counts = build_model(tmp / "model", tok_dir, shape, dtype, device)
    attention = "flash_attention_2" if cuda and is_flash_attn_2_available() else "sdpa"
    loaded = packed_attention(str(tmp / "model"), Train(attn_implementation=attention))  # what packing loads
    return {
        "device": torch.cuda.get_device_name() if cuda else "CPU", "dry_run": dry, "cuda": cuda,
        "precision": precision, "peak_tflops": peak, "shape": shape, **counts,
        "model_build_s": round(time.monotonic() - t0, 1),
        "scaled": f"SCALED: {shape['layers']} of Llama 3.1 8B's 32 layers" if not dry and shape["layers"] != 32 else None,
        "seq": seq, "batch": a.batch or (2 if dry else 4), "warmup_steps": a.warmup or (1 if dry else 2),
        "timed_steps": a.steps or (1 if dry else 4), "gradient_checkpointing": not a.no_gradient_checkpointing,
        "attention_implementation": attention,
        "attention": {"finetune": f"{loaded} (packed rows" + (")" if loaded.startswith("flash") else
                                                               ", one per forward, accumulated)"),
                      "trl": "sdpa (padded batches)"},
        "versions": versions(),
        "data": {"traces": stats["records_ok"], "tokens": sum(lengths), "mean_len": sum(lengths) / len(lengths),
                 "max_len": max(lengths), "attention_len": sum(n * n for n in lengths) / sum(lengths)},
        "flops_formula": "4 x non_embedding + 6 x trainable + 12 x layers x hidden x attention_len, per token",
        "budget_s": a.budget_s, "configs": [], "ratios": []}


def run_one(report: dict, tmp: Path, method: str, liger: bool, side: str, timeout: float) -> dict:
    """One configuration in a child process: its row of the report (ok with the numbers, or failed
    with the end of its error output)."""
    name = method + ("+liger" if liger else "")
    spec = {"model": str(tmp / "model"), "data": str(tmp / "data"), "out": str(tmp / f"{name}-{side}"),
            "side": side, "method": method, "liger": liger, "attention": report["attention_implementation"],
            "device": "cuda" if report["cuda"] else "cpu", "precision": report["precision"],
            "warmup": report["warmup_steps"], "steps": report["timed_steps"], "batch": report["batch"],
            "seq": report["seq"], "gradient_checkpointing": report["gradient_checkpointing"]}
    row = {"name": name, "method": method, "liger": liger, "side": side}
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                              capture_output=True, text=True, cwd=REPO, timeout=timeout)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        fail = None if lines and proc.returncode == 0 else proc.stderr[-2000:] or f"exit code {proc.returncode}"
    except subprocess.TimeoutExpired:
        fail = "ran past the time budget and was stopped"
    row["wall_s"] = round(time.monotonic() - t0, 1)
    if fail:
        return {**row, "status": "failed", "reason": fail}
    r = json.loads(lines[-1][len("RESULT "):])
    shape = report["shape"]
    flops = (4 * report["non_embedding"] + 6 * r["trainable_params"]
             + 12 * shape["layers"] * shape["hidden"] * report["data"]["attention_len"])
    return {**row, "status": "ok", **r, "flops_per_token": flops,
            "mfu": r["tokens_per_s"] * flops / (report["peak_tflops"] * 1e12)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny shape, fp32, on the CPU: the same code path")
    ap.add_argument("--layers", type=int, help="decoder layers (default 32; 2 in --dry-run): fewer scale it down")
    ap.add_argument("--steps", type=int, help="timed optimizer steps per configuration (default 4; 1 in --dry-run)")
    ap.add_argument("--warmup", type=int, help="untimed optimizer steps first (default 2; 1 in --dry-run)")
    ap.add_argument("--batch", type=int, help="rows per optimizer step, both sides (default 4; 2 in --dry-run)")
    ap.add_argument("--seq", type=int, help="max_seq_length (default 4096; 1024 in --dry-run)")
    ap.add_argument("--no-gradient-checkpointing", action="store_true",
                    help="both sides keep activations (default: both recompute them, TRL's default)")
    ap.add_argument("--traces", type=int, help="traces to generate (default 400; 60 in --dry-run)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="wall-time budget of the whole run (default 480)")
    ap.add_argument("--out", help="JSON results (default $OUT/gpu_throughput.json, else runs/gpu_throughput.json)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.child)
    start = time.monotonic()
    sys.stdout.reconfigure(line_buffering=True)  # the device call returns the output's tail: keep it whole
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))  # before an import can fail
    import datasets
    from transformers.utils.logging import disable_progress_bar

    datasets.disable_progress_bars()
    disable_progress_bar()
    out = Path(a.out or (Path(os.environ["OUT"]) / "gpu_throughput.json" if os.environ.get("OUT")
                         else REPO / "runs" / "gpu_throughput.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as folder:
        tmp = Path(folder)
        report = prepare(a, tmp)
        out.write_text(json.dumps(report, indent=2) + "\n")
        cuda, d, memory = report["cuda"], report["data"], "peak_gpu_mb" if report["cuda"] else "peak_rss_mb"
        print(f"{report['device']}: measured bf16 peak {report['peak_tflops']:.0f} TFLOP/s" if cuda else
              f"DRY RUN on the CPU: fp32 matmul peak {report['peak_tflops'] * 1e3:.0f} GFLOP/s")
        print(f"model: {report['parameters'] / 1e9:.2f} B parameters ({report['shape']['layers']} layers x hidden "
              f"{report['shape']['hidden']}, vocabulary {report['vocab_size']}), built and saved in "
              f"{report['model_build_s']:.0f} s" + (f"; {report['scaled']}" if report["scaled"] else ""))
        print(f"data: {d['traces']} traces, {d['tokens']} tokens, mean {d['mean_len']:.0f}, max {d['max_len']}, "
              f"attention length {d['attention_len']:.0f}; finetune attention: {report['attention']['finetune']}")
        print(f"gradient checkpointing: {'on' if report['gradient_checkpointing'] else 'off'}, both sides; "
              f"{report['warmup_steps']} warm-up + {report['timed_steps']} timed steps of {report['batch']} rows x "
              f"{report['seq']} tokens")
        print(f"MFU: FLOPs per token = {report['flops_formula']}; peak memory: "
              + ("torch.cuda.max_memory_allocated" if cuda else "process peak RSS (no GPU)"))
        print(f"{'config':14s} {'side':9s} {'tokens/s':>10s} {'MFU':>6s} {'peak MB':>9s} {'pad':>5s} {'wall s':>7s}")
        walls = []
        for method, liger, side in CONFIGS:
            spent = time.monotonic() - start
            reason = unmet(method, liger, cuda) or over_budget((method, liger), walls, spent, a.budget_s)
            if reason:
                row = {"name": method + ("+liger" if liger else ""), "method": method, "liger": liger,
                       "side": side, "status": "skipped", "reason": reason}
            else:
                row = run_one(report, tmp, method, liger, side, timeout=max(1.0, a.budget_s - spent))
            if "wall_s" in row:  # it ran (to the end, or into an error or the budget)
                walls.append(((method, liger), row["wall_s"]))
            if row["status"] == "ok":
                print(f"{row['name']:14s} {side:9s} {row['tokens_per_s']:10.0f} {row['mfu']:6.1%} {row[memory]:9.0f} "
                      f"{row['padding_share']:5.0%} {row['wall_s']:7.0f}")
            else:
                print(f"{row['name']:14s} {side:9s} {row['status']}: {row['reason']}")
            report["configs"].append(row)
            report["ratios"] = ratios(report["configs"], memory)
            report["elapsed_s"] = round(time.monotonic() - start, 1)
            out.write_text(json.dumps(report, indent=2) + "\n")
    print("finetune / trl:" + "".join(
        f"  {r['method']}{'+liger' if r['liger'] else ''} " + (f"{r['tokens_per_s']:.2f}x tokens/s, "
                                                            f"{r['peak_memory']:.2f}x memory" if r["tokens_per_s"] else "n/a")
        for r in report["ratios"]))
    print(f"{report['elapsed_s']:.0f} s in all; results in {out}" + (f"  [{report['scaled']}]" if report["scaled"] else "")
          + ("  [DRY RUN: a check of the code path on the CPU, not a measurement]" if report["dry_run"] else ""))


if __name__ == "__main__":
    main()
