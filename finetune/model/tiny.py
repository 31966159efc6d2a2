"""Tiny random-initialised Llama / Llama 4 MoE models with real tokenizers, for CPU work and tests.

The model is small (hidden 64, 2 layers by default) but everything around it is real: the
tokenizer is one of the real vocabularies (SentencePiece Llama 2 / Code Llama, Llama 3 byte-level
BPE, DeepSeek-Coder) read from a tokenizer folder or a vocabulary-only GGUF file, the chat
template is one of the toolkit's tool-calling templates, and the folder loads with
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``.

The tokenizer is fitted as every stage fits it (``contracts/tokenizer.py``): template tokens the
vocabulary lacks (``<|im_start|>`` for ChatML on a Llama 2 vocabulary, the Llama 4 header tokens
on a Llama 3 vocabulary) are added, EOS is the end-of-turn token and the pad is distinct, and the
random embedding simply has a row for each token.

Example::

    build_tiny_model("llama", "data/tokenizers/ggml-vocab-llama-bpe.gguf", "runs/tiny")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from finetune import FinetuneError
from finetune.contracts.chat import TEMPLATES
from finetune.contracts.tokenizer import fit_tokenizer, load_tokenizer


def default_template(arch: str, tokenizer) -> str:
    """Llama 4 models get the Llama 4 format; Llama models the Llama 3 one if the vocabulary has
    its header tokens, else ChatML/Hermes (Llama 2 and Code Llama vocabularies)."""
    if arch == "llama4":
        return "llama4"
    return "llama3" if "<|start_header_id|>" in tokenizer.get_vocab() else "hermes"


def _config(arch: str, vocab: int, layers: int, hidden: int, tok):
    from transformers import Llama4TextConfig, LlamaConfig

    heads = max(2, hidden // 32)
    common = dict(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), head_dim=hidden // heads,
        max_position_embeddings=8192, tie_word_embeddings=False, rms_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    if arch == "llama":
        return LlamaConfig(intermediate_size=hidden * 3, **common)
    # Llama 4 Scout's layout in miniature: every layer MoE (routed experts + a shared expert),
    # RoPE left out on every 4th layer, chunked attention.
    return Llama4TextConfig(
        intermediate_size=hidden * 2, intermediate_size_mlp=hidden * 4, num_local_experts=4,
        num_experts_per_tok=1, interleave_moe_layer_step=1, attention_chunk_size=8192, **common,
    )


def build_tiny_model(
    arch: Literal["llama", "llama4"],
    tokenizer: str | Path,
    out: str | Path,
    layers: int | None = None,
    hidden: int = 64,
    template: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny random model folder (safetensors, tokenizer, chat template) and return it."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    if arch not in ("llama", "llama4"):
        raise FinetuneError(f"--arch {arch!r}: choose llama or llama4")
    # llama.cpp's Llama 4 code assumes the real layer pattern (no RoPE on every 4th layer).
    layers = layers or (4 if arch == "llama4" else 2)
    if arch == "llama4" and layers < 4:
        raise FinetuneError("--layers: a Llama 4 model needs at least 4 layers (llama.cpp assumes its NoPE pattern)")
    if hidden % 32 or hidden < 32:
        raise FinetuneError(f"--hidden {hidden}: use a multiple of 32 (K-quant GGUF export wants 256 or more)")
    if template is not None and template not in TEMPLATES:
        raise FinetuneError(f"--chat-template {template!r}: choose one of {', '.join(TEMPLATES)}")
    tok = load_tokenizer(tokenizer)
    template = template or default_template(arch, tok)
    fit_tokenizer(tok, template)
    config = _config(arch, len(tok), layers, hidden, tok)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    end_ids = [tok.eos_token_id] + [i for i in (tok.convert_tokens_to_ids(t) for t in ("</s>", "<|end_of_text|>"))
                                    if isinstance(i, int) and i != tok.unk_token_id and i != tok.eos_token_id]
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=end_ids, pad_token_id=tok.pad_token_id).save_pretrained(out)
    tok.save_pretrained(out)
    (out / "tiny_model.json").write_text(json.dumps(
        {"arch": arch, "layers": layers, "hidden": hidden, "template": template, "seed": seed,
         "tokenizer": Path(tokenizer).name, "vocab_size": len(tok),
         "parameters": sum(p.numel() for p in model.parameters())}, indent=2) + "\n")
    return out
