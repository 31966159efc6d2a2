"""Tiny models load with the Auto classes, match their tokenizer and run a forward pass."""

from __future__ import annotations

import json

import pytest
import torch

from finetune import FinetuneError
from finetune.model.tiny import build_tiny_model
from tests.conftest import TOKENIZERS


@pytest.mark.parametrize("name,cls,template", [
    ("spm-hermes", "LlamaForCausalLM", "hermes"), ("bpe-llama3", "LlamaForCausalLM", "llama3"),
    ("bpe-llama4", "Llama4ForCausalLM", "llama4"), ("deepseek-hermes", "LlamaForCausalLM", "hermes")])
def test_tiny_models_load_and_run(name, cls, template, models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models[name]
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    info = json.loads((path / "tiny_model.json").read_text())
    assert type(model).__name__ == cls and info["template"] == template
    assert model.config.vocab_size == len(tok) == info["vocab_size"]
    assert tok.pad_token is not None and tok.pad_token_id != tok.eos_token_id
    assert tok.eos_token == {"hermes": "<|im_end|>", "llama3": "<|eot_id|>", "llama4": "<|eot|>"}[template]
    # The end-of-turn token is one token, and generation stops on it.
    assert len(tok.encode(tok.eos_token, add_special_tokens=False)) == 1
    assert tok.eos_token_id in model.generation_config.eos_token_id
    ids = tok.apply_chat_template([{"role": "user", "content": "def f(x):"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok)) and torch.isfinite(logits).all()


def test_llama4_is_a_moe_with_its_nope_layers(models):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(models["bpe-llama4"])
    assert cfg.model_type == "llama4_text" and cfg.num_local_experts == 4 and cfg.num_hidden_layers == 4
    assert cfg.no_rope_layers[3] == 0 and all(cfg.no_rope_layers[:3])


def test_same_seed_same_weights(tmp_path):
    from safetensors.torch import load_file

    a = build_tiny_model("llama", TOKENIZERS / "ggml-vocab-llama-spm.gguf", tmp_path / "a", seed=3)
    b = build_tiny_model("llama", TOKENIZERS / "ggml-vocab-llama-spm.gguf", tmp_path / "b", seed=3)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_bad_arguments_are_user_errors(tmp_path):
    spm = TOKENIZERS / "ggml-vocab-llama-spm.gguf"
    with pytest.raises(FinetuneError, match="at least 4 layers"):
        build_tiny_model("llama4", spm, tmp_path / "x", layers=2)
    with pytest.raises(FinetuneError, match="multiple of 32"):
        build_tiny_model("llama", spm, tmp_path / "x", hidden=50)
    with pytest.raises(FinetuneError, match="does not exist"):
        build_tiny_model("llama", tmp_path / "nope.gguf", tmp_path / "x")
