"""Packed rows attended at the cost of their samples: ``sdpa_segments``.

A padding-free packed row holds several samples, told apart by position ids that restart at 0.
With FlashAttention the kernel splits the row itself (varlen). Without it, transformers builds a
block-diagonal mask over the whole row and sdpa attends over all of it: O(row^2) time and a
row x row mask, for work that is only sum(len_i^2). ``sdpa_segments`` is sdpa called once per
sample (causal, no mask), registered through transformers' attention and mask interfaces, so the
models' own attention modules (rotary, GQA, Llama 4's QK-norm) are untouched:

* for a padding-free row (one row, no padding mask, no cache) the mask function returns where the
  blocks start instead of a mask, found with transformers' own mask function (packed samples,
  Llama 4's attention chunks), and defers to sdpa's mask otherwise (padded batches, generation);
* the attention function runs causal sdpa per block, and plain sdpa for anything else.

It is exact for masks made of causal blocks (Llama, Llama 4); models with a sliding window keep
sdpa.

``finetune train`` uses it when a recipe packs with ``attn_implementation: sdpa``.

Example::

    register()
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=SEGMENTS)
"""

from __future__ import annotations

import torch

SEGMENTS = "sdpa_segments"


def _mask(*, batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
          mask_function=None, attention_mask: torch.Tensor | None = None, device=None, **kwargs):
    """For one padding-free row without a cache: the token indices where a new block starts (a
    1-D tensor, not a mask). A block starts wherever a token may not attend to the one before it,
    asked of transformers' own mask function (causal, and the packed samples of the position ids,
    and Llama 4's attention chunks), one pair per token: O(row), not O(row^2). Otherwise sdpa's
    mask, unchanged."""
    from transformers.masking_utils import sdpa_mask

    if batch_size == 1 and attention_mask is None and q_offset == 0 and kv_offset == 0 and q_length == kv_length \
            and mask_function is not None:
        q = torch.arange(1, q_length, device=device)
        zero = torch.zeros((), dtype=torch.long, device=device)
        joined = mask_function(zero, zero, q, q - 1)
        return torch.nonzero(~joined).flatten() + 1
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask,
                     device=device, **kwargs)


def segment_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """sdpa over each block of a packed row (query/key/value: batch x heads x tokens x dim); any
    other input (a real mask, a cache) goes to sdpa as it is."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is None or attention_mask.ndim != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    bounds = [0, *attention_mask.tolist(), query.shape[2]]
    out = [sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None,
                                  dropout=dropout, scaling=scaling, is_causal=True)[0]
           for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return torch.cat(out, dim=1), None


def register() -> None:
    """Make ``attn_implementation="sdpa_segments"`` loadable (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(SEGMENTS, segment_attention)
    AttentionMaskInterface.register(SEGMENTS, _mask)
