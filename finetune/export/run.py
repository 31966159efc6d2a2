"""``finetune export``: a run (or model + adapter) in, verified, checksummed artifacts out.

Layout of ``--out``::

    safetensors/      merged 16-bit model folder (sharded, index, tokenizer, chat template, card)
    adapter/          the PEFT adapter as trained, for multi-LoRA serving
    gguf/NAME-F16.gguf, NAME-Q4_K_M.gguf, ..., NAME-LoRA-F32.gguf (llama.cpp --lora)
    bnb-nf4/          bitsandbytes NF4 model folder
    README.md         model card (Hugging Face front matter, recipe summary, eval numbers)
    export_report.json  per format: top-1 agreement, mean KL, logit correlation, greedy match
    artifacts.json    every file with size and sha256, the format, the source run, the toolkit version

Everything is written into a hidden sibling folder and renamed to ``--out`` only after every
artifact is written and verified, so an interrupted or failed export never leaves a folder that
looks complete. ``finetune verify-artifacts OUT`` re-hashes every file against artifacts.json.

Example::

    export(Path("runs/tiny-lora"), ["safetensors", "gguf-q4_k_m"], Path("exports/tiny"))
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from finetune import FinetuneError, __version__
from finetune.contracts.artifacts import FORMATS, LOSSLESS, check_new_folder, sha256_file, staged_folder
from finetune.export import card, hf, to_gguf, verify
from finetune.export.source import Source, open_source
from finetune.train.config import Train
from finetune.train.model import attach_adapter, load_model

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def _name(src: Source) -> str:
    return (src.run or src.adapter or src.model).resolve().name


def _write(src: Source, formats: list[str], tmp: Path, dtype, max_shard: int, say) -> tuple[dict, Path | None]:
    """Write every artifact; returns format -> [file or folder inside tmp], and the base GGUF a
    GGUF LoRA is verified on (in the scratch folder, not shipped)."""
    name, written, lora_base = _name(src), {}, None
    scratch = tmp / ".scratch"
    scratch.mkdir()
    wants_merged = "safetensors" in formats or "bnb-nf4" in formats
    if wants_merged:
        merged = tmp / "safetensors" if "safetensors" in formats else scratch / "merged"
        say(f"merging and writing {merged.name} ({str(dtype).removeprefix('torch.')})")
        hf.write_merged(src, merged, dtype, max_shard)
        if "safetensors" in formats:
            written["safetensors"] = [merged]
    if "adapter" in formats:
        say("copying the adapter")
        written["adapter"] = [hf.write_adapter(src, tmp / "adapter")]
    if "bnb-nf4" in formats:
        say("quantizing to bitsandbytes NF4")
        written["bnb-nf4"] = [hf.write_nf4(merged, tmp / "bnb-nf4")]
    ggufs = [f.removeprefix("gguf-") for f in formats if f.startswith("gguf-") and f != "gguf-lora"]
    if ggufs:
        (tmp / "gguf").mkdir()
        for kind in (k for k in ggufs if k in to_gguf.DIRECT):
            say(f"writing GGUF {kind}")
            written[f"gguf-{kind}"] = [to_gguf.write_gguf(src, tmp / "gguf" / f"{name}-{kind.upper()}.gguf", kind, name)]
        k_quants = [k for k in ggufs if k in to_gguf.K_QUANTS]
        if k_quants:
            base = written["gguf-f16"][0] if "gguf-f16" in written else \
                to_gguf.write_gguf(src, scratch / f"{name}-F16.gguf", "f16", name)
            for kind in k_quants:
                say(f"quantizing GGUF {kind} with llama.cpp")
                written[f"gguf-{kind}"] = [to_gguf.quantize(base, tmp / "gguf" / f"{name}-{kind.upper()}.gguf", kind)]
    if "gguf-lora" in formats:
        say("writing the GGUF LoRA adapter")
        (tmp / "gguf").mkdir(exist_ok=True)
        written["gguf-lora"] = [to_gguf.write_lora(src, tmp / "gguf" / f"{name}-LoRA-F32.gguf", name)]
        base_src = open_source(src.model, trust_pickle=src.trust_pickle)
        lora_base = to_gguf.write_gguf(base_src, scratch / "base-F16.gguf", "f16", src.model.name)
    return written, lora_base


def _reference(src: Source, tokenizer):
    """The trained model's logits; the model is freed on return."""
    model = verify.load_hf(src.model, src.adapter)
    ref = verify.Reference.compute(model, tokenizer)
    qlora = None
    if src.method == "qlora":
        qlora = _qlora_as_trained(src, ref)
    del model
    return ref, qlora


def _qlora_as_trained(src: Source, ref) -> dict:
    """How far the 16-bit merge is from the 4-bit model the adapter was trained against."""
    train = Train.model_validate(src.run_info["recipe"]["train"])
    model = attach_adapter(load_model(str(src.model), train, "fp32"), src.adapter).eval()
    got = verify.hf_logits(model, ref.ids)
    result = ref.compare(got)
    result["note"] = ("QLoRA trained against NF4-rounded base weights; the merge uses the original 16-bit "
                      "weights, so the merged model differs from the model as trained by this much")
    return result


def _verify(src: Source, written: dict, lora_base: Path | None, tokenizer, say) -> dict:
    say("computing the trained model's reference logits")
    ref, qlora = _reference(src, tokenizer)
    report = {"prompts": len(ref.ids), "positions": sum(len(i) for i in ref.ids), "formats": {}}
    if qlora:
        report["qlora_as_trained_vs_merged"] = qlora
    failures = []
    for fmt, paths in written.items():
        say(f"verifying {fmt}")
        path = paths[0]
        if fmt.startswith("gguf-"):
            runner = verify.GGUFRunner(lora_base, lora=path) if fmt == "gguf-lora" else verify.GGUFRunner(path)
            try:
                result = ref.compare(runner.logits(ref.ids), runner.greedy(verify.generation_prompt(tokenizer)))
                if fmt != "gguf-lora":  # the adapter carries no tokenizer; its base GGUF does
                    result.update(verify.gguf_checks(path, runner, ref, tokenizer))
            finally:
                runner.close()
        else:
            model = verify.load_hf(src.model, path) if fmt == "adapter" else verify.load_hf(path)
            result = ref.compare(verify.hf_logits(model, ref.ids),
                                 verify.hf_greedy(model, verify.generation_prompt(tokenizer)))
            del model
        report["formats"][fmt] = result
        if fmt in LOSSLESS and (why := verify.gate(fmt, result)):
            failures.append(why)
    report["failures"] = failures
    return report


def _artifacts(src: Source, out: Path, tmp: Path, written: dict) -> dict:
    entries = []
    for fmt, paths in written.items():
        files = sorted(p for path in paths for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
        entries.append({"format": fmt, "path": str(paths[0].relative_to(tmp)), "files": [
            {"path": str(f.relative_to(tmp)), "bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in files]})
    return {"toolkit": "finetune", "toolkit_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": {"run": str(src.run) if src.run else None, "base_model": str(src.model),
                       "adapter": str(src.adapter) if src.adapter else None, "method": src.method},
            "output": str(out), "artifacts": entries}


def export(path: Path, formats: list[str], out: Path, adapter: Path | None = None, dtype: str = "bfloat16",
           max_shard_size: str = "5GB", check: bool = True, trust_pickle: bool = False, say=print) -> dict:
    """Write, verify and checksum ``formats`` of the model at ``path`` into ``out``; returns the report."""
    from transformers import AutoTokenizer

    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise FinetuneError(f"--format {unknown or '(none)'}: choose from {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise FinetuneError(f"--dtype {dtype!r}: choose bfloat16 or float16")
    out = Path(out)
    check_new_folder(out)
    max_shard = hf.parse_size(max_shard_size)
    src = open_source(Path(path), Path(adapter) if adapter else None, trust_pickle)
    for fmt in ("adapter", "gguf-lora"):
        if fmt in formats and src.adapter is None:
            raise FinetuneError(f"--format {fmt}: {path} has no adapter (full fine-tune or plain model)")
    if any(f.startswith("gguf-") for f in formats) and src.arch == "llama4":
        to_gguf.check_llama4(src.config)
    if "gguf-lora" in formats:
        to_gguf.check_lora(src)
    formats = list(dict.fromkeys(formats))
    tokenizer = AutoTokenizer.from_pretrained(str(src.tokenizer_dir))

    with staged_folder(out) as tmp:
        written, lora_base = _write(src, formats, tmp, DTYPES[dtype], max_shard, say)
        report = _verify(src, written, lora_base, tokenizer, say) if check else {"skipped": "--no-verify"}
        if report.get("failures"):
            raise FinetuneError("verification failed, nothing written to " + str(out) + ":\n  " +
                                "\n  ".join(report["failures"]))
        shutil.rmtree(tmp / ".scratch")
        report = {"source": str(path), "method": src.method, "dtype": dtype, **report}
        card.write_cards(src, tmp, written, report)
        (tmp / "export_report.json").write_text(json.dumps(report, indent=2) + "\n")
        manifest = _artifacts(src, out, tmp, written)
        (tmp / "artifacts.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return report


