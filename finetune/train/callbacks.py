"""Trainer callbacks: metrics.jsonl, the progress bar, complete-checkpoint markers, padding count,
and where the trackers of ``train.report_to`` write (inside the run folder, offline by default).

Checkpoints: the Hugging Face Trainer writes ``checkpoint-N/`` file by file, so a crash can leave
a folder that looks like a checkpoint but is not one. After every save a ``COMPLETE`` marker is
written last; ``--resume`` only trusts marked checkpoints and moves unmarked ones aside
(``incomplete-checkpoint-N``) so neither resume nor checkpoint rotation ever picks them.

Example::

    trainer.add_callback(RunCallback(run_dir))
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

from transformers import TrainerCallback

from finetune import FinetuneError

MARKER = "COMPLETE"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def complete_checkpoints(folder: Path) -> list[Path]:
    """Marked checkpoints, oldest first."""
    found = [p for p in folder.glob("checkpoint-*") if _CKPT.match(p.name) and (p / MARKER).exists()]
    return sorted(found, key=lambda p: int(_CKPT.match(p.name).group(1)))


def resume_point(folder: Path) -> Path | None:
    """The newest complete checkpoint; incomplete ones are moved aside, not deleted."""
    if not folder.exists():
        return None
    for p in folder.glob("checkpoint-*"):
        if _CKPT.match(p.name) and not (p / MARKER).exists():
            target = p.with_name("incomplete-" + p.name)
            shutil.rmtree(target, ignore_errors=True)
            p.rename(target)
    done = complete_checkpoints(folder)
    return done[-1] if done else None


TRACKERS = {"wandb": "wandb", "mlflow": "mlflow"}  # report_to name -> package that must be installed


def prepare_reporting(report_to: list[str], run: Path) -> None:
    """Before the trainer starts its trackers: each must be installed, and writes into ``run``
    unless the user's environment points it elsewhere (W&B offline, MLflow's file store)."""
    import importlib.util
    import os

    for name, package in TRACKERS.items():
        if name in report_to and importlib.util.find_spec(package) is None:
            raise FinetuneError(f"train.report_to {name}: the {package} package is not installed; pip install "
                                f"{package}, or remove {name} from train.report_to")
    if "wandb" in report_to:
        os.environ.setdefault("WANDB_MODE", "offline")  # no account and no network needed; `wandb sync` later
        os.environ.setdefault("WANDB_DIR", str(run.resolve()))
    if "mlflow" in report_to:
        os.environ.setdefault("MLFLOW_TRACKING_URI", (run / "mlruns").resolve().as_uri())


def route_tensorboard(trainer, run: Path) -> None:
    """TensorBoard events go to ``run/tensorboard`` (the Trainer's default is a dated folder under
    the checkpoints), unless TENSORBOARD_LOGGING_DIR says otherwise."""
    import os

    from transformers.integrations import TensorBoardCallback

    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback) and not os.getenv("TENSORBOARD_LOGGING_DIR"):
            cb.logging_dir = str(run / "tensorboard")


class RunCallback(TrainerCallback):
    """Writes metrics.jsonl, shows loss / tokens/s / ETA, and marks complete checkpoints."""

    def __init__(self, run_dir: Path, show_progress: bool = True):
        self.run_dir = run_dir
        self.show_progress = show_progress
        self.bar = None
        self._t0 = self._tokens0 = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.show_progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step",
                            dynamic_ncols=True)
        self._t0, self._tokens0 = time.perf_counter(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        elapsed = time.perf_counter() - self._t0
        record = {"step": state.global_step, "epoch": state.epoch, **logs}
        if elapsed > 0 and "loss" in logs and state.num_input_tokens_seen:  # (a reward trainer counts none)
            record["tokens_per_second"] = (state.num_input_tokens_seen - self._tokens0) / elapsed
        with (self.run_dir / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.bar is not None:
            post = {}
            if "loss" in logs:
                post["loss"] = f"{logs['loss']:.4f}"
            if "eval_loss" in logs:
                post["eval"] = f"{logs['eval_loss']:.4f}"
            if "tokens_per_second" in record:
                post["tok/s"] = f"{record['tokens_per_second']:.0f}"
            if post:
                self.bar.set_postfix(post)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                (ckpt / MARKER).write_text(json.dumps({"step": state.global_step}) + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CountingCollator:
    """Wraps the trainer's collator and counts real and padding tokens of every training batch."""

    def __init__(self, inner):
        self.inner = inner
        self.tokens = 0
        self.padding = 0

    def __call__(self, examples):
        batch = self.inner(examples)
        total = batch["input_ids"].numel()
        if "attention_mask" in batch:
            real = int(batch["attention_mask"].sum())
        else:  # padding-free rows: real tokens end where the last sequence ends
            real = int(batch["cu_seq_lens_q"][-1]) if "cu_seq_lens_q" in batch else total
        self.tokens += real
        self.padding += total - real
        return batch

    @property
    def padding_share(self) -> float:
        return self.padding / (self.tokens + self.padding) if self.tokens + self.padding else 0.0
