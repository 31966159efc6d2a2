"""Every tiny recipe trains end to end (its own data section prepared on the fly), on a tiny
model with a 32k vocabulary (Code Llama's, or DeepSeek-Coder's where the recipe asks for
fill-in-the-middle) instead of the demo's 128k one, to keep CI fast."""

from __future__ import annotations

import json

import pytest

from finetune.contracts.schema import load_recipe
from finetune.train.config import Recipe
from finetune.train.run import train
from tests.conftest import REPO

TINY = sorted((REPO / "recipes" / "tiny").glob("*.yaml"))


@pytest.mark.parametrize("path", TINY, ids=lambda p: p.stem)
def test_tiny_recipe_trains(path, models, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the recipes name data/sample/... relative to the repository
    # Fill-in-the-middle needs FIM tokens: the 32k DeepSeek-Coder vocabulary has them.
    fim = any(s.codebase and s.codebase.fim for s in load_recipe(path, [], Recipe).data.sources)
    model = models["deepseek-hermes" if fim else "spm-hermes"]
    recipe = load_recipe(path, [f"model.path={model}", f"data.output_dir={tmp_path / 'data'}",
                                f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2",
                                "data.max_seq_length=512"], Recipe)
    run = train(recipe, show_progress=False)
    info = json.loads((run / "run.json").read_text())
    assert info["global_step"] == 2 and info["verification"]["abs_diff"] <= 1e-3
    out = run / ("model" if recipe.train.method == "full" else "adapter")
    assert out.is_dir() and (run / "loss.png").exists() and (run / "metrics.jsonl").exists()
    assert (tmp_path / "data" / "stats.json").exists()
