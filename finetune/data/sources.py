"""Reading raw records from JSONL, JSON, Parquet files and saved `datasets` folders.

Every record comes out with where it came from (file and 1-based line for JSONL, 1-based record
number otherwise), so that a reject can always be traced back to the input. A line that is not
valid JSON is not an exception: it comes out as a ``RawRecord`` with ``error`` set and goes to the
rejects file like any other unusable record.

Example::

    for raw in read_records("data/sample/openai.jsonl"):
        print(raw.line, raw.record)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune import FinetuneError


@dataclass
class RawRecord:
    source: str
    line: int  # 1-based line (JSONL) or record number (JSON array, Parquet, datasets)
    record: Any  # the parsed record, or the raw text when ``error`` is set
    error: str | None = None


def _jsonl(path: Path) -> Iterator[RawRecord]:
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RawRecord(str(path), n, raw.decode("utf-8", "replace"), f"not UTF-8 ({exc.reason})")
                continue
            if not text.strip():
                continue  # blank lines are layout, not records
            try:
                yield RawRecord(str(path), n, json.loads(text))
            except json.JSONDecodeError as exc:
                yield RawRecord(str(path), n, text.rstrip("\n"), f"invalid JSON: {exc.msg} (column {exc.colno})")


def _json(path: Path) -> Iterator[RawRecord]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FinetuneError(f"{path}: not valid JSON ({exc}); for one record per line name it .jsonl") from None
    if isinstance(data, dict):
        # {"data": [...]} and similar single-key wrappers are common exports.
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(data) == 1 and lists else [data]
    if not isinstance(data, list):
        raise FinetuneError(f"{path}: expected a JSON array of records or one record object")
    for n, rec in enumerate(data, start=1):
        yield RawRecord(str(path), n, rec)


def _parquet(path: Path) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for rec in batch.to_pylist():
            n += 1
            yield RawRecord(str(path), n, rec)


def _saved_dataset(path: Path) -> Iterator[RawRecord]:
    from datasets import Dataset, DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    parts = ds.items() if isinstance(ds, DatasetDict) else [("", ds)]
    for split, part in parts:
        assert isinstance(part, Dataset)
        label = f"{path}[{split}]" if split else str(path)
        for n, rec in enumerate(part, start=1):
            yield RawRecord(label, n, rec)


def check_folder(path: Path) -> None:
    """A folder of records must be saved by `datasets`; any other folder is code, said explicitly."""
    if not (path / "dataset_dict.json").exists() and not (path / "dataset_info.json").exists():
        raise FinetuneError(f"{path} is a folder but not a dataset saved by `datasets` (save_to_disk): for a "
                            f"repository of code give --source {path}:codebase (recipe: format: codebase)")


def read_records(path: str | Path) -> Iterator[RawRecord]:
    """Yield every record of one input, in order, with its location."""
    path = Path(path)
    if path.is_dir():
        check_folder(path)
        yield from _saved_dataset(path)
        return
    if not path.exists():
        raise FinetuneError(f"source {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from _jsonl(path)
    elif suffix == ".json":
        yield from _json(path)
    elif suffix == ".parquet":
        yield from _parquet(path)
    else:
        raise FinetuneError(f"{path}: unknown file type `{suffix}`; use .jsonl, .json, .parquet or a datasets folder")
