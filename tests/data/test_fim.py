"""Fill-in-the-middle: the layout token by token with real FIM vocabularies, masks, the error without one."""

from __future__ import annotations

import random

import pytest

from finetune import FinetuneError
from finetune.data.code.fim import IGNORE, FimTokens, cut
from finetune.data.config import Prepare, Source
from finetune.data.prepare import load_prepared, prepare
from tests.conftest import TOKENIZERS

PREFIX, MIDDLE, SUFFIX = "def add(a, b):\n    ", "return a + b", "\n\nprint(add(1, 2))\n"


@pytest.fixture(scope="module")
def deepseek():
    from finetune.contracts.tokenizer import load_tokenizer

    return load_tokenizer(TOKENIZERS / "ggml-vocab-deepseek-coder.gguf")


@pytest.fixture(scope="module")
def codellama(tmp_path_factory):
    """The Llama 2 SentencePiece vocabulary with Code Llama's 16 extra tokens at Code Llama's ids
    (▁<PRE> 32007, ▁<SUF> 32008, ▁<MID> 32009, ▁<EOT> 32010), saved as a tokenizer folder."""
    from transformers import AddedToken

    from finetune.contracts.tokenizer import load_tokenizer

    tok = load_tokenizer(TOKENIZERS / "ggml-vocab-llama-spm.gguf")
    extra = [f"<extra_{i}>" for i in range(7)] + ["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"] + \
        [f"<extra_{i}>" for i in range(7, 12)]
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in extra], special_tokens=True)
    folder = tmp_path_factory.mktemp("codellama-tokenizer")
    tok.save_pretrained(folder)
    return folder, tok


def test_deepseek_coder_layout_is_its_documented_prompt_format(deepseek):
    fim = FimTokens.of(deepseek)
    assert (fim.name, fim.pre, fim.suf, fim.mid, fim.eot) == ("deepseek-coder", 32016, 32015, 32017, 32014)
    ids, labels = fim.sample(PREFIX, MIDDLE, SUFFIX, spm=False, loss="all", bos=deepseek.bos_token_id)
    enc = lambda s: deepseek.encode(s, add_special_tokens=False)  # noqa: E731
    assert ids == [32013, 32016, *enc(PREFIX), 32015, *enc(SUFFIX), 32017, *enc(MIDDLE), 32014]
    # The same ids as the model card's infilling prompt, tokenized by the tokenizer itself.
    prompt = f"<｜fim▁begin｜>{PREFIX}<｜fim▁hole｜>{SUFFIX}<｜fim▁end｜>{MIDDLE}<｜end▁of▁sentence｜>"
    assert ids == deepseek.encode(prompt)
    assert labels == [IGNORE, *ids[1:]]


def test_spm_order_and_middle_only_loss(deepseek):
    fim = FimTokens.of(deepseek)
    ids, labels = fim.sample(PREFIX, MIDDLE, SUFFIX, spm=True, loss="middle", bos=32013)
    enc = lambda s: deepseek.encode(s, add_special_tokens=False)  # noqa: E731
    given = [32013, 32016, 32015, *enc(SUFFIX), 32017, *enc(PREFIX)]
    assert ids == given + enc(MIDDLE) + [32014]
    assert labels == [IGNORE] * len(given) + enc(MIDDLE) + [32014]


def test_code_llama_layout_has_no_dummy_space_inside(codellama):
    _, tok = codellama
    fim = FimTokens.of(tok)
    assert (fim.name, fim.pre, fim.suf, fim.mid, fim.eot) == ("codellama", 32007, 32008, 32009, 32010)
    ids, _ = fim.sample("x = ", "1", "\n", spm=False, loss="all", bos=1)
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[:3] == ["<s>", "▁<PRE>", "x"]  # not "▁x": each part starts where the text starts
    assert pieces[-3:] == ["▁<MID>", "1", "▁<EOT>"]
    assert tok.decode(ids[2:pieces.index("▁<SUF>")]) == "x = "


def test_starcoder_tokens_are_found_by_name():
    from transformers import AddedToken

    from finetune.contracts.tokenizer import load_tokenizer

    tok = load_tokenizer(TOKENIZERS / "ggml-vocab-llama-spm.gguf")
    names = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>"]  # StarCoder's ids 0-3 order
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in names], special_tokens=True)
    fim = FimTokens.of(tok)
    vocab = tok.get_vocab()
    assert (fim.name, fim.pre, fim.suf, fim.mid, fim.eot) == (
        "starcoder", vocab["<fim_prefix>"], vocab["<fim_suffix>"], vocab["<fim_middle>"], vocab["<|endoftext|>"])


def test_fim_without_fim_tokens_is_a_clear_error(models, tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a.py").write_text("x = 1\n")
    with pytest.raises(FinetuneError, match=r"fill-in-the-middle needs FIM tokens.*remove `fim`"):
        prepare(Prepare.of(model=str(models["spm-hermes"]), out=str(tmp_path / "out"),
                               sources=[Source(path=str(root), format="codebase", codebase={"fim": {"rate": 0.5}})]))
    assert not (tmp_path / "out" / "dataset").exists()


def test_line_cuts_fall_on_line_starts():
    text = "a = 1\nb = 2\nc = 3\n"
    for seed in range(20):
        p, m, s = cut(text, random.Random(seed), "line")
        assert p + m + s == text and (not p or p.endswith("\n")) and (not s or m.endswith("\n") or not m)


def test_prepare_fim_rate_and_middle_loss(codellama, tmp_path):
    folder, tok = codellama
    root = tmp_path / "repo"
    root.mkdir()
    for i in range(12):
        (root / f"m{i}.py").write_text("".join(f"def f{i}_{j}(x):\n    return x * {j}\n" for j in range(10)))
    src = Source(path=str(root), format="codebase",
                 codebase={"fim": {"rate": 1.0, "spm_rate": 0.0, "loss": "middle"}})
    stats = prepare(Prepare.of(model=str(folder), sources=[src], out=str(tmp_path / "out"),
                                   validation_fraction=0.0, max_seq_length=512))
    assert stats["sources"][str(root)]["codebase"]["fim"] == {"psm": 12, "spm": 0, "too_long": 0}
    rows = load_prepared(tmp_path / "out")["train"]
    for ids, labels in zip(rows["input_ids"], rows["labels"], strict=True):
        mid = ids.index(32009)
        assert ids[1] == 32007 and ids[-1] == 32010
        assert all(x == IGNORE for x in labels[: mid + 1]) and labels[mid + 1:] == ids[mid + 1:]
