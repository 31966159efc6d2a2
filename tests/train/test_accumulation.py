"""Gradient accumulation: batch 1 x 8 accumulation steps gives the update of batch 8 x 1.

SGD makes the update linear in the gradient, so the comparison tests the loss normalisation
(tokens counted over the whole accumulated batch), not Adam's sign-like first step.
Tolerance: 1e-6 relative to the largest update, float32."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from finetune.train.run import train
from tests.train.conftest import make_recipe


def test_accumulation_matches_large_batch(models, prepared, tmp_path):
    runs = {}
    for name, (batch, accum) in {"big": (8, 1), "accum": (1, 8)}.items():
        recipe = make_recipe(models["spm-hermes"], prepared["spm-hermes"], tmp_path / name, packing=False,
                             optimizer="sgd", learning_rate=1.0, max_steps=1, per_device_batch_size=batch,
                             gradient_accumulation_steps=accum, max_grad_norm=0.0, verify_samples=0)
        runs[name] = load_file(train(recipe, show_progress=False) / "adapter" / "adapter_model.safetensors")
    big, acc = runs["big"], runs["accum"]
    # LoRA B starts at zero, so after one step it *is* the update (lr 1.0).
    updates = [k for k in big if "lora_B" in k]
    assert updates and max(big[k].abs().max().item() for k in updates) > 0
    scale = max(big[k].abs().max().item() for k in updates)
    worst = max((big[k] - acc[k]).abs().max().item() for k in big)
    assert worst <= 1e-6 * scale + 1e-9, (worst, scale)
    assert all(torch.equal(big[k], acc[k]) for k in big if "lora_A" in k)
