"""sdpa_segments: a packed row's blocks found from transformers' own mask (O(row), no row x row
mask), and chosen only where it is exact. Logits are checked in test_packing.py."""

from __future__ import annotations

import torch

from finetune.train.attention import SEGMENTS, register
from finetune.train.config import Train
from finetune.train.model import attention


def test_a_packed_row_gets_its_block_starts_not_a_mask(models):
    from transformers import AutoConfig
    from transformers.masking_utils import create_causal_mask

    register()
    config = AutoConfig.from_pretrained(models["spm-hermes"])
    config._attn_implementation = SEGMENTS
    lens = [37, 120, 5, 300]
    position_ids = torch.cat([torch.arange(n) for n in lens])[None]
    embeds = torch.zeros(1, sum(lens), config.hidden_size)
    starts = create_causal_mask(config, embeds, None, None, position_ids=position_ids)
    assert starts.tolist() == [37, 157, 162]
    one = create_causal_mask(config, embeds[:, :50], None, None, position_ids=torch.arange(50)[None])
    assert one.tolist() == []  # one sample: one causal block
    # A padded batch keeps sdpa's mask.
    padded = create_causal_mask(config, torch.zeros(2, 8, config.hidden_size),
                                torch.tensor([[1] * 8, [0] * 3 + [1] * 5]), None)
    assert padded.shape == (2, 1, 8, 8) and not padded[1, 0, :, :3].any()


def test_packing_under_sdpa_loads_the_per_sample_kernel(models):
    path = str(models["spm-hermes"])
    assert attention(path, Train(packing=True)) == SEGMENTS
    assert attention(path, Train(packing=False)) == "sdpa"
    assert attention(path, Train(packing=True, attn_implementation="eager")) == "eager"
    assert attention(path, Train(packing=True, attn_implementation="flash_attention_2")) == "flash_attention_2"
