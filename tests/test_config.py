"""Recipes: strict schema, every problem at once with its YAML path, overrides, cross-field rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune import FinetuneError
from finetune.contracts.schema import load_recipe
from finetune.train.config import Recipe
from tests.conftest import REPO

RECIPES = sorted(p for p in (REPO / "recipes").rglob("*.yaml")
                 if p.parent.name not in ("judge", "pool", "eval"))  # judge, pool, eval: their own tests


def test_there_are_recipes():
    assert {p.parent.name for p in RECIPES} >= {"tiny", "code-llama-4"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path, [], Recipe)
    assert recipe.data.sources and recipe.model.path


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


GOOD = """
model: {path: m}
data:
  sources: [{path: a.jsonl}]
"""


def test_all_problems_at_once_with_paths_and_suggestions(tmp_path):
    bad = _write(tmp_path, """
model: {path: m, chat_templete: llama3}
data:
  sources: [{path: a.jsonl, fromat: openai}]
  max_seq_lenght: 10
  validation_fraction: 2
train: {method: qlora, lerning_rate: 0.1}
""")
    with pytest.raises(FinetuneError) as err:
        load_recipe(bad, [], Recipe)
    msg = str(err.value)
    # Cross-field rules (qlora without quantization) run once the fields themselves are valid.
    assert "5 problem(s)" in msg
    for line in ("model.chat_templete: unknown key; did you mean `chat_template`?",
                 "data.sources.0.fromat: unknown key; did you mean `format`?",
                 "data.max_seq_lenght: unknown key; did you mean `max_seq_length`?",
                 "data.validation_fraction: Input should be less than 1",
                 "train.lerning_rate: unknown key; did you mean `learning_rate`?"):
        assert line in msg


def test_cross_field_rules(tmp_path):
    with pytest.raises(FinetuneError, match="`qlora` needs a `quantization` block"):
        load_recipe(_write(tmp_path, GOOD + "train: {method: qlora}\n"), [], Recipe)
    with pytest.raises(FinetuneError, match="only applies to method `qlora`"):
        load_recipe(_write(tmp_path, GOOD + "train: {method: lora, quantization: {bits: 4}}\n"), [], Recipe)
    with pytest.raises(FinetuneError, match="remove the `lora` block"):
        load_recipe(_write(tmp_path, GOOD + "train: {method: full, lora: {r: 8}}\n"), [], Recipe)
    r = load_recipe(_write(tmp_path, GOOD + "train: {method: qlora, quantization: {}}\n"), [], Recipe)
    assert r.train.quantization.quant_type == "nf4" and r.train.lora.r == 16


def test_liger_kernel_is_a_bool_off_by_default(tmp_path):
    path = _write(tmp_path, GOOD)
    assert load_recipe(path, [], Recipe).train.liger_kernel is False
    assert load_recipe(path, ["train.liger_kernel=true"], Recipe).train.liger_kernel is True
    with pytest.raises(FinetuneError, match="train.liger_kernel: Input should be a valid boolean"):
        load_recipe(path, ["train.liger_kernel=fused"], Recipe)
    with pytest.raises(FinetuneError, match="did you mean `liger_kernel`"):
        load_recipe(path, ["train.liger_kernels=true"], Recipe)


def test_overrides_go_through_the_same_validation(tmp_path):
    path = _write(tmp_path, GOOD)
    r = load_recipe(path, ["data.max_seq_length=4096", "data.sources.0.format=xlam", "train.method=dora"], Recipe)
    assert (r.data.max_seq_length, r.data.sources[0].format, r.train.method) == (4096, "xlam", "dora")
    with pytest.raises(FinetuneError, match="data.max_seq_length: Input should be greater than or equal to 16"):
        load_recipe(path, ["data.max_seq_length=8"], Recipe)
    with pytest.raises(FinetuneError, match="did you mean `max_seq_length`"):
        load_recipe(path, ["data.max_seq_len=4096"], Recipe)
    with pytest.raises(FinetuneError, match="not KEY=VALUE"):
        load_recipe(path, ["data.max_seq_length"], Recipe)
    with pytest.raises(FinetuneError, match="not an index"):
        load_recipe(path, ["data.sources.3.path=x"], Recipe)


def test_yaml_errors_name_the_line(tmp_path):
    with pytest.raises(FinetuneError, match=r"r.yaml:3: not valid YAML"):
        load_recipe(_write(tmp_path, "model:\n  path: m\n\tdata: x\n"), [], Recipe)
    with pytest.raises(FinetuneError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml", [], Recipe)


def test_readme_documents_every_recipe_key():
    from pydantic import BaseModel

    from finetune.train.config import Recipe

    readme = (REPO / "README.md").read_text()
    for section, field in Recipe.model_fields.items():
        block = field.annotation if isinstance(field.annotation, type) else None
        for name, sub in block.model_fields.items():
            assert f"`{section}.{name}`" in readme, f"README recipe reference lacks {section}.{name}"
            nested = [a for a in getattr(sub.annotation, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
            for model in nested:
                for key in model.model_fields:
                    assert f"`{key}`" in readme, f"README recipe reference lacks {section}.{name}.{key}"
