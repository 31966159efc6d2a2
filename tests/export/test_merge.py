"""The streamed merge equals PEFT's own merge_and_unload, tensor for tensor."""

from __future__ import annotations

import pytest
import torch

from finetune import FinetuneError
from finetune.export.source import open_source
from tests.export.conftest import make_adapter


def _peft_merged(model, adapter) -> dict:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().state_dict()


@pytest.mark.parametrize(("name", "lora", "merged_tensors"), [
    ("llama-spm", {"use_dora": True}, 14),                     # 2 layers x 7 linears, DoRA magnitudes
    ("llama-spm", {"use_rslora": True}, 14),
    ("llama4-bpe", {"moe": True}, 36),                          # 4 layers x (4 attn + 3 shared + 2 experts)
])
def test_streamed_merge_equals_peft(wide, tmp_path, name, lora, merged_tensors):
    adapter = make_adapter(wide[name], tmp_path / "adapter", **lora)
    src = open_source(adapter)
    expected = _peft_merged(wide[name], adapter)
    assert len(src._merges) == merged_tensors
    for key in src.names():
        torch.testing.assert_close(src.tensor(key), expected[key], rtol=0, atol=1e-6, msg=key)
    base = open_source(wide[name])
    changed = [k for k in src._merges if not torch.equal(base.tensor(k), src.tensor(k))]
    assert len(changed) == merged_tensors


def test_adapter_for_another_model_is_refused(wide, tmp_path):
    adapter = make_adapter(wide["llama-spm"], tmp_path / "adapter")
    with pytest.raises(FinetuneError, match="do not fit|matches no weight|fit no weight"):
        open_source(wide["llama4-bpe"], adapter)


def test_pickle_weights_need_trust(wide, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    folder.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / f).write_bytes((wide["llama-spm"] / f).read_bytes())
    state = load_file(str(wide["llama-spm"] / "model.safetensors"))
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(FinetuneError, match="--trust-pickle"):
        open_source(folder)
    src = open_source(folder, trust_pickle=True)
    torch.testing.assert_close(src.tensor("model.norm.weight"), state["model.norm.weight"])


def test_nan_in_an_adapter_fails_the_merge(wide, tmp_path):
    from safetensors.torch import load_file, save_file

    adapter = make_adapter(wide["llama-spm"], tmp_path / "adapter")
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    key = next(k for k in tensors if "layers.1.mlp.up_proj.lora_B" in k)
    tensors[key][0, 0] = float("nan")
    save_file(tensors, str(adapter / "adapter_model.safetensors"))
    src = open_source(adapter)
    with pytest.raises(FinetuneError, match="model.layers.1.mlp.up_proj.weight: .* NaN/inf"):
        src.tensor("model.layers.1.mlp.up_proj.weight")
