"""Resume: a run killed with SIGKILL after a checkpoint, resumed with --resume, ends with the
adapter of an uninterrupted run (float32, tolerance 1e-6 absolute); a half-written checkpoint
left by the crash is moved aside, never resumed from."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from finetune import FinetuneError
from finetune.train.run import train
from tests.conftest import REPO
from tests.train.conftest import make_recipe


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(models, prepared, tmp_path):
    kw = dict(max_steps=6, save_steps=2, save_total_limit=5, verify_samples=0)
    whole = train(make_recipe(models["spm-hermes"], prepared["spm-hermes"], tmp_path / "whole", **kw),
                  show_progress=False)

    recipe = make_recipe(models["spm-hermes"], prepared["spm-hermes"], tmp_path / "cut", **kw)
    (tmp_path / "cut.yaml").write_text(yaml.safe_dump(recipe.model_dump()))
    ckpts = tmp_path / "cut" / "checkpoints"
    proc = subprocess.Popen([sys.executable, "-m", "finetune", "train", str(tmp_path / "cut.yaml"), "--no-progress"],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (ckpts / "checkpoint-2" / "COMPLETE").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / "adapter").exists()
    # What a crash in the middle of writing the next checkpoint leaves behind.
    (ckpts / "checkpoint-99").mkdir()
    (ckpts / "checkpoint-99" / "adapter_model.safetensors").write_bytes(b"\0" * 10)

    with pytest.raises(FinetuneError, match="already holds checkpoints"):
        train(recipe, show_progress=False)
    run = train(recipe, resume=True, show_progress=False)
    info = json.loads((run / "run.json").read_text())
    assert info["resumed_from"].endswith("checkpoint-2") or info["resumed_from"].endswith("checkpoint-4")
    assert (ckpts / "incomplete-checkpoint-99").exists() and not (ckpts / "checkpoint-99").exists()
    a = load_file(whole / "adapter" / "adapter_model.safetensors")
    b = load_file(run / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-6, worst
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)
    assert info["global_step"] == 6 and torch.is_tensor(a[next(iter(a))])
