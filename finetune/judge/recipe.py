"""The judge recipe: ``model`` (the base), ``judge`` (what kind, which data) and ``train`` (how).

``train`` is the same section ``finetune train`` reads (method, learning rate, batch, steps,
precision, output folder...), so a judge trains with the same launchers, DeepSpeed and FSDP
configs. The judge's own section says what is learned from which ``finetune judge data`` folders.

Example::

    recipe = load_recipe("recipes/judge/minilm-reward.yaml", schema=JudgeRecipe)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from finetune.config import Model, Train, _Strict


class Judge(_Strict):
    kind: Literal["reward_model", "generative"] = Field(
        default="reward_model",
        description="reward_model: one scalar score per answer (Bradley-Terry); generative: a causal LM "
                    "that answers with a JSON verdict over candidates.")
    datasets: list[str] = Field(min_length=1, description="Folders written by `finetune judge data`.")
    max_length: int = Field(default=512, ge=32, description="Tokens per scored input (prompt + answer).")
    center_rewards_coefficient: float | None = Field(
        default=0.01, ge=0.0, description="reward_model: pull scores towards 0 so they stay comparable.")


class JudgeRecipe(_Strict):
    model: Model
    judge: Judge
    train: Train = Field(default_factory=Train)

    @model_validator(mode="after")
    def _check(self):
        if self.train.datasets is not None:
            raise ValueError("train.datasets is for `finetune train`; a judge reads judge.datasets")
        if self.judge.kind == "reward_model" and self.train.method in ("qlora", "dora"):
            raise ValueError("a reward_model judge trains with method full or lora")
        return self
