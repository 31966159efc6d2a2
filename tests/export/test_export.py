"""Round trips: each artifact loaded by its serving runtime computes what the trained model does."""

from __future__ import annotations

import json

import pytest
import torch

from finetune import FinetuneError
from finetune.contracts.artifacts import verify_artifacts
from finetune.export import to_gguf
from finetune.export.run import export


def test_merged_safetensors_match_the_adapter_model(exported):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter, out, report = exported["llama-spm"]
    folder = out / "safetensors"
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and set(index["weight_map"].values()) == {s.name for s in shards}
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    assert (folder / "chat_template.jinja").read_text() == (adapter / "chat_template.jinja").read_text()
    assert (folder / "generation_config.json").exists()

    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    ids = torch.tensor([[1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278]])
    with torch.no_grad():
        want = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                         str(adapter)).eval()(ids).logits
        got = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)(ids).logits
    # bf16 weights: each rounded by at most 2^-9 relative; logits here stay within 0.05 of float32's.
    torch.testing.assert_close(got, want, rtol=0, atol=0.05)
    r = report["formats"]["safetensors"]
    assert r["logit_corr"] > 0.9999 and r["mean_kl"] < 1e-4


@pytest.mark.parametrize("name", ["llama-spm", "llama4-bpe"])
def test_gguf_f16_reproduces_the_trained_model(exported, name):
    _, out, report = exported[name]
    r = report["formats"]["gguf-f16"]
    assert r["top1"] > 0.99 and r["greedy_same"] and r["logit_corr"] > 0.9999 and r["mean_kl"] < 1e-5
    assert r["tokenizer_same"] and r["chat_template_same"] and r["special_tokens_same"]
    assert report["positions"] > 300


def test_gguf_metadata_matches_the_tokenizer(exported):
    import gguf
    from transformers import AutoTokenizer

    adapter, out, _ = exported["llama4-bpe"]
    tok = AutoTokenizer.from_pretrained(str(adapter))
    fields = gguf.GGUFReader(str(out / "gguf" / "llama4-bpe-adapter-F16.gguf")).fields
    value = lambda k: fields[k].contents()  # noqa: E731
    assert value("general.architecture") == "llama4"
    assert value("tokenizer.ggml.model") == "gpt2" and value("tokenizer.ggml.pre") == "llama-bpe"
    assert value("tokenizer.chat_template") == tok.chat_template
    assert value("tokenizer.ggml.eos_token_id") == tok.eos_token_id == tok.convert_tokens_to_ids("<|eot|>")
    assert value("tokenizer.ggml.bos_token_id") == tok.bos_token_id
    assert len(fields["tokenizer.ggml.tokens"].data) == len(tok)
    assert value("llama4.expert_count") == 4 and value("llama4.expert_used_count") == 1


def test_quantized_ggufs_load_generate_and_report_kl(exported):
    from finetune.export.verify import GGUFRunner

    _, out, report = exported["llama-spm"]
    for fmt in ("gguf-q8_0", "gguf-q4_k_m"):
        r = report["formats"][fmt]
        assert 0 < r["mean_kl"] < 0.1 and r["tokenizer_same"], (fmt, r)
    # quantization error grows as bits shrink
    assert report["formats"]["gguf-q8_0"]["mean_kl"] < report["formats"]["gguf-q4_k_m"]["mean_kl"]
    assert report["formats"]["gguf-q8_0"]["logit_corr"] > 0.99
    q4 = out / "gguf" / "llama-spm-adapter-Q4_K_M.gguf"
    assert q4.stat().st_size < 0.45 * (out / "gguf" / "llama-spm-adapter-F16.gguf").stat().st_size
    runner = GGUFRunner(q4)
    try:
        assert len(runner.greedy([1, 450, 4996])) == 16
    finally:
        runner.close()


def test_nf4_artifact_reloads_with_transformers(exported):
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    _, out, report = exported["llama-spm"]
    config = json.loads((out / "bnb-nf4" / "config.json").read_text())
    assert config["quantization_config"]["bnb_4bit_quant_type"] == "nf4"
    model = AutoModelForCausalLM.from_pretrained(str(out / "bnb-nf4"))
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) == 14
    assert 0 < report["formats"]["bnb-nf4"]["mean_kl"] < 0.1


def test_adapter_artifact_is_the_trained_adapter(exported):
    adapter, out, report = exported["llama-spm"]
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (adapter / "adapter_model.safetensors").read_bytes()
    assert report["formats"]["adapter"]["mean_kl"] == 0 and report["formats"]["adapter"]["top1"] == 1


def test_model_card_and_artifacts_manifest(exported):
    _, out, _ = exported["llama-spm"]
    card = (out / "safetensors" / "README.md").read_text()
    front = card.split("---")[1]
    for key in ("base_model: llama-spm", "library_name: transformers", "license:", "pipeline_tag: text-generation",
                "tags:"):
        assert key in front
    assert "library_name: peft" in (out / "adapter" / "README.md").read_text()
    assert "| gguf-q4_k_m |" in card
    manifest = json.loads((out / "artifacts.json").read_text())
    listed = {f["path"] for a in manifest["artifacts"] for f in a["files"]}
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"artifacts.json",
                                                                                   "export_report.json", "README.md"}
    assert listed == on_disk
    assert {a["format"] for a in manifest["artifacts"]} == {"safetensors", "adapter", "gguf-f16", "gguf-q8_0",
                                                            "gguf-q4_k_m", "bnb-nf4"}
    assert manifest["toolkit_version"] and manifest["source"]["method"] == "dora"


def test_one_corrupted_byte_is_caught(exported, tmp_path):
    import shutil

    from finetune.cli import main

    _, out, _ = exported["llama4-bpe"]
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert verify_artifacts(copy) == []
    target = copy / "gguf" / "llama4-bpe-adapter-Q8_0.gguf"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    problems = verify_artifacts(copy)
    assert len(problems) == 1 and "Q8_0.gguf" in problems[0] and "sha256" in problems[0]
    assert main(["verify-artifacts", str(copy)]) == 2


def test_a_mapping_bug_fails_the_export_and_leaves_nothing(wide, exported, tmp_path, monkeypatch):
    """Without the Q/K permutation the f16 GGUF computes something else: the gate must catch it."""
    adapter, _, _ = exported["llama-spm"]
    monkeypatch.setattr(to_gguf, "_permute", lambda w, heads: w)
    with pytest.raises(FinetuneError, match="conversion bug"):
        export(adapter, ["gguf-f16"], tmp_path / "out", say=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_export_leaves_no_folder(exported, tmp_path, monkeypatch):
    from finetune.export import run

    adapter, _, _ = exported["llama-spm"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "_verify", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export(adapter, ["safetensors"], tmp_path / "out", say=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_refusals(exported, tmp_path):
    adapter, out, _ = exported["llama-spm"]
    with pytest.raises(FinetuneError, match="not empty"):
        export(adapter, ["safetensors"], out)
    with pytest.raises(FinetuneError, match="choose from"):
        export(adapter, ["gguf-q3"], tmp_path / "x")
    with pytest.raises(FinetuneError, match="has no adapter"):
        export(adapter.parent / "llama-spm-export" / "safetensors", ["adapter"], tmp_path / "y")
    with pytest.raises(FinetuneError, match="--adapter goes with a model folder"):
        export(adapter, ["safetensors"], tmp_path / "z", adapter=adapter)
    assert not any(tmp_path.iterdir())


def test_gguf_lora_adapter_applies_in_llama_cpp(wide, exported, tmp_path):
    import gguf

    from tests.export.conftest import make_adapter

    adapter = make_adapter(wide["llama-spm"], tmp_path / "rslora", use_rslora=True)
    report = export(adapter, ["gguf-lora"], tmp_path / "out", say=lambda _: None)
    r = report["formats"]["gguf-lora"]  # base f16 GGUF + this adapter in llama.cpp vs PEFT float32
    assert r["top1"] > 0.99 and r["logit_corr"] > 0.9999 and r["greedy_same"]
    fields = gguf.GGUFReader(str(tmp_path / "out" / "gguf" / "rslora-LoRA-F32.gguf")).fields
    assert fields["general.type"].contents() == "adapter" and fields["adapter.type"].contents() == "lora"
    assert fields["adapter.lora.alpha"].contents() == pytest.approx(8 / 2 * 4)  # rsLoRA: alpha/sqrt(r) == a'/r
    assert not any(p.name.startswith("base") for p in (tmp_path / "out").rglob("*"))  # verification-only base

    dora, _, _ = exported["llama-spm"]
    with pytest.raises(FinetuneError, match="gguf-lora: llama.cpp LoRA adapters hold plain A/B"):
        export(dora, ["gguf-lora"], tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_plain_model_without_chat_template(models, tmp_path):
    """A base model folder (no adapter, no chat template) exports and verifies on plain text."""
    import shutil

    folder = tmp_path / "base"
    shutil.copytree(models["spm-hermes"], folder)
    (folder / "chat_template.jinja").unlink()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    report = export(folder, ["gguf-f16"], tmp_path / "out", say=lambda _: None)
    r = report["formats"]["gguf-f16"]
    assert report["method"] == "none" and r["tokenizer_same"] and r["logit_corr"] > 0.9999
    assert "tokenizer.chat_template" not in __import__("gguf").GGUFReader(
        str(tmp_path / "out" / "gguf" / "base-F16.gguf")).fields
