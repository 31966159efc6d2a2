"""Export straight from training run folders: QLoRA (merged into the 16-bit base) and full."""

from __future__ import annotations

import json

import pytest

from finetune.cli import main
from tests.train.conftest import make_recipe


@pytest.mark.parametrize("method", ["qlora", "full"])
def test_export_a_run_folder(models, prepared, tmp_path, capsys, method):
    from finetune.train.run import train

    extra = {"quantization": {"compute_dtype": "float32"}} if method == "qlora" else {"lora": None}
    run = train(make_recipe(models["spm-hermes"], prepared["spm-hermes"], tmp_path / "run", method=method,
                            max_steps=2, **extra), show_progress=False)
    out = tmp_path / "export"
    assert main(["export", str(run), "--format", "safetensors", "--format", "gguf-f16", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "gguf-f16" in printed and "verified on" in printed

    report = json.loads((out / "export_report.json").read_text())
    assert report["method"] == method and report["failures"] == []
    assert report["formats"]["gguf-f16"]["tokenizer_same"]
    if method == "qlora":
        q = report["qlora_as_trained_vs_merged"]
        assert 0 < q["mean_kl"] and q["top1"] > 0.5  # NF4 rounding of the base, nothing more
        assert "QLoRA" in printed
    else:
        assert "qlora_as_trained_vs_merged" not in report
    card = (out / "README.md").read_text()
    assert "- openai.jsonl" in card.split("---")[1]          # datasets from the recipe
    assert "| eval_loss |" in card and "| train_loss |" in card
    assert json.loads((out / "artifacts.json").read_text())["source"]["run"] == str(run)
