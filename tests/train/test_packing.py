"""Packed rows: every sample's logits equal its logits run alone (sdpa, eager and sdpa per
sample, Llama and Llama 4), and TRL's padding-free collator, as finetune configures it, restarts
position ids."""

from __future__ import annotations

import pytest
import torch

TOL = 1e-5  # float32; measured max |diff| 0 to ~2e-6 on these tiny models


@pytest.mark.parametrize("name", ["spm-hermes", "spm-llama4"])
@pytest.mark.parametrize("attn", ["sdpa", "eager", "sdpa_segments"])
def test_packed_logits_equal_separate_logits(name, attn, models, prepared):
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from finetune.data.prepare import load_prepared
    from finetune.train.attention import register

    register()

    model = AutoModelForCausalLM.from_pretrained(models[name], attn_implementation=attn).eval()
    rows = load_prepared(prepared[name])["train"]
    samples = [rows[i]["input_ids"] for i in range(3)]
    collator = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    batch = collator([{"input_ids": s, "labels": s} for s in samples])
    assert "attention_mask" not in batch
    starts = torch.nonzero(batch["position_ids"][0] == 0).flatten().tolist()
    assert starts == [0, len(samples[0]), len(samples[0]) + len(samples[1])]
    with torch.no_grad():
        # As in training (TRL's loss forward passes use_cache=False): transformers derives the
        # block-diagonal mask from restarting position ids only when there is no KV cache.
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        offset = 0
        for s in samples:
            alone = model(input_ids=torch.tensor([s])).logits[0]
            diff = (packed[offset:offset + len(s)] - alone).abs().max().item()
            assert diff < TOL, (name, attn, diff)
            offset += len(s)
    # The first label of every packed sample is masked: no token predicts across a boundary.
    assert all(batch["labels"][0, i] == -100 for i in starts)
