"""Code Llama 4's tokenizer in GGUF: its own split pattern (llama.cpp's pre-tokenizer `llama4`),
tokenized by llama.cpp exactly as by the Hugging Face tokenizer the model was trained with."""

from __future__ import annotations

import json

import pytest

# Texts where the Llama 4 split (case-aware words, "/" kept with punctuation) and the Llama 3 one
# (any letters, then punctuation runs) disagree, plus code and a tool call as served.
TEXTS = [
    "def parseHTTPResponse(rawBytes): return json.loads(rawBytes)['statusCode']",
    "See src/finetune/export/to_gguf.py: CamelCaseIdentifiers, snake_case_ones and 12345678 too.",
    "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"docs/README.md\"}}\n</tool_call>",
    "I'LL say it's DONE; we'VE tested ÉCOLE and Straße.\n\n\tindent",
]


@pytest.fixture(scope="module")
def llama4_tokenizer_model(models, tmp_path_factory):
    """A tiny Llama 4 whose tokenizer splits text with Llama 4's pattern (the Llama 3 vocabulary
    and merges otherwise: the pattern is what llama.cpp must reproduce)."""
    from transformers import AutoTokenizer

    from finetune.export.to_gguf import LLAMA4_SPLIT
    from finetune.model.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("llama4-tok")
    AutoTokenizer.from_pretrained(str(models["bpe-llama3"])).save_pretrained(str(root / "tok"))
    spec = json.loads((root / "tok" / "tokenizer.json").read_text())
    [split] = [p for p in spec["pre_tokenizer"]["pretokenizers"] if p["type"] == "Split"]
    split["pattern"]["Regex"] = LLAMA4_SPLIT
    (root / "tok" / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    return build_tiny_model("llama4", root / "tok", root / "model", hidden=256)


@pytest.mark.slow
def test_llama4_split_exports_as_llama4_and_tokenizes_like_training(llama4_tokenizer_model, models, tmp_path):
    import gguf
    from transformers import AutoTokenizer

    from finetune.export.run import export
    from finetune.export.verify import GGUFRunner

    tok = AutoTokenizer.from_pretrained(str(llama4_tokenizer_model))
    llama3 = AutoTokenizer.from_pretrained(str(models["bpe-llama3"]))
    # The test can fail: on these texts the two patterns give different tokens.
    assert any(tok(t)["input_ids"] != llama3(t)["input_ids"] for t in TEXTS)

    report = export(llama4_tokenizer_model, ["gguf-f16"], tmp_path / "out", say=lambda _: None)
    result = report["formats"]["gguf-f16"]
    assert result["tokenizer_same"] and result["chat_template_same"] and result["logit_corr"] > 0.999
    path = next((tmp_path / "out" / "gguf").glob("*.gguf"))
    assert gguf.GGUFReader(str(path)).fields["tokenizer.ggml.pre"].contents() == "llama4"
    runner = GGUFRunner(path)
    try:
        prompts = TEXTS + [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False) for t in TEXTS]
        for text in prompts:
            assert runner.tokenize(text, add_bos=False) == tok(text, add_special_tokens=False)["input_ids"], text
    finally:
        runner.close()


def test_an_unknown_split_pattern_is_refused(models, tmp_path):
    from transformers import AutoTokenizer

    from finetune import FinetuneError
    from finetune.export.to_gguf import _pre_tokenizer

    AutoTokenizer.from_pretrained(str(models["bpe-llama3"])).save_pretrained(str(tmp_path))
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    [split] = [p for p in spec["pre_tokenizer"]["pretokenizers"] if p["type"] == "Split"]
    assert _pre_tokenizer(spec, tmp_path) == "llama-bpe"
    split["pattern"]["Regex"] = r"\p{L}+|\s+"
    with pytest.raises(FinetuneError, match="not one llama.cpp is known to reproduce"):
        _pre_tokenizer(spec, tmp_path)
