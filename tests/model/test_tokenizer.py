"""Fitting a tokenizer to a template and to padding: what changes, what is recorded, and why."""

from __future__ import annotations

import pytest

from finetune.contracts.tokenizer import fit_tokenizer, load_tokenizer
from tests.conftest import TOKENIZERS


def _word_tokenizer(specials: dict[str, str]):
    """A small real fast tokenizer (word level) with the given special tokens and no pad candidate."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["hello", "world", "user", "assistant", "system", "\n"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="hello"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core)
    tok.add_special_tokens({"additional_special_tokens": sorted(set(specials.values()))})
    for key, value in specials.items():
        setattr(tok, key, value)
    return tok


def test_pad_equal_to_eos_is_replaced_by_an_unused_special_token():
    tok = load_tokenizer(TOKENIZERS / "ggml-vocab-llama-spm.gguf")
    tok.pad_token = tok.eos_token
    record = fit_tokenizer(tok, None)
    assert (tok.pad_token, tok.eos_token) == ("<unk>", "</s>") and tok.pad_token_id != tok.eos_token_id
    assert record["pad"] == {"token": "<unk>", "id": 0, "was": "</s>", "why": "'</s>' is also EOS", "added": False}
    assert record["added_tokens"] == [] and record["chat_template"] == "model"


def test_a_template_gets_its_missing_tokens_and_its_end_of_turn_as_eos():
    tok = load_tokenizer(TOKENIZERS / "ggml-vocab-llama-spm.gguf")
    n = len(tok)
    record = fit_tokenizer(tok, "hermes")
    assert record["added_tokens"] == ["<|im_start|>", "<|im_end|>"]
    assert [tok.convert_tokens_to_ids(t) for t in record["added_tokens"]] == [n, n + 1]
    assert record["eos"] == {"was": "</s>", "now": "<|im_end|>"} and tok.eos_token == "<|im_end|>"
    # Each added token is one token in text, so the template's turns tokenize as designed.
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids.count(n) == 1 and ids.count(n + 1) == 1


def test_a_bos_that_is_a_turn_token_is_dropped_and_a_pad_added_when_none_exists():
    # SmolLM2's layout: BOS <|im_start|>, EOS and pad <|im_end|>.
    tok = _word_tokenizer({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>"})
    n = len(tok)
    record = fit_tokenizer(tok, "hermes")
    assert record["bos"] == {"was": "<|im_start|>", "now": None} and tok.bos_token is None
    assert record["pad"]["token"] == "<pad>" and record["pad"]["added"] and record["added_tokens"] == ["<pad>"]
    assert tok.pad_token_id == n
    text = tok.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"  # one <|im_start|>, not two


def test_an_unknown_template_name_is_an_error():
    from finetune import FinetuneError

    with pytest.raises(FinetuneError, match="choose one of llama3, llama4, hermes"):
        fit_tokenizer(_word_tokenizer({"eos_token": "<e>"}), "chatml")
