"""GGUF for llama.cpp / Ollama: ``llama`` and ``llama4`` models written with the ``gguf`` package.

Every tensor is planned (GGUF name, shape, type) from the source's headers, the header and
metadata go out first, then tensors stream one at a time (``GGUFWriter.add_tensor_info`` +
``write_tensor_data``), so memory stays at one tensor. f16, bf16 and q8_0 are written directly
(q8_0 by ``gguf.quants``); K-quants (q4_k_m, q5_k_m, q6_k) go through llama.cpp's own quantizer
(``llama_model_quantize`` in llama-cpp-python) from the f16 file, because its importance-free
K-quant mixes pick per-tensor types (q6_K for ``output``, q4_K/q5_K elsewhere) that a hand-rolled
quantizer would get subtly wrong.

Layout facts (checked against llama.cpp's loader): llama.cpp's ``llama`` rotates interleaved
pairs, Hugging Face's Llama rotates halves, so Q and K rows are permuted back per head; Llama 4
already rotates pairs and is written as is. Llama 4's fused ``gate_up_proj`` (E x hidden x 2F)
becomes ``ffn_gate_exps`` and ``ffn_up_exps`` (E x F x hidden) and ``down_proj`` is transposed.
llama.cpp's Llama 4 fixes chunked attention at 8192 tokens with NoPE on every 4th layer, so a
config that says otherwise is refused rather than exported into a model that computes differently.

The tokenizer goes in as the HF tokenizer the data was rendered with: SentencePiece-style
(byte-fallback BPE, scores from merge ranks) as ``llama``, byte-level BPE as ``gpt2`` with its
merges and the pre-tokenizer llama.cpp must use to split text the same way, plus special token
ids, BOS/EOS behaviour and the chat template.

Example::

    write_gguf(src, out / "model-f16.gguf", "f16", name="my-model")
    quantize(out / "model-f16.gguf", out / "model-q4_k_m.gguf", "q4_k_m")
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from finetune import FinetuneError
from finetune.export.source import Source

DIRECT = ("f16", "bf16", "q8_0")
K_QUANTS = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
            "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K"}
# Hugging Face pre-tokenizer split regexes -> the llama.cpp pre-tokenizer that splits text the same way.
_PRE_BY_REGEX = {
    # Llama 3
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+":
        "llama-bpe",
    # Llama 4 (and GPT-4o's o200k): case-aware words, "/" kept with punctuation runs. Written with
    # any other pre-tokenizer name a Llama 4 GGUF splits text differently from training (Ollama's
    # `default` cost 8-10% more tokens: ollama#17698).
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama4",
}
LLAMA4_SPLIT = next(regex for regex, pre in _PRE_BY_REGEX.items() if pre == "llama4")


def _types(kind: str):
    import gguf

    q = gguf.GGMLQuantizationType
    return {"f16": (q.F16, gguf.LlamaFileType.MOSTLY_F16), "bf16": (q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
            "q8_0": (q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0)}[kind]


def _rope_theta(cfg: dict) -> float:
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    return float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))


def _rope_factors(cfg: dict, head_dim: int) -> np.ndarray | None:
    """Llama 3-style RoPE scaling as llama.cpp's per-frequency divisors (``rope_freqs``)."""
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "default":
        return None
    if kind != "llama3":
        raise FinetuneError(f"config.json rope type {kind!r}: GGUF export handles default and llama3 RoPE")
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old_ctx = rope["original_max_position_embeddings"]
    freqs = 1.0 / _rope_theta(cfg) ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi / freqs
    smooth = np.clip((old_ctx / wavelen - low) / (high - low), 0.0, 1.0)
    return (1.0 / ((1 - smooth) / factor + smooth)).astype(np.float32)


def _head_dim(cfg: dict) -> int:
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def _permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Rotate-half row order (HF) -> interleaved pairs (llama.cpp), per head."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _row_fix(src: Source, stem: str):
    """What llama.cpp's layout needs done to the output rows of module ``stem`` (identity except
    Llama's Q and K); applies to a weight and to a LoRA B alike."""
    cfg = src.config
    if src.arch == "llama" and stem.endswith("self_attn.q_proj"):
        return lambda t: _permute(t, cfg["num_attention_heads"])
    if src.arch == "llama" and stem.endswith("self_attn.k_proj"):
        return lambda t: _permute(t, cfg.get("num_key_value_heads") or cfg["num_attention_heads"])
    return lambda t: t


def _writer(src: Source, path: Path):
    import gguf

    arch = gguf.MODEL_ARCH.LLAMA if src.arch == "llama" else gguf.MODEL_ARCH.LLAMA4
    names = gguf.get_tensor_name_map(arch, src.config["num_hidden_layers"])
    return gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch]), names


def check_llama4(cfg: dict) -> None:
    layers = cfg["num_hidden_layers"]
    nope = cfg.get("no_rope_layers") or []
    expected = [0 if (i + 1) % 4 == 0 else 1 for i in range(layers)]
    problems = []
    if cfg.get("attention_chunk_size") != 8192:
        problems.append(f"attention_chunk_size {cfg.get('attention_chunk_size')} (llama.cpp uses 8192)")
    if nope and list(nope) != expected:
        problems.append(f"no_rope_layers {nope} (llama.cpp leaves RoPE out of every 4th layer: {expected})")
    if not cfg.get("use_qk_norm", True) or not cfg.get("attn_temperature_tuning", True):
        problems.append("use_qk_norm / attn_temperature_tuning off (llama.cpp applies both)")
    if layers < 4:
        problems.append(f"{layers} layers (llama.cpp's Llama 4 needs at least 4)")
    if problems:
        raise FinetuneError("this Llama 4 config cannot be served by llama.cpp as trained: " + "; ".join(problems))


def plan(src: Source, names) -> list[tuple[str, str, callable]]:
    """(GGUF name, HF name, fn(tensor) -> tensor) for every tensor, in source order."""
    out = []
    for hf in src.names():
        if hf.endswith("rotary_emb.inv_freq"):
            continue
        if hf.endswith("feed_forward.experts.gate_up_proj"):
            block = hf.split(".")[2]
            half = src.shape(hf)[-1] // 2
            out.append((f"blk.{block}.ffn_gate_exps.weight", hf, lambda t, h=half: t[..., :h].transpose(-1, -2)))
            out.append((f"blk.{block}.ffn_up_exps.weight", hf, lambda t, h=half: t[..., h:].transpose(-1, -2)))
            continue
        if hf.endswith("feed_forward.experts.down_proj"):
            out.append((f"blk.{hf.split('.')[2]}.ffn_down_exps.weight", hf, lambda t: t.transpose(-1, -2)))
            continue
        stem, suffix = hf.rsplit(".", 1)
        name = names.get_name(stem)
        if name is None:
            raise FinetuneError(f"{src.model}: no GGUF name for tensor {hf}; this model's layout is not a "
                                f"plain {src.arch} (export supports Llama and Llama 4 text models)")
        out.append((f"{name}.{suffix}", hf, _row_fix(src, stem)))
    return out


def _out_type(kind: str, gguf_name: str, shape: tuple):
    import gguf

    q = gguf.GGMLQuantizationType
    if len(shape) == 1 or "ffn_gate_inp" in gguf_name:  # norms and the MoE router stay float32
        return q.F32
    want = _types(kind)[0]
    if want == q.Q8_0 and shape[-1] % 32:
        return q.F16  # q8_0 blocks are 32 wide; llama.cpp's converter makes the same fallback
    return want


def _add_tokenizer(writer, src: Source) -> None:
    import gguf
    from transformers import AutoTokenizer

    tok_dir = src.tokenizer_dir
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    spec = json.loads((tok_dir / "tokenizer.json").read_text())
    model = spec["model"]
    n_vocab = src.shape("model.embed_tokens.weight")[0]
    vocab = tok.get_vocab()
    by_id = {i: t for t, i in vocab.items()}
    if len(vocab) > n_vocab:
        raise FinetuneError(f"the tokenizer has {len(vocab)} tokens but the embedding only {n_vocab} rows")
    added = {t.content: t for t in tok.added_tokens_decoder.values()}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    tokens, types, scores = [], [], []
    T = gguf.TokenType
    if model["type"] == "BPE" and model.get("byte_fallback"):
        tokenizer_model, pre = "llama", "default"
        # SentencePiece merges highest score first; HF's merge list is that order, so score = -rank.
        rank = {"".join(m.split(" ")): -float(i) for i, m in enumerate(merges)}
    elif model["type"] == "BPE" and spec.get("decoder", {}).get("type") == "ByteLevel":
        tokenizer_model, pre = "gpt2", _pre_tokenizer(spec, tok_dir)
        rank = None
    else:
        raise FinetuneError(f"{tok_dir}/tokenizer.json: a {model['type']} tokenizer cannot be written to GGUF; "
                            "export handles SentencePiece-style and byte-level BPE (Llama 2/3/4, Code Llama)")
    for i in range(n_vocab):
        text = by_id.get(i)
        if text is None:  # embedding rows past the vocabulary (padded to a multiple)
            tokens.append(f"[PAD{i}]".encode())
            types.append(T.UNUSED)
            scores.append(-1000.0)
            continue
        tokens.append(text.encode("utf-8"))
        if text in added:
            types.append(T.CONTROL if added[text].special else T.USER_DEFINED)
        elif i == tok.unk_token_id:
            types.append(T.UNKNOWN)
        elif rank is not None and len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            types.append(T.BYTE)
        else:
            types.append(T.NORMAL)
        scores.append(rank.get(text, 0.0) if rank is not None else 0.0)
    writer.add_tokenizer_model(tokenizer_model)
    if tokenizer_model == "llama":
        # llama.cpp puts SentencePiece's leading space before every text run that follows a special
        # token; HF only at the start of the input. Served prompts are chat-templated, so when the
        # template opens with a special token, no text run ever starts an input: turn it off.
        writer.add_add_space_prefix(not _template_opens_special(tok))
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if rank is not None:
        writer.add_token_scores(scores)
    else:
        writer.add_token_merges(merges)
    for kind, value in (("bos", tok.bos_token_id), ("eos", tok.eos_token_id), ("unk", tok.unk_token_id),
                        ("pad", tok.pad_token_id)):
        if value is not None:
            getattr(writer, f"add_{kind}_token_id")(value)
    probe = tok("a")["input_ids"]
    writer.add_add_bos_token(bool(probe) and probe[0] == tok.bos_token_id)
    writer.add_add_eos_token(bool(probe) and probe[-1] == tok.eos_token_id and tok.eos_token_id != tok.bos_token_id)
    if tok.chat_template:
        writer.add_chat_template(tok.chat_template)


def _template_opens_special(tok) -> bool:
    if not tok.chat_template:
        return False
    text = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    specials = [t.content for t in tok.added_tokens_decoder.values() if t.special]
    return any(text.startswith(s) for s in specials)


def _pre_tokenizer(spec: dict, where: Path) -> str:
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre])
    regexes = [p["pattern"]["Regex"] for p in parts if p.get("type") == "Split" and "Regex" in p.get("pattern", {})]
    if not regexes and any(p.get("type") == "ByteLevel" and p.get("use_regex", True) for p in parts):
        return "gpt-2"
    if len(regexes) == 1 and regexes[0] in _PRE_BY_REGEX:
        return _PRE_BY_REGEX[regexes[0]]
    raise FinetuneError(f"{where}/tokenizer.json: its pre-tokenizer split pattern is not one llama.cpp is known to "
                        "reproduce (Llama 3, Llama 4 or GPT-2 style); a GGUF would tokenize text differently from training")


def _add_hparams(writer, src: Source, kind: str, name: str) -> None:
    cfg, arch = src.config, src.arch
    heads, head_dim = cfg["num_attention_heads"], _head_dim(cfg)
    writer.add_name(name)
    writer.add_file_type(_types(kind)[1])
    if kind == "q8_0":
        writer.add_quantization_version(2)
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(cfg.get("num_key_value_heads") or heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_rope_theta(cfg))
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_vocab_size(src.shape("model.embed_tokens.weight")[0])
    if arch == "llama":
        writer.add_feed_forward_length(cfg["intermediate_size"])
    else:
        check_llama4(cfg)
        writer.add_feed_forward_length(cfg["intermediate_size_mlp"])
        writer.add_expert_feed_forward_length(cfg["intermediate_size"])
        writer.add_expert_count(cfg["num_local_experts"])
        writer.add_expert_used_count(cfg["num_experts_per_tok"])
        writer.add_interleave_moe_layer_step(cfg["interleave_moe_layer_step"])


def write_gguf(src: Source, path: Path, kind: str, name: str) -> Path:
    """Write ``src`` (adapter merged) as a ``kind`` GGUF (f16, bf16 or q8_0)."""
    import gguf

    if kind not in DIRECT:
        raise FinetuneError(f"internal: write_gguf writes {DIRECT}, not {kind}")
    writer, names = _writer(src, path)
    steps = plan(src, names)
    _add_hparams(writer, src, kind, name)
    _add_tokenizer(writer, src)
    factors = _rope_factors(src.config, _head_dim(src.config))
    types = {}
    if factors is not None:
        writer.add_tensor_info("rope_freqs.weight", factors.shape, np.float32, factors.nbytes)
    for gname, hf, fn in steps:
        shape = tuple(fn(torch.empty(src.shape(hf), device="meta")).shape)
        qtype = types[gname] = _out_type(kind, gname, shape)
        if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            dtype = np.float32 if qtype == gguf.GGMLQuantizationType.F32 else np.float16
            writer.add_tensor_info(gname, shape, dtype, _nbytes(shape, qtype), raw_dtype=qtype)
        else:  # the writer takes quantized tensors by their byte shape
            writer.add_tensor_info(gname, gguf.quant_shape_to_byte_shape(shape, qtype), np.uint8,
                                   _nbytes(shape, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    if factors is not None:
        writer.write_tensor_data(factors)
    cached = (None, None)
    for gname, hf, fn in steps:
        if cached[0] != hf:  # gate and up experts come from one fused tensor: read it once
            cached = (hf, src.tensor(hf))
        writer.write_tensor_data(_encode(fn(cached[1]), types[gname]))
    writer.close()
    return path


def check_lora(src: Source) -> float:
    """The alpha llama.cpp needs, or why this adapter has no llama.cpp LoRA form."""
    kinds = {kind for *_, kind in src.lora_pairs.values()}
    if src.new_rows:
        raise FinetuneError("--format gguf-lora: the adapter trains embedding rows for tokens its base lacks "
                            f"({sum(map(len, src.new_rows.values()))} row(s), e.g. the chat template's tokens), and a "
                            "llama.cpp LoRA cannot add vocabulary to a base GGUF. Export a merged GGUF (gguf-f16, "
                            "gguf-q4_k_m, ...), which carries the grown vocabulary")
    if kinds - {"lora"} or src._replaced:
        raise FinetuneError("--format gguf-lora: llama.cpp LoRA adapters hold plain A/B pairs on linear layers; "
                            f"this adapter also has {sorted(kinds - {'lora'}) or 'fully trained modules'} "
                            "(DoRA magnitudes, Llama 4 expert parameters or modules_to_save). Export a merged "
                            "GGUF (gguf-f16, gguf-q4_k_m, ...) instead")
    alphas = {round(s * a.shape[0], 6) for a, _, s, _ in src.lora_pairs.values()}
    if len(alphas) != 1:
        raise FinetuneError("--format gguf-lora: the adapter mixes ranks/alphas; llama.cpp takes one alpha per file")
    return alphas.pop()


def write_lora(src: Source, path: Path, name: str) -> Path:
    """The adapter as a GGUF LoRA for llama.cpp's ``--lora`` (float32 A and B, Q/K rows of B
    permuted like the base's). llama.cpp scales by ``alpha / r``, so rsLoRA's ``alpha / sqrt(r)``
    is written as an equivalent alpha."""
    import gguf

    alpha = check_lora(src)
    writer, names = _writer(src, path)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_name(name)
    for hf, (a, b, _, _) in src.lora_pairs.items():
        stem = hf.rsplit(".", 1)[0]
        gname = f"{names.get_name(stem)}.weight"
        writer.add_tensor(f"{gname}.lora_a", a.contiguous().numpy())
        writer.add_tensor(f"{gname}.lora_b", _row_fix(src, stem)(b).contiguous().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _nbytes(shape: tuple, qtype) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape)) // block * size


def _encode(t: torch.Tensor, qtype) -> np.ndarray:
    import gguf

    q = gguf.GGMLQuantizationType
    t = t.contiguous()
    if qtype == q.F32:
        return t.float().numpy()
    if qtype == q.F16:
        return t.half().numpy()
    if qtype == q.BF16:
        return t.bfloat16().view(torch.int16).numpy().view(np.uint8)
    return gguf.quants.quantize(t.float().numpy(), qtype)


def quantize(source: Path, path: Path, kind: str) -> Path:
    """llama.cpp's quantizer (K-quant mixes) from a 16-bit GGUF."""
    import ctypes

    import llama_cpp
    from llama_cpp._logger import set_verbose

    set_verbose(False)  # llama.cpp logs every tensor it converts; the export prints its own summary
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, K_QUANTS[kind])
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(path).encode(), ctypes.byref(params))
    if status != 0 or not path.exists():
        raise FinetuneError(f"llama.cpp could not quantize {source} to {kind} (status {status})")
    return path
