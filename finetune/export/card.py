"""Model cards: Hugging Face front matter, what was trained and how, and the measured numbers.

The same card goes to the export's top level and into every Hugging Face-format folder
(safetensors, adapter, bnb-nf4), each with the ``library_name`` that loads that folder. The front
matter follows the Hub's model card metadata (base_model, library_name, license, datasets, tags,
pipeline_tag); the licence is taken from the base model's own card when it has one, else ``other``.

Example::

    write_cards(src, out, written, report)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from finetune.export.source import Source


def _base_license(model: Path) -> str:
    card = model / "README.md"
    if card.exists():
        m = re.search(r"^license:\s*(\S+)\s*$", card.read_text(errors="replace"), re.MULTILINE)
        if m:
            return m.group(1)
    return "other"


def _eval_numbers(src: Source) -> dict:
    info = src.run_info
    if not info:
        return {}
    numbers = {"train_loss": info.get("train_loss"), "global_step": info.get("global_step"),
               "train_tokens_seen": info.get("train_tokens_seen")}
    metrics = src.run / "metrics.jsonl"
    if metrics.exists():
        evals = [json.loads(line) for line in metrics.read_text().splitlines() if '"eval_loss"' in line]
        if evals:
            numbers["eval_loss"] = evals[-1]["eval_loss"]
    if info.get("verification"):
        numbers["reload_check"] = info["verification"]
    return {k: v for k, v in numbers.items() if v is not None}


def _front_matter(src: Source, library: str) -> str:
    recipe = src.run_info.get("recipe", {})
    datasets = [Path(s["path"]).name for s in recipe.get("data", {}).get("sources", [])]
    tags = ["finetune", "code", "tool-use", src.arch, src.method]
    if src.arch == "llama4":
        tags.append("moe")
    lines = ["---", f"base_model: {src.model.resolve().name}", f"library_name: {library}",
             f"license: {_base_license(src.model)}", "pipeline_tag: text-generation", "tags:"]
    lines += [f"- {t}" for t in tags]
    if datasets:
        lines += ["datasets:"] + [f"- {d}" for d in datasets]
    return "\n".join(lines + ["---", ""])


def _body(src: Source, written: dict, report: dict) -> str:
    recipe = src.run_info.get("recipe", {})
    train = recipe.get("train", {})
    out = [f"# {(src.run or src.adapter or src.model).resolve().name}", "",
           f"Fine-tuned from `{src.model.resolve().name}` ({src.arch}) with **{src.method}** by finetune.", ""]
    if train:
        lora = train.get("lora", {})
        out += ["## Training", "", "| setting | value |", "|---|---|"]
        rows = {"method": train.get("method"), "learning rate": train.get("learning_rate"),
                "epochs": train.get("num_epochs"), "max steps": train.get("max_steps"),
                "batch x accumulation": f"{train.get('per_device_batch_size')} x {train.get('gradient_accumulation_steps')}",
                "max sequence length": recipe.get("data", {}).get("max_seq_length"), "packing": train.get("packing"),
                "precision": src.run_info.get("precision")}
        if train.get("method") != "full":
            rows.update({"LoRA r / alpha": f"{lora.get('r')} / {lora.get('alpha')}", "rsLoRA": lora.get("use_rslora"),
                         "target modules": lora.get("target_modules")})
        out += [f"| {k} | {v} |" for k, v in rows.items()] + [""]
    numbers = _eval_numbers(src)
    if numbers:
        out += ["## Evaluation", "", "| metric | value |", "|---|---|"]
        out += [f"| {k} | {v} |" for k, v in numbers.items()] + [""]
    out += ["## Artifacts and verification", "",
            "Each artifact was loaded by its serving runtime and compared with the trained model on the same "
            f"{report.get('positions', '?')} token positions (next-token distributions).", "",
            "| format | top-1 agreement | mean KL | logit correlation |", "|---|---|---|---|"]
    for fmt in written:
        r = report.get("formats", {}).get(fmt, {})
        out.append(f"| {fmt} | {r.get('top1', '-')} | {r.get('mean_kl', '-')} | {r.get('logit_corr', '-')} |")
    if "qlora_as_trained_vs_merged" in report:
        q = report["qlora_as_trained_vs_merged"]
        out += ["", f"QLoRA note: {q['note']} (top-1 {q['top1']}, mean KL {q['mean_kl']})."]
    out += ["", "Checksums of every file are in `artifacts.json`; check them with `finetune verify-artifacts DIR`.", ""]
    return "\n".join(out)


def write_cards(src: Source, out: Path, written: dict, report: dict) -> None:
    body = _body(src, written, report)
    (out / "README.md").write_text(_front_matter(src, "transformers") + body)
    libraries = {"safetensors": "transformers", "adapter": "peft", "bnb-nf4": "transformers"}
    for fmt, library in libraries.items():
        if fmt in written:
            (written[fmt][0] / "README.md").write_text(_front_matter(src, library) + body)
