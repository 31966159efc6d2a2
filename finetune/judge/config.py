"""The judge recipe: ``model`` (the base), ``judge`` (what kind, which data) and ``train`` (how).

``train`` is the same section ``finetune train`` reads (method, learning rate, batch, steps,
precision, output folder...), so a judge trains with the same launchers, DeepSpeed and FSDP
configs. The judge's own section says what is learned from which ``finetune judge data`` folders.

Example::

    recipe = load_recipe("recipes/judge/minilm-reward.yaml", [], JudgeRecipe)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from finetune.contracts.schema import Strict
from finetune.data.config import Model
from finetune.train.config import Train

# Train keys that only `finetune train`'s SFT path reads (the generative judge trains through it).
REWARD_MODEL_IGNORES = {"packing", "verify_samples", "save_steps", "save_total_limit", "liger_kernel"}


class Judge(Strict):
    kind: Literal["reward_model", "generative"] = Field(
        default="reward_model",
        description="reward_model: one scalar score per answer (Bradley-Terry); generative: a causal LM "
                    "that answers with a JSON verdict over candidates.")
    datasets: list[str] = Field(min_length=1, description="Folders written by `finetune judge data`.")
    max_length: int = Field(default=512, ge=32, description="Tokens per scored input (prompt + answer).")
    center_rewards_coefficient: float | None = Field(
        default=0.01, ge=0.0, description="reward_model: pull scores towards 0 so they stay comparable.")


class JudgeRecipe(Strict):
    model: Model
    judge: Judge
    train: Train = Field(default_factory=Train)

    @model_validator(mode="after")
    def _check(self):
        if self.train.datasets is not None:
            raise ValueError("train.datasets is for `finetune train`; a judge reads judge.datasets")
        if self.judge.kind == "reward_model":
            if self.train.method in ("qlora", "dora"):
                raise ValueError("a reward_model judge trains with method full or lora")
            unused = sorted(REWARD_MODEL_IGNORES & self.train.model_fields_set)
            if unused:
                raise ValueError(f"train.{', train.'.join(unused)}: not used by a reward_model judge (it trains on "
                                 "pairs, keeps only its final model and is checked by `judge eval`); remove them")
        return self


class JudgeDataOptions(Strict):
    """What `finetune judge data` reads: its flags, checked like a recipe (every problem at once)."""

    out: Path = Field(description="Output folder.")
    problems: list[Path] = Field(default_factory=list, description="HumanEval-style problem files.")
    traces: list[Path] = Field(default_factory=list, description="Agent trace files, any layout.")
    preferences: list[Path] = Field(default_factory=list, description="Preference data in a TRL layout.")
    mutants: int = Field(default=6, ge=0, description="One-edit mutants tried per problem.")
    validation_fraction: float = Field(default=0.2, ge=0.0, lt=1.0, description="Share held out, whole groups.")
    seed: int = Field(default=42, description="Mutant choice and split seed.")
    workers: int = Field(default=2, ge=1, description="Sandboxes run at once.")
    timeout: float = Field(default=10.0, gt=0.0, description="Wall and CPU seconds per candidate.")
    unsafe: bool = Field(default=False, description="Run candidates with rlimits only (no bubblewrap).")

    @model_validator(mode="after")
    def _some_input(self):
        if not (self.problems or self.traces or self.preferences):
            raise ValueError("no input: pass --problems FILE, --traces FILE and/or --preferences FILE")
        return self
