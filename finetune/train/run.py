"""``finetune train``: a recipe and prepared data in, a verified adapter (or full model) out.

Reads top to bottom: check everything that can be checked before weights load; get the data;
load the model; hand both to TRL's SFTTrainer (packing by best-fit decreasing, padding-free rows
whose position ids restart per sample, so attention never crosses samples with sdpa, eager or
FlashAttention); train (resuming from the newest *complete* checkpoint with ``--resume``); save;
reload what was saved and check that it computes the loss the trained model computes; write
``metrics.jsonl``, ``loss.png`` and ``run.json``.

One process: ``finetune train RECIPE``. Many, through accelerate (DDP, DeepSpeed ZeRO-2/3, FSDP2)::

    accelerate launch --config_file accelerate_configs/zero3.yaml -m finetune train RECIPE

Example::

    run_dir = train(load_recipe("recipes/tiny/traces.yaml", [], Recipe))
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from finetune import FinetuneError, __version__
from finetune.data.traces.render import Renderer
from finetune.train.callbacks import (
    CountingCollator,
    RunCallback,
    complete_checkpoints,
    prepare_reporting,
    resume_point,
    route_tensorboard,
)
from finetune.train.config import Recipe, Train
from finetune.train.data import training_data
from finetune.train.model import (
    adapter_config,
    attention,
    check_targets,
    grow_vocab,
    is_llama4_moe,
    load_model,
    new_token_ids,
)
from finetune.train.report import mean_loss, plot_losses, verify_saved

# Relative loss difference allowed between the trained model and the reloaded artifact:
# fp32 reload is bit-for-bit in practice (measured 0.0 on the tiny models); 16-bit matmuls
# reorder sums, 1e-2 covers them.
VERIFY_RTOL = {"fp32": 1e-4, "bf16": 1e-2, "fp16": 1e-2}


def resolve_precision(requested: str) -> str:
    """auto -> bf16 on a bf16-capable GPU, else fp32; an impossible request is an error."""
    cuda = torch.cuda.is_available()
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if requested == "auto":
        return "bf16" if bf16_ok else "fp32"
    if requested == "bf16" and not bf16_ok:
        raise FinetuneError("train.precision bf16 needs a GPU with bfloat16 (Ampere or newer) and this machine "
                            "has none: set train.precision: fp32 (or auto)")
    if requested == "fp16" and not cuda:
        raise FinetuneError("train.precision fp16 needs a GPU: set train.precision: fp32 (or auto)")
    return requested


def check_liger(t: Train) -> None:
    """``train.liger_kernel`` needs a CUDA GPU and the liger-kernel package; without them transformers
    would fail only when training starts, after the model has loaded."""
    if not t.liger_kernel:
        return
    from transformers.utils import is_liger_kernel_available

    missing = []
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU, which this machine lacks (Liger's kernels are Triton kernels)")
    if not is_liger_kernel_available():
        missing.append("the liger-kernel package, which is not installed: pip install liger-kernel")
    if missing:
        raise FinetuneError(f"train.liger_kernel: true needs {', and '.join(missing)}; otherwise set "
                            "train.liger_kernel: false")


def _check_launch() -> dict:
    """What accelerate launched (if anything), refusing process counts the machine cannot serve."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if torch.cuda.is_available() and local > torch.cuda.device_count():
        raise FinetuneError(f"the accelerate config asks for {local} processes on this machine, which has "
                            f"{torch.cuda.device_count()} GPU(s): set num_processes to at most that")
    zero = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    return {"world_size": int(os.environ.get("WORLD_SIZE", "1")), "local_world_size": local,
            "deepspeed_zero_stage": int(zero) if zero else None, "fsdp": fsdp,
            "sharded": zero == "3" or fsdp}


def _check_tokenizer(tok, model_path: str) -> list[int]:
    """Refuse a tokenizer training cannot use; return the ids the model has no trained row for."""
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        raise FinetuneError(f"the data's tokenizer has pad token {tok.pad_token!r}, the same as EOS: padding would "
                            "mask every EOS out of the loss and the model would never learn to stop; prepare the "
                            "data again (finetune data prepare picks a distinct pad)")
    Renderer(tok)  # refuses a template without what the masks need
    return new_token_ids(tok, model_path)


def _expose_head_bias(model) -> None:
    """TRL's fused LM head reads ``lm_head.weight`` and ``lm_head.bias``. PEFT's trainable-token
    wrapper answers ``weight`` with the merged, differentiable rows but has no ``bias``; Llama's head
    has none, so the wrapper is told so."""
    from peft.utils.other import TrainableTokensWrapper

    for module in model.modules():
        if isinstance(module, TrainableTokensWrapper) and isinstance(module.original_module, torch.nn.Linear) \
                and module.original_module.bias is None:
            module.bias = None


def _git_revision() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict:
    import importlib.metadata as md

    out = {"finetune": __version__}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed", "bitsandbytes",
                "liger-kernel"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def trainer_args(t: Train, output_dir: Path, precision: str, has_eval: bool) -> dict:
    """The Trainer arguments a recipe's ``train`` section sets, shared by ``finetune train`` and
    ``finetune judge train`` (each adds what only its trainer has)."""
    return dict(
        output_dir=str(output_dir), per_device_train_batch_size=t.per_device_batch_size,
        per_device_eval_batch_size=t.per_device_batch_size, gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate, num_train_epochs=t.num_epochs, max_steps=t.max_steps,
        lr_scheduler_type=t.lr_scheduler, warmup_steps=t.warmup_ratio,  # a ratio when < 1
        optim=t.optimizer, weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, seed=t.seed,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=t.gradient_checkpointing, logging_steps=t.logging_steps,
        eval_strategy=("steps" if t.eval_steps else "epoch") if has_eval else "no", eval_steps=t.eval_steps,
        report_to=list(t.report_to) or "none", disable_tqdm=True,
    )


def _sft_config(recipe: Recipe, checkpoints: Path, precision: str, has_eval: bool, moe: bool):
    from trl import SFTConfig

    t = recipe.train
    args = trainer_args(t, checkpoints, precision, has_eval)
    if t.packing and not attention(recipe.model.path, t).startswith("flash"):
        # Padding-free batches are one long row. Without FlashAttention, one packed row per forward,
        # accumulated, is the same update (the loss is normalised by the tokens of the whole update):
        # eager (and sdpa on a sliding-window model) would build a (batch x rows)^2 mask, and even
        # sdpa_segments, which attends per sample, would hold the logits of the whole batch at once
        # (measured: 2.18x TRL's peak RSS flattened, 1.71x one row per forward, same tokens/s).
        batch = t.per_device_batch_size
        args.update(per_device_train_batch_size=1, per_device_eval_batch_size=1,
                    gradient_accumulation_steps=batch * t.gradient_accumulation_steps)
    return SFTConfig(
        # Adapters leave the router frozen, so the load-balancing loss could only bend the adapted
        # layers to re-balance routing the pretrained router already does: off. Full fine-tuning
        # trains the router and keeps the architecture's coefficient.
        router_aux_loss_coef=0.0 if moe and t.method != "full" else None, data_seed=t.seed,
        max_length=recipe.data.max_seq_length, packing=t.packing, packing_strategy="bfd", padding_free=t.packing,
        # Liger's layer kernels only: TRL refuses its fused linear cross-entropy (it keeps its own fused LM head).
        use_liger_kernel=t.liger_kernel,
        logging_first_step=True, save_strategy="steps" if t.save_steps else "epoch", save_steps=t.save_steps,
        save_total_limit=t.save_total_limit, include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0, **args,
    )


@dataclass
class Session:
    """A run that is set up and ready to train (``build``), then trained and recorded (``finish``)."""

    recipe: Recipe
    run: Path
    trainer: object
    data: object
    tokenizer: object
    precision: str
    launch: dict
    counting: CountingCollator
    start_from: Path | None
    state: object
    vocab: dict  # embedding rows before/after and the ids of tokens the base had no row for


def build(recipe: Recipe, resume: bool = False, show_progress: bool = True) -> Session:
    """Check, load data and model, and set up the SFTTrainer; nothing is trained yet."""
    from accelerate import PartialState
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTTrainer

    state = PartialState()
    t = recipe.train
    run = Path(t.output_dir)
    checkpoints = run / "checkpoints"

    # Everything that can fail without weights fails now.
    precision = resolve_precision(t.precision)
    check_liger(t)
    launch = _check_launch()
    check_targets(recipe.model.path, t)
    prepare_reporting(t.report_to, run)
    start_from = None
    if resume:
        if state.is_main_process:
            resume_point(checkpoints)  # moves incomplete checkpoints aside
        state.wait_for_everyone()
        done = complete_checkpoints(checkpoints)
        if not done:
            raise FinetuneError(f"--resume: no complete checkpoint in {checkpoints}")
        start_from = done[-1]
    elif any(checkpoints.glob("checkpoint-*")):
        raise FinetuneError(f"{run} already holds checkpoints: pass --resume to continue that run, "
                            "or set train.output_dir to a new folder")
    data = training_data(recipe, state.is_main_process, state.wait_for_everyone)
    tok = AutoTokenizer.from_pretrained(data.tokenizer_dir)
    new_ids = _check_tokenizer(tok, recipe.model.path)
    if state.is_main_process:
        run.mkdir(parents=True, exist_ok=True)
        if not resume:
            (run / "metrics.jsonl").unlink(missing_ok=True)

    model = load_model(recipe.model.path, t, precision, sharded=launch["sharded"],
                       device_map={"": state.local_process_index} if torch.cuda.is_available() else None)
    vocab = {"rows_before": model.get_input_embeddings().weight.shape[0], "new_token_ids": new_ids}
    if new_ids:
        grow_vocab(model, len(tok), new_ids)
    vocab["rows_after"] = model.get_input_embeddings().weight.shape[0]
    trainer = SFTTrainer(
        model=model, args=_sft_config(recipe, checkpoints, precision, data.validation is not None,
                                      is_llama4_moe(model.config)),
        train_dataset=data.train, eval_dataset=data.validation, processing_class=tok,
        peft_config=adapter_config(t, model, new_ids),
    )
    if new_ids and t.method != "full":
        _expose_head_bias(trainer.model)
        # PEFT would also save both whole embedding matrices once their size differs from the base's
        # config (1 GB each for a 128k vocabulary at 4096 wide); the trained rows are already in
        # the adapter (trainable_token_indices), and attach_adapter grows the base before loading.
        peft_model = trainer.model
        peft_model.save_pretrained = functools.partial(peft_model.save_pretrained, save_embedding_layers=False)
    counting = CountingCollator(trainer.data_collator)
    trainer.data_collator = counting
    for cb in (PrinterCallback, ProgressCallback):  # replaced by RunCallback's bar and metrics.jsonl
        trainer.remove_callback(cb)
    trainer.add_callback(RunCallback(run, show_progress=show_progress))
    route_tensorboard(trainer, run)
    return Session(recipe, run, trainer, data, tok, precision, launch, counting, start_from, state, vocab)


def finish(s: Session) -> Path:
    """Train, save, verify the saved artifact, and write the run's record."""
    t, trainer, state, run = s.recipe.train, s.trainer, s.state, s.run
    result = trainer.train(resume_from_checkpoint=str(s.start_from) if s.start_from else None)

    out = run / ("model" if t.method == "full" else "adapter")
    trainer.save_model(str(out))
    if state.is_main_process:  # the tokenizer and chat template the masks were made with
        (out / "training_args.bin").unlink(missing_ok=True)  # a pickle; run.json holds the settings
        s.tokenizer.save_pretrained(str(out))
        s.tokenizer.save_pretrained(str(run / "tokenizer"))
    state.wait_for_everyone()
    verification = None
    if t.verify_samples:
        pool = s.data.validation if s.data.validation is not None else s.data.train
        samples = pool.select(range(min(t.verify_samples, len(pool))))
        trained_loss = mean_loss(trainer.model_wrapped if s.launch["deepspeed_zero_stage"] == 3 else trainer.model,
                                 samples)
        if state.is_main_process:
            verification = verify_saved(s.recipe, out, s.precision, samples, trained_loss, VERIFY_RTOL[s.precision])
    state.wait_for_everyone()

    if state.is_main_process:
        plot_losses(run / "metrics.jsonl", run / "loss.png")
        (run / "run.json").write_text(json.dumps({
            "recipe": s.recipe.model_dump(), "resumed_from": str(s.start_from) if s.start_from else None,
            "precision": s.precision, "launch": s.launch, "versions": _versions(), "git_revision": _git_revision(),
            "data": s.data.stats, "tokenizer": s.data.tokenizer_record, "vocab": s.vocab,
            "padding_share": round(s.counting.padding_share, 4),
            "train_tokens_seen": trainer.state.num_input_tokens_seen,
            "global_step": trainer.state.global_step, "train_loss": result.training_loss,
            "train_runtime_s": result.metrics.get("train_runtime"), "verification": verification,
            "output": str(out),
        }, indent=2, default=str) + "\n")
    return run


def train(recipe: Recipe, resume: bool = False, show_progress: bool = True) -> Path:
    """Train per ``recipe``; return the run folder (see the module docstring for its contents)."""
    return finish(build(recipe, resume, show_progress))
