"""Exact parameter counts of a model with a recipe's adapter, from its config (no weights read).

:func:`count_parameters` builds the model on the ``meta`` device from its ``config.json`` and wraps
it with the recipe's PEFT adapter there, so the counts are exact: total and trainable parameters,
the linear weights bitsandbytes makes 4-bit for QLoRA, the largest module (DeepSpeed's
``largest_layer_params``), the largest decoder layer (what FSDP gathers), and what each decoder
layer saves for the backward pass per token. ``memory.py`` turns them into bytes.

Activations saved per decoder layer and per token (counted with
``torch.autograd.graph.saved_tensors_hooks`` on SmolLM2-135M and a tiny Llama 4 as trained here;
the formula is within 4% of what the hooks see), in elements::

    attention  4h + 3q + 2kv    two norm inputs, three linear inputs, the rotated q and the
                                attention output (q = heads x head_dim), k and v (kv = kv_heads x
                                head_dim); full training +2h (the norms' weights train);
                                Llama 4's QK-norm layers +q +kv
    MLP        4i               gate, up, act(gate), act(gate) x up (i: intermediate size)
    MoE        4i + E(2h+4i+1)  the shared expert, and every routed expert on every token
                                (transformers' Llama 4 runs all E experts, the router's scores
                                zeroing the unchosen), and the scores
    adapters   r per adapted linear layer; DoRA +2 x out per adapted linear layer

and per layer whatever the tokens: DoRA's identity matrices (PEFT pushes one per input width,
in x in, through the adapters), and Llama 4's routed experts adapted as parameters, whose merged
weight the backward keeps. With gradient checkpointing a layer keeps only its input (h per token)
and one layer at a time is recomputed.

Example::

    counts = count_parameters("runs/smollm2", recipe.train)
    counts.trainable   # 4_884_480: LoRA r=16 on every linear layer of SmolLM2-135M
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from finetune import FinetuneError
from finetune.train.config import Lora, Train


@dataclass
class Layer:
    """One decoder layer's saved activations, in elements."""

    per_token: int
    constant: int  # whatever the tokens: DoRA's identity matrices, merged expert weights
    adapted_inputs: int  # summed input widths of its adapted linear layers (dropout, autocast copies)
    widest: int  # the widest tensor it saves, per token (whether glibc serves it from its heap)


@dataclass
class Counts:
    """Exact parameter counts of a model with a recipe's adapter, from the meta device."""

    params: int  # unique (tied embeddings counted once)
    trainable: int  # adapter parameters, or all of them for full training
    quantizable: int  # nn.Linear parameters bitsandbytes makes 4-bit (all but the output embedding)
    matmul: int  # weights each token is multiplied by (LM head in, input embedding lookup out)
    largest_module: int  # the most parameters one module owns (DeepSpeed's largest_layer_params)
    decoder_layer: int  # parameters of the largest decoder layer (FSDP gathers one at a time)
    hidden: int
    vocab: int
    attention_width: int  # heads x head_dim
    layers: list[Layer]
    checkpoint_bytes: int  # safetensors files in the model folder (0 without any)
    model_type: str


def load_config(path: str):
    """The config of the model at ``path`` (a folder with config.json, or a hub id)."""
    from transformers import AutoConfig

    folder = Path(path)
    if folder.exists() and not (folder / "config.json").is_file():
        raise FinetuneError(f"model.path {path} has no config.json: plan reads only a model's config, so a folder "
                            "holding its config.json is enough (no weights needed)")
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise FinetuneError(f"model.path {path}: no model config found ({str(exc).splitlines()[0]}); point "
                            "model.path at a folder with the model's config.json, e.g. model.path=/models/x") from None


def _layer(text, index: int, full: bool, adapted: list[tuple[int, int, int]], merged: int, dora: bool) -> Layer:
    """Decoder layer ``index``: the formula of the module docstring; ``adapted``: (r, in, out) of
    each adapted linear layer; ``merged``: elements of expert weights adapted as parameters."""
    h = text.hidden_size
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or h // heads
    q, kv = heads * head_dim, (getattr(text, "num_key_value_heads", None) or heads) * head_dim
    per_token = 4 * h + 3 * q + 2 * kv + (2 * h if full else 0)
    rope = getattr(text, "no_rope_layers", None)
    if getattr(text, "use_qk_norm", False) and (not rope or rope[index]):
        per_token += q + kv
    experts = getattr(text, "num_local_experts", 0) or 0
    moe_layers = getattr(text, "moe_layers", None)
    if experts and (moe_layers is None or index in moe_layers):
        i = text.intermediate_size
        per_token += 4 * i + experts * (2 * h + 4 * i + 1)
        widest = experts * 2 * i
    else:
        widest = getattr(text, "intermediate_size_mlp", None) or text.intermediate_size
        per_token += 4 * widest
    per_token += sum(r + (2 * out if dora else 0) for r, _, out in adapted)
    constant = merged + (sum(w * w for w in {width for _, width, _ in adapted}) if dora else 0)
    return Layer(per_token=per_token, constant=constant, adapted_inputs=sum(width for _, width, _ in adapted),
                 widest=max(widest, h, q))


def count_parameters(path: str, train: Train) -> Counts:
    """Build the model at ``path`` on the meta device, add ``train``'s adapter, and count (once
    per config file and adapter in a process: ``plan`` re-estimates every candidate change)."""
    config = Path(path) / "config.json"
    stamp = config.stat().st_mtime_ns if config.is_file() else 0
    # QLoRA adapts the same layers as LoRA: PEFT's all-linear finds bitsandbytes' Linear4bit alike.
    kind = "lora" if train.method == "qlora" else train.method
    return _count(path, stamp, kind, train.lora.model_dump_json() if train.lora else None)


@functools.lru_cache(maxsize=16)
def _count(path: str, stamp: int, method: str, lora: str | None) -> Counts:
    import torch
    from transformers import AutoModelForCausalLM

    from finetune.train.model import adapter_config

    train = Train(method=method, lora=Lora.model_validate_json(lora) if lora else None)
    config = load_config(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    text = config.get_text_config()
    params = sum(p.numel() for p in model.parameters())
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    quantizable = sum(sum(p.numel() for p in m.parameters()) for m in linears if m is not out)
    experts = sum(p.numel() for p in model.parameters() if p.dim() == 3)  # Llama 4's fused routed experts
    matmul = sum(m.weight.numel() for m in linears) + experts + (inp.weight.numel() if out is None else 0)
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    decoder = max((m for m in model.modules() if isinstance(m, torch.nn.ModuleList)), key=len)
    decoder_layer = max(sum(p.numel() for p in layer.parameters()) for layer in decoder)

    trainable, adapted, merged = params, {}, {}
    if train.method != "full":
        from peft import get_peft_model

        try:
            model = get_peft_model(model, adapter_config(train, model))
        except ValueError as exc:  # training would stop on the same error, after loading the weights
            fix = "; set train.lora.dropout=0 (Llama 4's routed experts are adapted as parameters, without " \
                  "dropout)" if "dropout" in str(exc) else ""
            raise FinetuneError(f"PEFT refuses this recipe's adapter on {path}: {exc}{fix}") from None
        trainable = model.get_nb_trainable_parameters()[0]
        for name, module in model.named_modules():
            found = re.search(r"\.layers\.(\d+)\.", name)
            if found is None:
                continue
            index, base = int(found.group(1)), getattr(module, "base_layer", None)
            if type(module).__name__ == "ParamWrapper":  # routed experts adapted as parameters
                merged[index] = merged.get(index, 0) + getattr(module.get_base_layer(), module.parameter_name).numel()
            elif hasattr(module, "lora_A") and isinstance(base, torch.nn.Linear):
                adapted.setdefault(index, []).append((train.lora.r, base.in_features, base.out_features))
    layers = [_layer(text, i, train.method == "full", adapted.get(i, []), merged.get(i, 0), train.method == "dora")
              for i in range(len(decoder))]
    files = list(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
    heads = text.num_attention_heads
    return Counts(params=params, trainable=trainable, quantizable=quantizable, matmul=matmul, largest_module=largest,
                  decoder_layer=decoder_layer, hidden=text.hidden_size, vocab=text.vocab_size,
                  attention_width=heads * (getattr(text, "head_dim", None) or text.hidden_size // heads),
                  layers=layers, checkpoint_bytes=sum(f.stat().st_size for f in files), model_type=text.model_type)
