"""Tiny random-initialised Llama / Llama 4 MoE models with real tokenizers, for CPU work and tests.

The model is small (hidden 64, 2 layers by default) but everything around it is real: the
tokenizer is one of the real vocabularies (SentencePiece Llama 2 / Code Llama, Llama 3 byte-level
BPE, DeepSeek-Coder) read from a tokenizer folder or a vocabulary-only GGUF file, the chat
template is one of the toolkit's tool-calling templates, and the folder loads with
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``.

Template tokens the vocabulary lacks (``<|im_start|>`` for ChatML on a Llama 2 vocabulary, the
Llama 4 header tokens on a Llama 3 vocabulary) are added as special tokens and the embedding is
sized to match, as a real fine-tune that adopts a new chat format does.

Example::

    build_tiny_model("llama", "data/tokenizers/ggml-vocab-llama-bpe.gguf", "runs/tiny")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from finetune import FinetuneError
from finetune.data.templates import TEMPLATES

# Pad candidates in order of preference; a pad equal to EOS would mask every EOS out of the loss.
_PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<pad>", "<|reserved_special_token_0|>", "<unk>")


def load_tokenizer(path: str | Path):
    """A tokenizer from a folder, or from a vocabulary-only ``.gguf`` file (no weights needed)."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.exists():
        raise FinetuneError(f"tokenizer {path} does not exist")
    if path.suffix == ".gguf":
        return _restore_gguf_tokens(AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name), path)
    return AutoTokenizer.from_pretrained(str(path))


def _restore_gguf_tokens(tok, path: Path):
    """Give control and user-defined tokens back their GGUF text and ids.

    transformers' GGUF reader byte-encodes the text of a byte-level BPE vocabulary's control and
    user-defined tokens (DeepSeek-Coder's ``<｜fim▁begin｜>`` becomes ``<ï½ľfimâĸģbeginï½ľ>``, so the
    real text no longer encodes to it) and appends BOS/EOS as new ids (32257/32258 instead of the
    GGUF's 32013/32014). Both would break fill-in-the-middle and the GGUF round trip, so the
    tokenizer is rewritten with the GGUF's own text and ids for those tokens.
    """
    import tempfile

    import gguf
    from transformers import AutoTokenizer

    data = json.loads(tok.backend_tokenizer.to_str())
    if data["model"]["type"] != "BPE":
        return tok
    fields = gguf.GGUFReader(path).fields
    texts = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    special = {i: t == gguf.TokenType.CONTROL for i, t in enumerate(types)
               if t in (gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED)}
    vocab = data["model"]["vocab"]
    key_of = {v: k for k, v in vocab.items()}
    for i in special:
        if key_of.get(i, texts[i]) != texts[i]:
            del vocab[key_of[i]]
            vocab[texts[i]] = i
    gguf_id = {texts[i]: i for i in special}
    moved = {a["id"]: gguf_id[a["content"]] for a in data["added_tokens"]
             if a["content"] in gguf_id and a["id"] != gguf_id[a["content"]]}
    if not moved and all(key_of.get(i) == texts[i] for i in special):
        return tok
    added = {a["id"]: a for a in data["added_tokens"] if a["id"] not in moved}
    for i, is_control in special.items():
        added[i] = {**added.get(i, {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False}),
                    "id": i, "content": texts[i], "special": is_control}
    data["added_tokens"] = [added[i] for i in sorted(added)]

    def renumber(node):
        if isinstance(node, dict):
            return {k: ([moved.get(i, i) for i in v] if k == "ids" else renumber(v)) for k, v in node.items()}
        return [renumber(v) for v in node] if isinstance(node, list) else node

    data["post_processor"] = renumber(data["post_processor"])
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
        cfg = json.loads((Path(tmp) / "tokenizer_config.json").read_text())
        cfg.pop("added_tokens_decoder", None)  # the old ids; tokenizer.json holds the new ones
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(cfg))
        return AutoTokenizer.from_pretrained(tmp)


def default_template(arch: str, tokenizer) -> str:
    """Llama 4 models get the Llama 4 format; Llama models the Llama 3 one if the vocabulary has
    its header tokens, else ChatML/Hermes (Llama 2 and Code Llama vocabularies)."""
    if arch == "llama4":
        return "llama4"
    return "llama3" if "<|start_header_id|>" in tokenizer.get_vocab() else "hermes"


def prepare_tokenizer(tokenizer, template: str):
    """Give ``tokenizer`` the template, its special tokens, an end-of-turn EOS and a distinct pad."""
    from transformers import AddedToken

    spec = TEMPLATES[template]
    vocab = tokenizer.get_vocab()
    missing = [t for t in spec.special_tokens if t not in vocab]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    tokenizer.chat_template = spec.jinja
    tokenizer.eos_token = spec.end_of_turn
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        vocab = tokenizer.get_vocab()
        pad = next((p for p in _PAD_CANDIDATES if p in vocab), None)
        if pad is None:
            pad = "<pad>"
            tokenizer.add_tokens([AddedToken(pad, special=True, normalized=False)], special_tokens=True)
        tokenizer.pad_token = pad
    return tokenizer


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
    prepare_tokenizer(tok, template)
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
