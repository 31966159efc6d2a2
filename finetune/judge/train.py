"""``finetune judge train``: a reward model (Bradley-Terry, TRL's RewardTrainer) or a generative
judge (SFT on JSON verdicts, both candidate orders) from ``finetune judge data`` folders.

Reward model: a sequence-classification head with one output on the base (MiniLM, Llama...),
trained on pairs encoded by :func:`finetune.judge.score.encode`; LoRA trains the adapters and the
head, and the adapter is merged before saving so the pool loads one plain model. The run folder
holds ``model/`` (model + tokenizer), ``judge.json`` (kind, base, input layout), ``metrics.jsonl``
and ``eval.json`` (held-out pairwise accuracy, from :mod:`finetune.judge.evaluate`).

Example::

    run = train_judge(load_recipe("recipes/judge/minilm-reward.yaml", [], JudgeRecipe))
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune import FinetuneError
from finetune.contracts.tokenizer import fit_tokenizer
from finetune.judge.config import JudgeRecipe
from finetune.judge.data import load_pairs
from finetune.judge.evaluate import evaluate
from finetune.judge.generative import train_generative
from finetune.judge.score import encode
from finetune.train.callbacks import RunCallback, prepare_reporting, route_tensorboard
from finetune.train.model import DTYPES, grow_vocab
from finetune.train.run import resolve_precision, trainer_args


def _tokenized(ds, tokenizer, max_length: int):
    def fn(row):
        return {"chosen_ids": encode(tokenizer, row["prompt"], row["chosen"], max_length),
                "rejected_ids": encode(tokenizer, row["prompt"], row["rejected"], max_length)}
    return ds.map(fn, desc="encode")


def _reward_config(recipe: JudgeRecipe, run: Path, precision: str, has_eval: bool):
    from trl import RewardConfig

    return RewardConfig(save_strategy="no", max_length=None,  # inputs come encoded (score.encode)
                        center_rewards_coefficient=recipe.judge.center_rewards_coefficient,
                        **trainer_args(recipe.train, run / "checkpoints", precision, has_eval))


def _train_reward(recipe: JudgeRecipe, run: Path, show_progress: bool) -> None:
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import RewardTrainer

    t, j = recipe.train, recipe.judge
    precision = resolve_precision(t.precision)
    pairs = load_pairs(j.datasets)
    tokenizer = AutoTokenizer.from_pretrained(recipe.model.path)
    # The score is read at the last token that is not padding: a pad equal to EOS would move it.
    fitted = fit_tokenizer(tokenizer, None)

    def base_model():
        model = AutoModelForSequenceClassification.from_pretrained(recipe.model.path, num_labels=1,
                                                                   dtype=DTYPES[precision])
        if fitted["added_tokens"]:  # a new pad; its row is never read for a score
            grow_vocab(model, len(tokenizer), [tokenizer.convert_tokens_to_ids(t) for t in fitted["added_tokens"]])
        model.config.pad_token_id = tokenizer.pad_token_id
        return model

    model = base_model()
    peft_config = None
    if t.method == "lora":
        peft_config = LoraConfig(r=t.lora.r, lora_alpha=t.lora.alpha, lora_dropout=t.lora.dropout,
                                 target_modules=t.lora.target_modules, use_rslora=t.lora.use_rslora,
                                 task_type="SEQ_CLS")
    train_ds = _tokenized(pairs["train"], tokenizer, j.max_length)
    eval_ds = _tokenized(pairs["validation"], tokenizer, j.max_length) if pairs["validation"] else None
    prepare_reporting(t.report_to, run)
    trainer = RewardTrainer(model=model, args=_reward_config(recipe, run, precision, eval_ds is not None),
                            train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
                            peft_config=peft_config)
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    trainer.add_callback(RunCallback(run, show_progress=show_progress))
    route_tensorboard(trainer, run)
    trainer.train()
    # save_model gathers sharded weights (ZeRO-3), so every process calls it; one process writes the rest.
    trainer.save_model(str(run / ("adapter" if t.method == "lora" else "model")))
    if trainer.accelerator.is_main_process:
        if t.method == "lora":  # one plain model for the pool: the adapter and its head merged in
            from peft import PeftModel

            PeftModel.from_pretrained(base_model(), str(run / "adapter")).merge_and_unload().save_pretrained(
                str(run / "model"))
        (run / "model" / "training_args.bin").unlink(missing_ok=True)  # a pickle; judge.json holds the recipe
        tokenizer.save_pretrained(str(run / "model"))
    trainer.accelerator.wait_for_everyone()


def train_judge(recipe: JudgeRecipe, show_progress: bool = True) -> Path:
    """Train the judge the recipe describes; returns the run folder (with eval.json)."""
    from accelerate import PartialState

    state = PartialState()  # one process, or each of `accelerate launch`'s
    run = Path(recipe.train.output_dir)
    if (run / "judge.json").exists():
        raise FinetuneError(f"{run} already holds a judge; set train.output_dir to a new folder")
    if state.is_main_process:
        run.mkdir(parents=True, exist_ok=True)
        (run / "metrics.jsonl").unlink(missing_ok=True)
    state.wait_for_everyone()
    if recipe.judge.kind == "reward_model":
        _train_reward(recipe, run, show_progress)
    else:
        train_generative(recipe, run, show_progress)
    if state.is_main_process:
        (run / "judge.json").write_text(json.dumps({
            "kind": recipe.judge.kind, "base_model": recipe.model.path, "max_length": recipe.judge.max_length,
            "datasets": recipe.judge.datasets, "world_size": state.num_processes,
            "recipe": recipe.model_dump()}, indent=2) + "\n")
        metrics = evaluate(run, recipe.judge.datasets, run)
        if "calibration" in metrics:  # the pool turns scores into probabilities with it
            info = json.loads((run / "judge.json").read_text())
            info["temperature"] = metrics["calibration"]["temperature"]
            (run / "judge.json").write_text(json.dumps(info, indent=2) + "\n")
    state.wait_for_everyone()
    return run
