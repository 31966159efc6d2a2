"""The training recipe: ``model`` (what to start from), ``data`` (what to train on, see
``data/config.py``) and ``train`` (how). Cross-field rules live next to the fields they join
(``Train._check_method``).

Example::

    recipe = load_recipe("recipes/tiny/traces.yaml", ["train.max_steps=10"], Recipe)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from finetune.contracts.schema import Strict
from finetune.data.config import Prepare


class Lora(Strict):
    r: int = Field(default=16, ge=1, description="Adapter rank.")
    alpha: int = Field(default=32, ge=1, description="Scaling numerator (alpha / r, or / sqrt(r)).")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on adapter input.")
    target_modules: Literal["all-linear"] | list[str] = Field(
        default="all-linear", description="`all-linear` or explicit module names."
    )
    use_rslora: bool = Field(default=False, description="Scale by alpha / sqrt(r) (rsLoRA).")


class Quantization(Strict):
    bits: Literal[4] = Field(default=4, description="Storage bits of the frozen base (QLoRA).")
    quant_type: Literal["nf4", "fp4"] = Field(default="nf4", description="4-bit data type.")
    double_quant: bool = Field(default=True, description="Quantize the quantization constants.")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        default="bfloat16", description="dtype the 4-bit weights are dequantized to for matmuls."
    )


class PreparedSet(Strict):
    path: str = Field(description="Folder written by `finetune data prepare`.")
    weight: float = Field(
        default=1.0, gt=0.0,
        description="Sampling multiplier: 0.5 keeps half the set's samples, 2.0 repeats it twice (seeded).",
    )


class Train(Strict):
    datasets: list[PreparedSet] | None = Field(
        default=None,
        description="Prepared sets (a weighted mixture); none: the `data` section is prepared on the fly.",
    )
    method: Literal["lora", "qlora", "dora", "full"] = Field(
        default="lora", description="What is trained: adapters (LoRA/QLoRA/DoRA) or all weights."
    )
    lora: Lora | None = Field(default=None, description="Adapter settings (not for `full`).")
    quantization: Quantization | None = Field(
        default=None, description="4-bit base for `qlora`; required there, refused elsewhere."
    )
    learning_rate: float = Field(default=2e-4, gt=0.0, description="Peak learning rate.")
    num_epochs: float = Field(default=1.0, gt=0.0, description="Passes over the training split.")
    per_device_batch_size: int = Field(default=1, ge=1, description="Sequences per device step.")
    gradient_accumulation_steps: int = Field(default=8, ge=1, description="Steps per update.")
    max_steps: int = Field(default=-1, ge=-1, description="Stop after this many updates (-1: epochs decide).")
    warmup_ratio: float = Field(default=0.03, ge=0.0, lt=1.0, description="Share of updates spent warming up.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        default="cosine", description="Learning-rate schedule after warm-up."
    )
    optimizer: Literal["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "sgd"] = Field(
        default="adamw_torch", description="Optimizer (the 8-bit ones from bitsandbytes save memory on GPUs)."
    )
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(default=1.0, ge=0.0, description="Gradient clipping (0: off).")
    packing: bool = Field(
        default=True,
        description="Best-fit packing of samples into rows of max_seq_length, position ids restarting per "
                    "sample so no token attends across samples.",
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="Training precision; auto: bf16 where the GPU supports it, else fp32."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flash_attention_3"] = Field(
        default="sdpa", description="Attention kernel; packing is exact with every one of them."
    )
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations to save memory.")
    liger_kernel: bool = Field(
        default=False,
        description="Liger's Triton kernels for RMSNorm, RoPE and SwiGLU (through transformers' "
                    "`use_liger_kernel`). Its fused linear cross-entropy is not used: TRL's SFTTrainer already "
                    "scores tokens through its own chunked LM head and never builds the full logits. "
                    "CUDA GPU only; needs the `liger-kernel` package (pip install liger-kernel).",
    )
    logging_steps: int = Field(default=1, ge=1, description="Log (metrics.jsonl, progress) every N updates.")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Trackers that also get the metrics (metrics.jsonl and loss.png are always written): "
                    "tensorboard (RUN/tensorboard), wandb (offline, RUN/wandb, unless WANDB_MODE says otherwise), "
                    "mlflow (RUN/mlruns unless MLFLOW_TRACKING_URI is set); wandb and mlflow need their package.",
    )
    eval_steps: int | None = Field(default=None, ge=1, description="Evaluate every N updates (none: per epoch).")
    save_steps: int | None = Field(default=None, ge=1, description="Checkpoint every N updates (none: per epoch).")
    save_total_limit: int | None = Field(default=2, ge=1, description="Checkpoints kept (oldest deleted).")
    verify_samples: int = Field(
        default=4, ge=0,
        description="Validation samples on which the reloaded adapter's loss must match the trained model's "
                    "(0: skip; it loads the base model a second time).",
    )
    seed: int = Field(default=42, description="Seed of initialisation, data order and dropout.")
    output_dir: str = Field(default="runs/train", description="Run folder.")

    @model_validator(mode="after")
    def _check_method(self) -> Train:
        if self.method == "qlora" and self.quantization is None:
            raise ValueError("method `qlora` needs a `quantization` block (bits: 4, quant_type: nf4)")
        if self.method != "qlora" and self.quantization is not None:
            raise ValueError(
                f"a `quantization` block only applies to method `qlora`, not `{self.method}`: "
                "set method: qlora or remove the block"
            )
        if self.method == "full" and self.lora is not None:
            raise ValueError("method `full` trains every weight: remove the `lora` block")
        if self.method != "full" and self.lora is None:
            self.lora = Lora()
        return self


class Recipe(Prepare):
    """A `finetune train` recipe: a `data prepare` spec plus the ``train`` section."""

    train: Train = Field(default_factory=Train)
