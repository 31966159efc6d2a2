"""Weighted mixtures of prepared sets."""

from __future__ import annotations

import pytest

from finetune import FinetuneError
from finetune.data.prepare import load_prepared
from finetune.train.config import PreparedSet
from finetune.train.data import _load_sets


def test_weights_repeat_and_subsample(prepared):
    folder = prepared["spm-hermes"]
    n = len(load_prepared(folder)["train"])
    data = _load_sets([PreparedSet(path=str(folder), weight=2.0), PreparedSet(path=str(folder), weight=0.5)], 512, 0)
    assert len(data.train) == 2 * n + round(0.5 * n)
    assert data.stats["train_samples"] == len(data.train)
    again = _load_sets([PreparedSet(path=str(folder), weight=0.5)], 512, 0)
    assert again.train["record_id"] == _load_sets([PreparedSet(path=str(folder), weight=0.5)], 512, 0).train["record_id"]


def test_sets_from_different_tokenizers_are_refused(prepared):
    sets = [PreparedSet(path=str(prepared["spm-hermes"])), PreparedSet(path=str(prepared["spm-llama4"]))]
    with pytest.raises(FinetuneError, match="another tokenizer"):
        _load_sets(sets, 512, 0)
