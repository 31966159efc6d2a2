"""Model loading (16-bit, or 4-bit NF4 for QLoRA) and the PEFT adapter configuration.

Target modules default to every linear layer (PEFT's ``all-linear``). Llama 4 MoE layers need
more than that: the routed experts are fused 3-D parameters, not ``nn.Linear`` modules, so they
are reached through PEFT's ``target_parameters``; the router *is* an ``nn.Linear`` and is
excluded, because training it moves tokens between experts that were never trained for them.
The shared expert is an ordinary MLP and is covered by ``all-linear``.

Explicit target lists are checked against a weightless copy of the model (built on the ``meta``
device from the config) before any weights load, so a typo costs a second, not a model load.

Tokens the base has never seen (a chat template's tokens added by ``data prepare``, a new pad):
the embedding grows to the tokenizer's size, each new row starts at the mean of the trained rows
(input and output embeddings; the mean keeps a new token's logit ordinary instead of random, as
Hewitt 2021 recommends), and the rows are trained: with adapters through PEFT's
``trainable_token_indices`` (only those rows, saved in the adapter), with full training like
every weight. :func:`attach_adapter` grows a base the same way before loading such an adapter.

Example::

    check_targets(recipe.model.path, recipe.train)   # before loading
    model = load_model(recipe.model.path, recipe.train, precision="fp32")
    peft_config = adapter_config(recipe.train, model)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from finetune import FinetuneError
from finetune.train.attention import SEGMENTS
from finetune.train.attention import register as register_segments
from finetune.train.config import Train

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
MOE_EXPERT_PARAMS = ["feed_forward.experts.gate_up_proj", "feed_forward.experts.down_proj"]


def is_llama4_moe(config) -> bool:
    return getattr(config, "model_type", "") in ("llama4_text", "llama4")


def _linear_names(path: str) -> list[str]:
    """Names of every linear module of the model at ``path``, without loading weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def check_targets(path: str, train: Train) -> None:
    """Every explicit LoRA target must match a linear module (PEFT's suffix rule)."""
    if train.method == "full" or train.lora.target_modules == "all-linear":
        return
    names = _linear_names(path)
    unmatched = [t for t in train.lora.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise FinetuneError(f"train.lora.target_modules {unmatched} match no linear layer of {path}; "
                            f"its linear layers are named {leaves} (or use all-linear)")


def quantization_config(train: Train, sharded: bool):
    """bitsandbytes 4-bit config; under ZeRO-3 / FSDP the storage dtype matches the compute dtype,
    which is what lets those engines shard the packed 4-bit weights like any other tensor."""
    from transformers import BitsAndBytesConfig

    q = train.quantization
    compute = getattr(torch, q.compute_dtype)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=q.quant_type, bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=compute if sharded else torch.uint8)


def attention(path: str, train: Train) -> str:
    """The attention kernel to load: the recipe's, except that packed rows under sdpa are attended
    per sample (:mod:`finetune.train.attention`) on models whose masks are causal blocks."""
    from transformers import AutoConfig

    if not (train.packing and train.attn_implementation == "sdpa"):
        return train.attn_implementation
    config = AutoConfig.from_pretrained(path)
    text = getattr(config, "text_config", None) or config
    if getattr(text, "sliding_window", None) or getattr(text, "layer_types", None) and \
            set(text.layer_types) - {"full_attention", "chunked_attention"}:
        return "sdpa"
    register_segments()
    return SEGMENTS


def load_model(path: str, train: Train, precision: str, sharded: bool = False, device_map=None):
    """The base model in the training dtype (QLoRA: 4-bit NF4 with the configured compute dtype)."""
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": DTYPES[precision], "attn_implementation": attention(path, train)}
    if train.method == "qlora":
        kwargs["quantization_config"] = quantization_config(train, sharded)
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if is_llama4_moe(model.config) and not hasattr(model, model.base_model_prefix):
        # Llama4ForCausalLM names its backbone `model` but declares the prefix `language_model` (that
        # of the multimodal Llama 4); TRL's fused LM head finds the backbone through the prefix.
        model.base_model_prefix = "model"
        # TRL's MoE auxiliary loss reads `num_experts`; Llama 4 calls it `num_local_experts`.
        model.config.num_experts = model.config.num_local_experts
    if train.method == "qlora" and not torch.cuda.is_available():
        _keep_4bit_trainable_on_cpu(model)
    return model


def _keep_4bit_trainable_on_cpu(model) -> None:
    """bitsandbytes 0.50 repacks a 4-bit weight for AVX512-BF16 CPU inference the first time its
    layer runs in eval mode, for good; the repacked weight then goes through ``gemv_4bit``, which
    has no autograd kernel, so every training step after the first evaluation would backpropagate
    nothing through the frozen base layers. Training keeps the trainable layout."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def new_token_ids(tokenizer, model_path: str) -> list[int]:
    """Ids of ``tokenizer`` (the one the data was prepared with) that the model at ``model_path``
    has no trained embedding row for: tokens its own tokenizer lacks, or ids past its embedding.
    The data's tokenizer must extend the model's: the same id for every token the model knows."""
    from transformers import AutoConfig, AutoTokenizer

    rows = AutoConfig.from_pretrained(model_path).vocab_size
    vocab = tokenizer.get_vocab()
    own = Path(model_path)
    if (own / "tokenizer.json").exists() or (own / "tokenizer.model").exists():
        known = AutoTokenizer.from_pretrained(model_path).get_vocab()
        moved = [t for t, i in known.items() if vocab.get(t) != i]
        if moved:
            raise FinetuneError(f"the data was tokenized with another vocabulary than {model_path}'s ({len(moved)} "
                                f"token(s) differ, e.g. {moved[:3]}): prepare the data with this model's tokenizer")
        return sorted(i for t, i in vocab.items() if t not in known or i >= rows)
    return sorted(i for i in vocab.values() if i >= rows)


def grow_vocab(model, n_rows: int, new_ids: list[int]) -> None:
    """Grow the embeddings to ``n_rows`` (when smaller) and start the ``new_ids`` rows (and any
    grown row) at the mean of the base's other rows, in the input and the output embedding."""
    old = model.get_input_embeddings().weight.shape[0]
    if old < n_rows:
        model.resize_token_embeddings(n_rows, mean_resizing=False)
    with torch.no_grad():
        for layer in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings())
                      if m is not None}.values():
            w = layer.weight
            fresh = torch.tensor(sorted(set(new_ids) | set(range(old, w.shape[0]))), dtype=torch.long, device=w.device)
            below = fresh[fresh < old]
            # float32 sums without a float32 copy of the whole matrix
            others = torch.sum(w[:old], 0, dtype=torch.float32) - torch.sum(w[below], 0, dtype=torch.float32)
            w[fresh] = (others / (old - len(below))).to(w.dtype)


def attach_adapter(base, adapter: Path | str):
    """``PeftModel.from_pretrained(base, adapter)``, after growing ``base`` to the rows the
    adapter's trained tokens need (its saved rows then replace the grown ones exactly)."""
    from peft import PeftModel

    indices = json.loads((Path(adapter) / "adapter_config.json").read_text()).get("trainable_token_indices")
    if indices:
        ids = sorted({i for v in (indices.values() if isinstance(indices, dict) else [indices]) for i in v})
        grow_vocab(base, max(ids) + 1, ids)
    return PeftModel.from_pretrained(base, str(adapter))


def _embedding_names(model) -> dict[str, object]:
    """PEFT names of the input and (untied) output embedding modules."""
    named = {id(m): n.rsplit(".", 1)[-1] for n, m in model.named_modules()}
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    names = {named[id(inp)]: inp}
    if out is not None and out.weight is not inp.weight:
        names[named[id(out)]] = out
    return names


def adapter_config(train: Train, model, new_ids: list[int] = ()):
    """The PEFT LoraConfig for LoRA / QLoRA / DoRA / rsLoRA, or None for full fine-tuning;
    ``new_ids`` are embedding rows trained alongside (``trainable_token_indices``)."""
    from peft import LoraConfig

    if train.method == "full":
        return None
    config = model.config
    lora = train.lora
    kwargs = dict(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, use_rslora=lora.use_rslora,
                  use_dora=train.method == "dora", task_type="CAUSAL_LM", bias="none")
    if new_ids:  # tied embeddings: PEFT trains the shared rows once
        kwargs["trainable_token_indices"] = {name: list(new_ids) for name in _embedding_names(model)}
    if lora.target_modules == "all-linear":
        kwargs["target_modules"] = "all-linear"
        if is_llama4_moe(config):
            kwargs["exclude_modules"] = ["router"]
            # PEFT's DoRA has no parameter-level variant, so DoRA leaves the routed experts frozen.
            if train.method != "dora":
                kwargs["target_parameters"] = MOE_EXPERT_PARAMS
    else:
        kwargs["target_modules"] = list(lora.target_modules)
    return LoraConfig(**kwargs)
