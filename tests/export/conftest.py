"""Export fixtures: tiny models wide enough for K-quants (hidden 256), random non-zero adapters,
and one export per model shared by the tests that read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TOKENIZERS


def make_adapter(model: Path, out: Path, moe: bool = False, **lora) -> Path:
    """A PEFT adapter with random (not zero) B matrices, so merging changes every target."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    kwargs = dict(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    if moe:
        kwargs.update(exclude_modules=["router"],
                      target_parameters=["feed_forward.experts.gate_up_proj", "feed_forward.experts.down_proj"])
    kwargs.update(lora)
    peft_model = get_peft_model(base, LoraConfig(**kwargs))
    with torch.no_grad():  # PEFT's non-default init is large; keep the adapter a plausible nudge
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.2)
    peft_model.save_pretrained(str(out))
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(model)).save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def wide(models, tmp_path_factory) -> dict[str, Path]:
    """hidden-256 models: dense Llama with the SentencePiece vocabulary, Llama 4 MoE with Llama 3 BPE."""
    from finetune.model.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("wide")
    return {"llama-spm": build_tiny_model("llama", TOKENIZERS / "ggml-vocab-llama-spm.gguf", root / "llama-spm",
                                          hidden=256),
            "llama4-bpe": build_tiny_model("llama4", models["bpe-llama3"], root / "llama4-bpe", hidden=256)}


@pytest.fixture(scope="session")
def exported(wide, tmp_path_factory) -> dict[str, tuple[Path, Path, dict]]:
    """name -> (adapter, export folder, report), every format the model's test needs."""
    from finetune.export.run import export

    root = tmp_path_factory.mktemp("exports")
    plans = {
        "llama-spm": (dict(use_dora=True), ["safetensors", "adapter", "gguf-f16", "gguf-q8_0", "gguf-q4_k_m",
                                             "bnb-nf4"]),
        "llama4-bpe": (dict(moe=True, use_rslora=True), ["safetensors", "gguf-f16", "gguf-bf16", "gguf-q8_0"]),
    }
    out = {}
    for name, (lora, formats) in plans.items():
        adapter = make_adapter(wide[name], root / f"{name}-adapter", **lora)
        report = export(adapter, formats, root / f"{name}-export", max_shard_size="4MB", say=lambda _: None)
        out[name] = (adapter, root / f"{name}-export", report)
    return out
