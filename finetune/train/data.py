"""Training data: prepared sets (a weighted mixture) or the recipe's data section prepared now.

Under ``accelerate launch`` only the main process prepares; the others wait at a barrier and then
read the same folder, so every rank trains on identical data.

Example::

    data = training_data(recipe)   # TrainingData(train, validation, tokenizer_dir, stats)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from finetune import FinetuneError
from finetune.data.prepare import load_prepared, prepare, weighted_rows
from finetune.train.config import PreparedSet, Recipe


@dataclass
class TrainingData:
    train: object  # datasets.Dataset
    validation: object | None
    tokenizer_dir: Path
    stats: dict
    tokenizer_record: dict | None = None  # what data prepare did to the tokenizer (stats.json)


def _load_sets(sets: list[PreparedSet], max_len: int, seed: int) -> TrainingData:
    from datasets import concatenate_datasets

    trains, vals, stats, tokenizer_dir, record = [], [], {}, None, None
    for s in sets:
        folder = Path(s.path)
        ds = load_prepared(folder)
        st = json.loads((folder / "stats.json").read_text())
        if st["max_seq_length"] > max_len:
            raise FinetuneError(f"{folder} was prepared with max_seq_length {st['max_seq_length']}, more than "
                                f"data.max_seq_length {max_len}: re-prepare it or raise data.max_seq_length")
        tok_dir = folder / "tokenizer"
        if tokenizer_dir is None:
            tokenizer_dir, record = tok_dir, st.get("tokenizer")
        elif (tok_dir / "tokenizer.json").read_bytes() != (tokenizer_dir / "tokenizer.json").read_bytes():
            raise FinetuneError(f"{folder} was tokenized with another tokenizer than {tokenizer_dir.parent}; "
                                "prepare every set with the same model")
        trains.append(ds["train"].select(weighted_rows(range(len(ds["train"])), s.weight, seed)))
        if "validation" in ds:
            vals.append(ds["validation"])
        stats[str(folder)] = {"weight": s.weight, "samples": len(trains[-1]), "source_samples": len(ds["train"]),
                              "tokens_trained": st["tokens_trained"]}
    train = concatenate_datasets(trains)
    return TrainingData(train, concatenate_datasets(vals) if vals else None, tokenizer_dir,
                        {"sets": stats, "train_samples": len(train),
                         "validation_samples": sum(len(v) for v in vals)}, record)


def training_data(recipe: Recipe, is_main: bool = True, barrier=lambda: None) -> TrainingData:
    """Load the recipe's prepared sets, or prepare its data section first (main process only)."""
    sets = recipe.train.datasets
    if sets is None:
        if is_main:
            prepare(recipe)
        barrier()
        sets = [PreparedSet(path=recipe.data.output_dir)]
    data = _load_sets(sets, recipe.data.max_seq_length, recipe.train.seed)
    if len(data.train) == 0:
        raise FinetuneError("the training split is empty")
    import pyarrow.compute as pc

    data.stats["train_tokens"] = pc.sum(pc.list_value_length(data.train.data.column("input_ids"))).as_py()
    return data
