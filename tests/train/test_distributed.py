"""`accelerate launch` with 2 CPU processes over gloo, DeepSpeed ZeRO-2 and ZeRO-3, using the
shipped accelerate configs with only the CPU switches changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO
from tests.train.conftest import logged, make_recipe


@pytest.mark.slow
@pytest.mark.parametrize("config", ["zero2", "zero3"])
def test_two_process_deepspeed(config, models, prepared, tmp_path):
    cfg = yaml.safe_load((REPO / "accelerate_configs" / f"{config}.yaml").read_text())
    cfg.update(use_cpu=True, mixed_precision="no", num_processes=2)
    (tmp_path / "accelerate.yaml").write_text(yaml.safe_dump(cfg))
    recipe = make_recipe(models["spm-hermes"], prepared["spm-hermes"], tmp_path / "run", max_steps=6)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump()))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "accelerate.yaml")]
    proc = subprocess.run([*launcher, "-m", "finetune", "train", str(tmp_path / "recipe.yaml"), "--no-progress"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    info = json.loads((run / "run.json").read_text())
    assert info["launch"]["world_size"] == 2 and info["launch"]["deepspeed_zero_stage"] == int(config[-1])
    losses = logged(run, "loss")
    assert losses[-1] < losses[0], losses
    v = info["verification"]  # the saved adapter is complete and reloads to the same eval loss
    assert v["tensors"] > 0 and v["abs_diff"] <= 1e-4 * max(1.0, v["trained_loss"])
