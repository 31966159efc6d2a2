"""Recipe schema: typed, strict, every field documented.

A recipe is a YAML file with three sections, read top to bottom: ``model`` (what to start from),
``data`` (what to train on) and ``train`` (how). Unknown keys are errors that name the closest
valid key, every problem is reported at once with its YAML path, and cross-field rules live next
to the fields they join (``Train._check_method``). Dotted overrides from the command line
(``data.max_seq_length=4096``) are applied to the YAML tree *before* validation, so they are
checked by exactly the same rules.

Example::

    recipe = load_recipe("recipes/tiny/traces.yaml", ["data.max_seq_length=512"])
    recipe.data.max_seq_length  # 512
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from finetune import FinetuneError

SourceFormat = Literal["auto", "openai", "sharegpt", "hermes", "glaive", "xlam", "swe_agent", "codebase"]
TemplateName = Literal["llama3", "llama4", "hermes"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Model(_Strict):
    path: str = Field(description="Model folder (or hub id on a machine that can reach the hub).")
    chat_template: TemplateName | None = Field(
        default=None,
        description="Render with one of the toolkit's named templates instead of the model's own.",
    )


class Fim(_Strict):
    rate: float = Field(default=0.5, ge=0.0, le=1.0, description="Share of code samples turned into fill-in-the-middle.")
    spm_rate: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="Share of FIM samples in suffix-prefix-middle order (the rest prefix-suffix-middle).",
    )
    split: Literal["line", "character"] = Field(
        default="line", description="Cut the middle at line boundaries or at any character.",
    )
    loss: Literal["all", "middle"] = Field(
        default="all", description="Train every token of a FIM sample, or only the middle and its end token.",
    )


class Codebase(_Strict):
    include: list[str] = Field(default_factory=list, description="gitignore-style patterns to keep (none: all).")
    exclude: list[str] = Field(default_factory=list, description="gitignore-style patterns to skip, on top of .gitignore.")
    max_file_bytes: int = Field(default=1_000_000, ge=1, description="Larger files are skipped (too_large).")
    max_line_length: int = Field(default=1000, ge=1, description="A file with a longer line is skipped (minified).")
    min_alnum_fraction: float = Field(
        default=0.25, ge=0.0, le=1.0, description="Files with a smaller share of letters and digits are skipped.",
    )
    licenses: list[str] | None = Field(
        default=None,
        description="SPDX ids allowed (e.g. [MIT, Apache-2.0]); the repository's LICENSE file must match one "
                    "(none: no check).",
    )
    redact_secrets: bool = Field(default=True, description="Replace secrets with typed placeholders.")
    redact_pii: bool = Field(default=False, description="Also replace e-mail addresses and public IP addresses.")
    near_duplicate_threshold: float | None = Field(
        default=0.85, gt=0.0, le=1.0,
        description="MinHash Jaccard similarity above which a file is a near duplicate (null: exact dedup only).",
    )
    decontaminate: list[str] = Field(
        default_factory=list, description="Evaluation sets (JSONL/JSON/text files); files sharing a long n-gram are dropped.",
    )
    decontaminate_ngram: int = Field(default=20, ge=5, description="Words in the n-grams that decontamination matches.")
    shape: Literal["file", "repo"] = Field(
        default="file",
        description="One sample per file, or files packed into long contexts in dependency order (Python imports).",
    )
    fim: Fim | None = Field(default=None, description="Fill-in-the-middle with the tokenizer's own FIM tokens.")


class Source(_Strict):
    path: str = Field(description="JSONL, JSON, Parquet file, a folder saved by `datasets`, or a code folder.")
    format: SourceFormat = Field(
        default="auto",
        description="Trace layout (`auto` detects per file; `hermes` is `sharegpt`), or `codebase` for a folder of code.",
    )
    weight: float = Field(
        default=1.0, gt=0.0,
        description="Mixture weight of the source's training samples: 0.5 keeps half (seeded), 2.0 repeats them twice.",
    )
    max_tokens: int | None = Field(
        default=None, ge=1, description="Cap on the source's training tokens after weighting (seeded whole samples).",
    )
    codebase: Codebase | None = Field(default=None, description="Code ingestion settings (format `codebase` only).")

    @model_validator(mode="after")
    def _check_codebase(self) -> Source:
        if self.format == "codebase" and self.codebase is None:
            self.codebase = Codebase()
        elif self.format != "codebase" and self.codebase is not None:
            raise ValueError(f"a `codebase` block only applies to format `codebase`, not `{self.format}`")
        return self


class Data(_Strict):
    sources: list[Source] = Field(min_length=1, description="Where the traces and the code come from.")
    max_seq_length: int = Field(
        default=2048, ge=16, description="Longer traces are split at turn boundaries, files at lines; never cut."
    )
    validation_fraction: float = Field(
        default=0.05, ge=0.0, lt=1.0, description="Share of records (not pieces) held out."
    )
    seed: int = Field(default=42, description="Seed of the train/validation split.")
    max_reject_fraction: float = Field(
        default=0.25, ge=0.0, le=1.0,
        description="Fail the run when more than this share of records is rejected.",
    )
    dedup: bool = Field(default=True, description="Drop exact duplicate traces and code files (counted).")
    output_dir: str = Field(default="runs/data", description="Where the prepared dataset goes.")


class Lora(_Strict):
    r: int = Field(default=16, ge=1, description="Adapter rank.")
    alpha: int = Field(default=32, ge=1, description="Scaling numerator (alpha / r, or / sqrt(r)).")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on adapter input.")
    target_modules: Literal["all-linear"] | list[str] = Field(
        default="all-linear", description="`all-linear` or explicit module names."
    )
    use_rslora: bool = Field(default=False, description="Scale by alpha / sqrt(r) (rsLoRA).")


class Quantization(_Strict):
    bits: Literal[4] = Field(default=4, description="Storage bits of the frozen base (QLoRA).")
    quant_type: Literal["nf4", "fp4"] = Field(default="nf4", description="4-bit data type.")
    double_quant: bool = Field(default=True, description="Quantize the quantization constants.")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        default="bfloat16", description="dtype the 4-bit weights are dequantized to for matmuls."
    )


class PreparedSet(_Strict):
    path: str = Field(description="Folder written by `finetune data prepare`.")
    weight: float = Field(
        default=1.0, gt=0.0,
        description="Sampling multiplier: 0.5 keeps half the set's samples, 2.0 repeats it twice (seeded).",
    )


class Train(_Strict):
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


class Recipe(_Strict):
    model: Model
    data: Data
    train: Train = Field(default_factory=Train)


def _closest_key(model: type[BaseModel], loc: tuple[Any, ...], bad: str) -> str | None:
    """The valid key of the model at ``loc`` closest to the unknown key ``bad``."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        nested = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)]
        nested += [
            b for a in getattr(ann, "__args__", ()) for b in getattr(a, "__args__", ())
            if isinstance(b, type)
        ]
        models = [a for a in nested if issubclass(a, BaseModel)]
        if not models:
            return None
        model = models[0]
    match = difflib.get_close_matches(bad, list(model.model_fields), n=1, cutoff=0.5)
    return match[0] if match else None


def format_errors(err: ValidationError, schema: type[BaseModel] = Recipe) -> list[str]:
    """One line per problem: the YAML path, what is wrong and, for unknown keys, the fix."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = ".".join(str(p) for p in loc) or "<top>"
        if e["type"] == "extra_forbidden":
            hint = _closest_key(schema, loc[:-1], str(loc[-1]))
            fix = f"; did you mean `{hint}`?" if hint else ""
            lines.append(f"{path}: unknown key{fix}")
        elif e["type"] == "missing":
            lines.append(f"{path}: required key is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: {msg}")
    return lines


def apply_override(tree: dict, override: str) -> None:
    """Set ``a.b.0.c=value`` in a YAML tree; the value is parsed as YAML (``4096`` is an int)."""
    if "=" not in override:
        raise FinetuneError(f"override `{override}` is not KEY=VALUE (e.g. data.max_seq_length=4096)")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    value = yaml.safe_load(raw) if raw.strip() else None
    node: Any = tree
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise FinetuneError(f"override `{key}`: `{part}` is not an index of a {len(node)}-item list")
            part = int(part)
        elif not isinstance(node, dict):
            raise FinetuneError(f"override `{key}`: `{'.'.join(parts[:i])}` is not a section")
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = (), schema: type[BaseModel] = Recipe):
    """Read, override and validate a recipe (``schema``: Recipe, or the judge's recipe); every
    problem is reported in one FinetuneError."""
    path = Path(path)
    if not path.is_file():
        raise FinetuneError(f"recipe {path} does not exist")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise FinetuneError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(tree, dict):
        raise FinetuneError(f"{path}: a recipe is a mapping with `model`, `data` and `train` sections")
    for override in overrides:
        apply_override(tree, override)
    return recipe_from_tree(tree, str(path), schema)


def recipe_from_tree(tree: dict, where: str, schema: type[BaseModel] = Recipe):
    """Validate a recipe tree (from YAML, or built from command-line flags)."""
    try:
        return schema.model_validate(tree)
    except ValidationError as err:
        problems = format_errors(err, schema)
        listing = "\n".join(f"  {p}" for p in problems)
        raise FinetuneError(f"{where}: {len(problems)} problem(s):\n{listing}") from None
