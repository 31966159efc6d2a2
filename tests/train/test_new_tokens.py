"""Tokens a chat template needs that the base lacks: data prepare adds them, training grows the
embedding and trains exactly those rows (adapters too), and every export carries them or refuses."""

from __future__ import annotations

import json

import pytest
import torch

from finetune.train.run import build, finish
from tests.train.conftest import SOURCES, make_recipe

HEADERS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


@pytest.fixture(scope="module")
def llama3_on_spm(models, tmp_path_factory):
    """The sample traces rendered with the Llama 3 template on models whose vocabulary lacks its tokens."""
    from finetune.data.config import Prepare
    from finetune.data.prepare import prepare

    out = {}
    for name in ("spm-hermes", "spm-llama4"):
        folder = tmp_path_factory.mktemp(f"llama3-{name}")
        prepare(Prepare.of(model=str(models[name]), chat_template="llama3", out=str(folder), max_seq_length=512,
                               sources=[(s["path"], "auto") for s in SOURCES], validation_fraction=0.2,
                               max_reject_fraction=0.5))
        out[name] = folder
    return out


def _rows(model) -> dict[str, torch.Tensor]:
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    return {"input": inp.weight.detach().clone(), "output": out.weight.detach().clone()}


@pytest.mark.parametrize("model_name,method", [("spm-hermes", "lora"), ("spm-hermes", "full"),
                                               ("spm-llama4", "lora"), ("spm-hermes", "qlora")])
def test_new_template_tokens_are_added_grown_and_trained(model_name, method, models, llama3_on_spm, tmp_path):
    from transformers import AutoTokenizer

    data = llama3_on_spm[model_name]
    stats = json.loads((data / "stats.json").read_text())
    assert stats["tokenizer"]["added_tokens"] == HEADERS and stats["tokenizer"]["eos"]["now"] == "<|eot_id|>"
    base_rows = json.loads((models[model_name] / "config.json").read_text())["vocab_size"]
    tok = AutoTokenizer.from_pretrained(data / "tokenizer")
    new = [tok.convert_tokens_to_ids(t) for t in HEADERS]
    assert new == list(range(base_rows, base_rows + 3))

    extra = {"lora": None, "learning_rate": 1e-3} if method == "full" else {}
    if method == "qlora":
        extra["quantization"] = {"compute_dtype": "float32"}
    session = build(make_recipe(models[model_name], data, tmp_path / "run", method=method, **extra),
                    show_progress=False)
    assert session.vocab == {"rows_before": base_rows, "new_token_ids": new, "rows_after": base_rows + 3}
    model = session.trainer.model
    base = model.get_base_model() if method != "full" else model
    before = _rows(base.get_base_model() if hasattr(base, "get_base_model") else base)
    # New rows start at the mean of the trained ones.
    for w in before.values():
        assert torch.allclose(w[new], w[:base_rows].mean(0).expand(3, -1), atol=1e-6)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if method != "full":
        assert {n for n in trainable if "lora_" not in n} == {
            "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta.default",
            "base_model.model.lm_head.token_adapter.trainable_tokens_delta.default"}
        deltas = {n: p.detach().clone() for n, p in model.named_parameters() if "trainable_tokens_delta" in n}
    run = finish(session)

    info = json.loads((run / "run.json").read_text())
    assert info["vocab"]["new_token_ids"] == new and info["tokenizer"]["added_tokens"] == HEADERS
    assert info["verification"]["abs_diff"] <= 1e-4 * max(1.0, info["verification"]["trained_loss"])
    if method == "full":
        after = _rows(model)
        for key in after:  # every new row moved (they are in every assistant turn and its header)
            assert all(not torch.equal(before[key][i], after[key][i]) for i in new), key
        saved = json.loads((run / "model" / "config.json").read_text())
        assert saved["vocab_size"] == base_rows + 3
    else:
        for n, p in model.named_parameters():
            if "trainable_tokens_delta" in n:
                assert not torch.equal(p.detach(), deltas[n]), n
        # The base's own rows are frozen; the adapter holds the new rows and says which they are.
        frozen = _rows(model.get_base_model())
        for key in frozen:
            assert torch.equal(frozen[key][:base_rows], before[key][:base_rows]), key
        cfg = json.loads((run / "adapter" / "adapter_config.json").read_text())
        assert cfg["trainable_token_indices"] == {"embed_tokens": new, "lm_head": new}
        from safetensors import safe_open

        with safe_open(str(run / "adapter" / "adapter_model.safetensors"), "pt") as fh:
            keys = list(fh.keys())
        assert not any(k.endswith("embed_tokens.weight") or k.endswith("lm_head.weight") for k in keys), \
            "whole embedding matrices do not belong in the adapter"


@pytest.mark.slow
def test_exports_carry_the_new_rows_or_refuse(models, llama3_on_spm, tmp_path):
    from safetensors.torch import load_file

    from finetune import FinetuneError
    from finetune.export.run import export

    run = finish(build(make_recipe(models["spm-hermes"], llama3_on_spm["spm-hermes"], tmp_path / "run"),
                       show_progress=False))
    report = export(run, ["safetensors", "adapter", "gguf-f16"], tmp_path / "export", say=lambda _: None)
    assert not report["failures"]
    for fmt in ("safetensors", "adapter", "gguf-f16"):
        r = report["formats"][fmt]
        assert r["logit_corr"] > 0.999 and r["top1"] >= 0.99, (fmt, r)
    assert report["formats"]["gguf-f16"]["tokenizer_same"] and report["formats"]["gguf-f16"]["special_tokens_same"]
    merged = load_file(str(tmp_path / "export" / "safetensors" / "model.safetensors"))
    adapter = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    new = json.loads((run / "run.json").read_text())["vocab"]["new_token_ids"]
    for module, key in (("embed_tokens", "model.embed_tokens.weight"), ("lm_head", "lm_head.weight")):
        rows = adapter[f"base_model.model.{'model.' if module == 'embed_tokens' else ''}{module}.token_adapter"
                       ".trainable_tokens_delta"]
        assert torch.allclose(merged[key][new].float(), rows.float(), atol=1e-2)  # bf16 rounding
    with pytest.raises(FinetuneError, match="cannot add vocabulary to a base GGUF"):
        export(run, ["gguf-lora"], tmp_path / "lora", say=lambda _: None)
    assert not (tmp_path / "lora").exists()
