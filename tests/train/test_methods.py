"""LoRA, QLoRA, DoRA and full fine-tuning on tiny Llama and Llama 4 MoE models: the loss goes
down, exactly the trainable parameters change, and the saved artifact reloads to the same outputs."""

from __future__ import annotations

import json

import pytest
import torch

from finetune.train.run import build, finish
from tests.train.conftest import logged, make_recipe


@torch.no_grad()
def _snapshot(model) -> dict[str, torch.Tensor]:
    """Every parameter's value. A 4-bit weight is read through its layer's output on a fixed input:
    bitsandbytes repacks 4-bit weights for CPU inference on the first eval forward, which changes
    their storage but not the function they compute."""
    import bitsandbytes as bnb

    out = {n: p.detach().clone() for n, p in model.named_parameters() if not isinstance(p, bnb.nn.Params4bit)}
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            x = torch.linspace(-1, 1, module.in_features, dtype=torch.float32)[None]
            out[name + ".weight"] = module(x).clone()
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=0, atol=1e-6))


@pytest.mark.parametrize("model_name,method", [
    ("spm-hermes", "lora"), ("spm-hermes", "qlora"), ("spm-hermes", "dora"), ("spm-hermes", "full"),
    ("spm-llama4", "lora"), ("spm-llama4", "qlora"), ("spm-llama4", "full"),
])
def test_training_changes_exactly_the_trainable_weights(model_name, method, models, prepared, tmp_path):
    extra = {}
    if method == "qlora":
        extra["quantization"] = {"compute_dtype": "float32"}
    if method == "full":
        extra = {"lora": None, "learning_rate": 1e-3}
    recipe = make_recipe(models[model_name], prepared[model_name], tmp_path / "run", method=method, **extra)
    session = build(recipe, show_progress=False)
    model = session.trainer.model
    before = _snapshot(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    run = finish(session)

    losses = logged(run, "loss")
    assert losses[-1] < losses[0], losses
    after = _snapshot(model)
    changed = {n for n in before if not _same(before[n], after[n])}
    assert changed and changed <= trainable, sorted(changed - trainable)[:5]
    if method == "full":
        assert all(p.requires_grad for p in model.parameters())
    else:
        assert trainable and all("lora_" in n for n in trainable), sorted(trainable)[:5]
        assert all("lora_B" in n or "lora_A" in n or "lora_magnitude" in n for n in changed)
    if method == "dora":
        assert any("lora_magnitude_vector" in n for n in changed)
    if model_name == "spm-llama4" and method == "full":
        assert any("experts.gate_up_proj" in n for n in changed) and any("router" in n for n in changed)
    elif model_name == "spm-llama4":
        # Routed experts (fused parameters) and the shared expert are adapted; the router is not.
        assert any("experts" in n and "lora_" in n for n in changed)
        assert any("shared_expert" in n for n in changed)
        assert not any("router" in n for n in trainable)

    info = json.loads((run / "run.json").read_text())
    v = info["verification"]
    assert v["abs_diff"] <= 1e-4 * max(1.0, v["trained_loss"]) and v["tensors"] > 0
    out = run / ("model" if method == "full" else "adapter")
    assert (out / ("model.safetensors" if method == "full" else "adapter_model.safetensors")).exists()
    assert not (out / "training_args.bin").exists()
    assert (out / "chat_template.jinja").exists() and (run / "loss.png").stat().st_size > 1000
    assert info["versions"]["trl"] and info["data"]["train_samples"] > 0

    # Independent of the built-in check: the saved artifact gives the trained model's logits.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from finetune.train.model import load_model

    reloaded = (AutoModelForCausalLM.from_pretrained(out) if method == "full"
                else PeftModel.from_pretrained(load_model(str(models[model_name]), recipe.train, "fp32"), out))
    if method == "qlora":  # TRL trains QLoRA's LoRA matrices in bf16; PEFT loads them as fp32
        for name, param in reloaded.named_parameters():
            if "lora_" in name:
                param.data = param.data.to(torch.bfloat16)
    ids = torch.tensor([session.data.train[0]["input_ids"]])
    model.eval()
    reloaded.eval()
    with torch.no_grad():
        diff = (model(input_ids=ids).logits - reloaded(input_ids=ids).logits).abs().max().item()
    assert diff < 1e-5, diff
