"""Training reports where users look: TensorBoard by default, W&B and MLflow when asked and installed."""

from __future__ import annotations

import pytest

from finetune import FinetuneError
from finetune.train.run import train
from tests.train.conftest import logged, make_recipe


def test_tensorboard_gets_the_same_losses_as_metrics_jsonl(models, prepared, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(make_recipe(models["spm-hermes"], prepared["spm-hermes"], tmp_path / "run", max_steps=3),
                show_progress=False)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    got = [(e.step, e.value) for e in events.Scalars("train/loss")]
    want = [(i + 1, loss) for i, loss in enumerate(logged(run, "loss"))]
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)  # float32 in the event file
    assert "eval/loss" in events.Tags()["scalars"]


def test_an_uninstalled_tracker_is_refused_before_any_work(models, prepared, tmp_path, monkeypatch):
    from finetune.train import callbacks

    monkeypatch.setitem(callbacks.TRACKERS, "wandb", "wandb_is_not_installed_here")
    recipe = make_recipe(models["spm-hermes"], prepared["spm-hermes"], tmp_path / "run", report_to=["wandb"])
    with pytest.raises(FinetuneError, match="report_to wandb: the wandb_is_not_installed_here package is not installed"):
        train(recipe, show_progress=False)
    assert not (tmp_path / "run").exists()
