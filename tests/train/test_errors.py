"""What users hit most fails before any weights load, with the fix in the message."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers.utils import is_liger_kernel_available

from finetune import FinetuneError
from finetune.train.run import build
from tests.train.conftest import make_recipe


def _expect(recipe, match):
    with pytest.raises(FinetuneError, match=match):
        build(recipe, show_progress=False)


def test_lora_target_that_matches_nothing(models, prepared, tmp_path):
    recipe = make_recipe(models["spm-hermes"], prepared["spm-hermes"], tmp_path / "r",
                         lora={"r": 4, "target_modules": ["q_proj", "qkv_proj"]})
    _expect(recipe, r"\['qkv_proj'\] match no linear layer .* named \[.*'q_proj'")


def test_bf16_without_a_bf16_gpu(models, prepared, tmp_path):
    _expect(make_recipe(models["spm-hermes"], prepared["spm-hermes"], tmp_path / "r", precision="bf16"),
            "set train.precision: fp32")


def test_pad_token_equal_to_eos(models, prepared, tmp_path):
    from transformers import AutoTokenizer

    data = tmp_path / "data"
    shutil.copytree(prepared["spm-hermes"], data)
    tok = AutoTokenizer.from_pretrained(data / "tokenizer")
    tok.pad_token = tok.eos_token
    tok.save_pretrained(data / "tokenizer")
    _expect(make_recipe(models["spm-hermes"], data, tmp_path / "r"), "pad token .* same as EOS")


def test_chat_template_missing(models, prepared, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared["spm-hermes"], data)
    (data / "tokenizer" / "chat_template.jinja").unlink()
    _expect(make_recipe(models["spm-hermes"], data, tmp_path / "r"), "no chat template")


def test_tokenizer_of_another_model(models, prepared, tmp_path):
    _expect(make_recipe(models["deepseek-hermes"], prepared["spm-hermes"], tmp_path / "r"),
            "prepare the data with this model's tokenizer|embeds")


def test_resume_without_checkpoint(models, prepared, tmp_path):
    with pytest.raises(FinetuneError, match="no complete checkpoint"):
        build(make_recipe(models["spm-hermes"], prepared["spm-hermes"], tmp_path / "r"), resume=True)


def test_data_prepared_longer_than_training_allows(models, prepared, tmp_path):
    recipe = make_recipe(models["spm-hermes"], prepared["spm-hermes"], tmp_path / "r")
    recipe.data.max_seq_length = 128
    _expect(recipe, "prepared with max_seq_length 512")


@pytest.mark.skipif(torch.cuda.is_available() and is_liger_kernel_available(),
                    reason="this machine has what train.liger_kernel needs")
def test_liger_kernel_without_a_gpu_or_the_package(models, prepared, tmp_path, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("the model loaded before train.liger_kernel was checked")

    monkeypatch.setattr("finetune.train.run.load_model", no_load)
    _expect(make_recipe(models["spm-hermes"], prepared["spm-hermes"], tmp_path / "r", liger_kernel=True),
            r"train\.liger_kernel: true needs .*(CUDA GPU|pip install liger-kernel).*set train\.liger_kernel: false")
    assert not (tmp_path / "r").exists()


def test_liger_kernel_reaches_the_trainer_and_nothing_else(models, prepared, tmp_path):
    """The flag goes to SFTConfig.use_liger_kernel (transformers applies the kernels when training
    starts); TRL itself keeps Liger's fused cross-entropy off."""
    from finetune.train.run import _sft_config, trainer_args

    for flag in (False, True):
        recipe = make_recipe(models["spm-hermes"], prepared["spm-hermes"], tmp_path / "r", liger_kernel=flag)
        assert _sft_config(recipe, tmp_path / "c", "fp32", False, False).use_liger_kernel is flag
        assert "use_liger_kernel" not in trainer_args(recipe.train, tmp_path / "c", "fp32", False)  # reward judge
