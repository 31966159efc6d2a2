"""Reading agent traces: one pipeline for every stage that reads them (``data prepare``, ``judge
data``, ``eval``), so a trace that one accepts, the others accept the same way.

A record goes through: the file's layout (given, or detected on the first record that has one; a
file is one export, so its later records are read in that layout), conversion to the canonical
trace (``formats.py``) and validation with normalisation (``validate.py``). What cannot be used
comes out with its ``RecordError`` (reason code and detail) and its place in the file, for the
caller's rejects.

Example::

    for item in read_traces("data/sample/openai.jsonl"):
        if item.error:
            rejects.add(item.raw, item.error.reason, item.error.detail)
        else:
            use(item.trace)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from finetune import RecordError
from finetune.data.sources import RawRecord, read_records
from finetune.data.traces.formats import detect_layout, to_canonical
from finetune.data.traces.validate import validate_trace


@dataclass
class TraceRecord:
    raw: RawRecord  # where it came from (source, line) and the record as read
    layout: str | None  # the file's layout, once known
    trace: dict | None = None  # the validated canonical trace
    error: RecordError | None = None  # why it cannot be used

    @property
    def record_id(self) -> str | None:
        rid = self.raw.record.get("id") if isinstance(self.raw.record, dict) else None
        return str(rid) if rid is not None else None


def read_traces(path: str | Path, layout: str | None = None) -> Iterator[TraceRecord]:
    """Every record of a trace file (JSONL, JSON, Parquet, a `datasets` folder), as a validated
    canonical trace or the error that rejects it. ``layout``: a canonical layout name, or None to
    detect it."""
    for raw in read_records(path):
        if raw.error:
            yield TraceRecord(raw, layout, error=RecordError("invalid_json", raw.error))
            continue
        try:
            layout = layout or detect_layout(raw.record)
            yield TraceRecord(raw, layout, trace=validate_trace(to_canonical(raw.record, layout)))
        except RecordError as exc:
            yield TraceRecord(raw, layout, error=exc)
