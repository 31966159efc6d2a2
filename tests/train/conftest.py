"""Training fixtures: the shipped sample traces prepared once per tiny model, and recipe builders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.contracts.schema import recipe_from_tree
from finetune.train.config import Recipe
from tests.conftest import REPO

SOURCES = [{"path": str(REPO / "data" / "sample" / f)} for f in
           ("openai.jsonl", "hermes.jsonl", "glaive.jsonl", "xlam.json", "swe_agent.jsonl")]


@pytest.fixture(scope="session")
def prepared(models, tmp_path_factory) -> dict[str, Path]:
    """Model name -> prepared folder of the sample traces (max_seq_length 512)."""
    from finetune.data.config import Prepare
    from finetune.data.prepare import prepare

    out = {}
    for name in ("spm-hermes", "spm-llama4"):
        folder = tmp_path_factory.mktemp(f"prep-{name}")
        prepare(Prepare.of(model=str(models[name]), sources=[(s["path"], "auto") for s in SOURCES],
                               out=str(folder), max_seq_length=512, validation_fraction=0.2,
                               max_reject_fraction=0.5))
        out[name] = folder
    return out


def make_recipe(model: Path, data: Path, out: Path, **train) -> Recipe:
    base = {"method": "lora", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}, "learning_rate": 1e-2,
            "max_steps": 6, "per_device_batch_size": 2, "gradient_accumulation_steps": 1, "warmup_ratio": 0.0,
            "lr_scheduler": "constant", "verify_samples": 2, "output_dir": str(out),
            "datasets": [{"path": str(data)}]}
    for key, value in train.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return recipe_from_tree({"model": {"path": str(model)},
                             "data": {"sources": SOURCES, "max_seq_length": 512}, "train": base}, "test", Recipe)


def logged(run: Path, key: str) -> list[float]:
    return [r[key] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if key in r]
