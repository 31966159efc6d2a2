"""After training: the saved artifact is reloaded and checked, and the loss curves are drawn.

The check catches what users otherwise find days later: an adapter saved empty (the ZeRO-3 gather
problem: every tensor has zero elements), or one that does not compute what the trained model
computed (wrong keys, a missed module, a dtype slip). The loss of the trained, in-memory model on
a few validation samples must equal the loss of a fresh base model with the saved adapter (or of
the saved full model) within a stated relative tolerance.

Example::

    plot_losses(run / "metrics.jsonl", run / "loss.png")
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch

from finetune import FinetuneError
from finetune.train.model import DTYPES, attach_adapter, load_model


@torch.no_grad()
def mean_loss(model, samples) -> float:
    """Mean over ``samples`` of each sample's token-mean loss (batch size 1, no padding).

    Under DeepSpeed ZeRO-3 every rank must call this with the same samples (the forward pass
    gathers sharded weights collectively)."""
    was_training = model.training
    model.eval()
    device = next(p.device for p in model.parameters())
    losses = []
    for row in samples:
        ids = torch.tensor([row["input_ids"]], device=device)
        labels = torch.tensor([row["labels"]], device=device)
        losses.append(float(model(input_ids=ids, labels=labels).loss))
    model.train(was_training)
    return sum(losses) / len(losses)


def _check_not_empty(out: Path) -> int:
    from safetensors import safe_open

    files = sorted(out.glob("*.safetensors"))
    if not files:
        raise FinetuneError(f"{out} holds no safetensors weights after saving")
    n, empty = 0, []
    for f in files:
        with safe_open(str(f), "pt") as fh:
            for key in fh.keys():  # noqa: SIM118 (safe_open has no __iter__)
                n += 1
                if 0 in fh.get_slice(key).get_shape():
                    empty.append(key)
    if not n or empty:
        raise FinetuneError(f"{out}: {len(empty) or 'all'} saved tensor(s) are empty (e.g. {empty[:2]}); under "
                            "ZeRO-3 set stage3_gather_16bit_weights_on_model_save: true in the DeepSpeed config")
    return n


@contextmanager
def _without_zero3():
    """Load an ordinary, unsharded model on one rank while a ZeRO-3 run is active (transformers
    would otherwise partition it with zero.Init, a collective the other ranks never join)."""
    from transformers.integrations import deepspeed as ds

    saved = ds._hf_deepspeed_config_weak_ref
    ds.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        ds._hf_deepspeed_config_weak_ref = saved


def verify_saved(recipe, out: Path, precision: str, samples, trained_loss: float, rtol: float) -> dict:
    """Reload ``out`` onto a fresh base model; its loss must match ``trained_loss``."""
    tensors = _check_not_empty(out)
    with _without_zero3():
        model = _reload(recipe, out, precision)
    reloaded = mean_loss(model, samples)
    diff = abs(reloaded - trained_loss)
    report = {"samples": len(samples), "trained_loss": trained_loss, "reloaded_loss": reloaded,
              "abs_diff": diff, "rtol": rtol, "tensors": tensors}
    if not diff <= rtol * max(1.0, abs(trained_loss)):
        raise FinetuneError(f"the saved {out.name} does not reproduce the trained model: loss {reloaded:.6f} vs "
                            f"{trained_loss:.6f} on {len(samples)} samples (tolerance {rtol}); see {out}")
    return report


def _reload(recipe, out: Path, precision: str):
    from transformers import AutoModelForCausalLM

    device_map = {"": 0} if torch.cuda.is_available() else None
    if recipe.train.method == "full":
        model = AutoModelForCausalLM.from_pretrained(str(out), dtype=DTYPES[precision], device_map=device_map)
    else:
        model = attach_adapter(load_model(recipe.model.path, recipe.train, precision, device_map=device_map), out)
        if recipe.train.method == "qlora":
            as_trained_qlora(model)
    return model


def as_trained_qlora(model) -> None:
    """TRL trains QLoRA's LoRA matrices in bf16 (QLoRA paper, section 3; the DoRA magnitude stays
    fp32); PEFT loads them as fp32. Computing as trained means casting them back."""
    for name, param in model.named_parameters():
        if "lora_" in name and "lora_magnitude_vector" not in name:
            param.data = param.data.to(torch.bfloat16)


def plot_losses(metrics: Path, png: Path) -> None:
    """Train and eval loss against the step, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("loss", "train"), ("eval_loss", "eval")):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o" if key == "eval_loss" else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(metrics.parent.name)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
