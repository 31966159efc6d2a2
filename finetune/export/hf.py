"""Hugging Face-format artifacts: merged safetensors (streamed, sharded), the adapter, NF4.

The safetensors writer streams: every tensor's name, dtype and shape are known before any weight
is read (from the source's file headers), so each shard's header is written first and tensors
follow one at a time. ``save_file`` would need a whole shard in memory; here the peak is one
tensor (float32 where an adapter was merged into it) plus its 16-bit copy. The format is the
documented one (8-byte little-endian header length, JSON header with ``data_offsets``,
8-byte-aligned header, raw little-endian data); verification loads the folder with transformers.

Example::

    write_merged(src, out / "safetensors", torch.bfloat16, max_shard_bytes=5 * 2**30)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from finetune import FinetuneError
from finetune.export.source import Source

_ST_DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                    "chat_template.jinja", "added_tokens.json")


def parse_size(text: str) -> int:
    """'5GB' -> 5 * 10**9, '500MiB' -> 500 * 2**20, '123' -> 123 bytes."""
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    t = text.strip().upper()
    number = t.rstrip("KMGIB")
    try:
        return int(float(number) * units[t[len(number):]])
    except (KeyError, ValueError):
        raise FinetuneError(f"--max-shard-size {text!r}: write a size such as 5GB, 500MB or 2GiB") from None


def _shards(src: Source, dtype: torch.dtype, max_bytes: int) -> list[list[tuple[str, tuple, int]]]:
    item = torch.tensor([], dtype=dtype).element_size()
    shards, size = [[]], 0
    for name in src.names():
        shape = src.shape(name)
        nbytes = item * int(torch.tensor(shape).prod()) if shape else item
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape, nbytes))
        size += nbytes
    return shards


def _write_shard(src: Source, path: Path, entries, dtype: torch.dtype) -> None:
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, nbytes in entries:
        header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little"))
        fh.write(raw)
        for name, _, nbytes in entries:
            data = src.tensor(name).to(dtype).contiguous().view(torch.uint8).numpy()
            if data.nbytes != nbytes:
                raise FinetuneError(f"internal: {name} has {data.nbytes} bytes, planned {nbytes}")
            fh.write(memoryview(data).cast("B"))


def write_merged(src: Source, out: Path, dtype: torch.dtype, max_shard_bytes: int) -> Path:
    """A loadable model folder: sharded safetensors + index, config, generation config, tokenizer."""
    out.mkdir(parents=True)
    shards = _shards(src, dtype, max_shard_bytes)
    names = ["model.safetensors"] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map, total = {}, 0
    for file, entries in zip(names, shards, strict=True):
        _write_shard(src, out / file, entries, dtype)
        for name, _, nbytes in entries:
            weight_map[name], total = file, total + nbytes
    if len(shards) > 1:
        (out / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    config = dict(src.config, dtype=str(dtype).removeprefix("torch."))
    config.pop("torch_dtype", None)
    config.pop("quantization_config", None)
    if "model.embed_tokens.weight" in weight_map:
        config["vocab_size"] = src.shape("model.embed_tokens.weight")[0]
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    copy_tokenizer(src, out)
    return out


def copy_tokenizer(src: Source, out: Path) -> None:
    """Tokenizer files and the chat template the training data was rendered with, plus the base's
    generation config (its EOS list is what stops generation at the end of a turn)."""
    tok = src.tokenizer_dir
    for name in _TOKENIZER_FILES:
        if (tok / name).exists():
            shutil.copy2(tok / name, out / name)
    if (src.model / "generation_config.json").exists():
        shutil.copy2(src.model / "generation_config.json", out / "generation_config.json")


def write_adapter(src: Source, out: Path) -> Path:
    """The PEFT adapter as trained (for multi-LoRA serving: vLLM ``--lora-modules``, TGI, LoRAX),
    with the tokenizer and a base_model_name_or_path that names the base it needs."""
    out.mkdir(parents=True)
    for f in sorted(src.adapter.glob("adapter_model*.safetensors")):
        shutil.copy2(f, out / f.name)
    cfg = src.adapter_config
    cfg["base_model_name_or_path"] = str(src.model)
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    copy_tokenizer(src, out)
    return out


def write_nf4(merged: Path, out: Path) -> Path:
    """bitsandbytes NF4 (double quantization, bf16 compute) of the merged model, quantized layer by
    layer as transformers loads it, and saved with its quantization config."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(str(merged), quantization_config=config, dtype=torch.bfloat16)
    model.save_pretrained(str(out))
    del model
    for name in (*_TOKENIZER_FILES, "generation_config.json"):
        if (merged / name).exists():
            shutil.copy2(merged / name, out / name)
    return out
