"""``finetune data prepare``: traces and code in, a tokenized and loss-masked dataset out, nothing lost.

Every record read (a trace, or a file of a ``codebase`` source, see ``data/code/``) is counted
exactly once: it is either in the output (``records_ok``, possibly split into several pieces) or
in ``rejects.jsonl`` with its source, line, record id, reason code and detail
(``records_rejected``, duplicates and skipped files included). ``stats.json`` says so with numbers
that add up; a share of rejected traces above ``max_reject_fraction`` fails the run after writing
the stats and the rejects, so the user can see why. Samples are streamed to an Arrow spool on
disk; per source ``weight`` and ``max_tokens`` then shape the training mixture.

Example::

    spec = recipe_from_tree({"model": {"path": "runs/tiny"}, "data": {"sources": [{"path": "data/sample/openai.jsonl"}],
                             "output_dir": "runs/data"}}, "example", Prepare)
    stats = prepare(spec)
    stats["records_ok"] + stats["records_rejected"] == stats["records_in"]
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import sys
import typing
from array import array
from collections import Counter
from pathlib import Path

from finetune import FinetuneError, RecordError
from finetune.contracts.tokenizer import fit_tokenizer, load_tokenizer
from finetune.data.config import Prepare, SourceFormat
from finetune.data.sources import RawRecord, check_folder
from finetune.data.traces.read import read_traces
from finetune.data.traces.render import IGNORE, ROLES, Sample, canonical_key
from finetune.data.traces.workers import TraceRendering


def parse_source(spec: str) -> tuple[str, str]:
    """``path[:format]`` -> (path, format); a Windows-free split on the last colon. A word after
    the colon that is no layout is an error naming the layouts (unless the whole is a path)."""
    formats = typing.get_args(SourceFormat)
    path, _, fmt = spec.rpartition(":")
    if path and fmt in formats:
        return path, fmt
    if path and re.fullmatch(r"[A-Za-z_][\w-]*", fmt) and not Path(spec).exists():
        raise FinetuneError(f"--source {spec}: unknown layout {fmt!r}; layouts: {', '.join(formats)}")
    return spec, "auto"


def load_model_tokenizer(model: str, chat_template: str | None):
    """The model's tokenizer fitted for training (``contracts/tokenizer.py``: the named template and
    any tokens it lacks, a pad distinct from EOS); returns (tokenizer, what fitting did)."""
    if not Path(model).exists():
        raise FinetuneError(f"model {model} does not exist (a folder with the tokenizer is needed)")
    tok = load_tokenizer(model)
    return tok, fit_tokenizer(tok, chat_template)


_LINE_ENDS = {ord(c): f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"}  # json.dumps escapes the rest


class Rejects:
    """The rejects file: one JSON line per unusable record (source, line, id, reason, detail, record),
    with a count per reason."""

    def __init__(self, path: Path):
        self.fh = path.open("w", encoding="utf-8")
        self.reasons: Counter[str] = Counter()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()

    def add(self, raw, reason: str, detail: str, record_id: str | None = None) -> None:
        self.reasons[reason] += 1
        line = json.dumps({"source": raw.source, "line": raw.line, "id": record_id, "reason": reason,
                           "detail": detail, "record": raw.record}, ensure_ascii=False, default=str)
        # Characters that str.splitlines() treats as line ends stay escaped: one reject, one line.
        self.fh.write(line.translate(_LINE_ENDS) + "\n")


# Columns of every prepared split (one row per sample).
def _schema():
    import pyarrow as pa

    return pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
                      ("source", pa.string()), ("record_id", pa.string()), ("piece", pa.int32())])


STAT_ROLES = (*ROLES, "code")


class _Spool:
    """Samples go to an Arrow stream on disk as they are made (a large repository never sits in
    memory); memory keeps three numbers per sample for the split, the mixture and the stats."""

    BATCH = 1024

    def __init__(self, path: Path):
        import pyarrow as pa

        self.path = path
        self.sink = pa.OSFile(str(path), "wb")
        self.writer = pa.ipc.new_stream(self.sink, _schema())
        self.pending: list[tuple] = []
        self.rows = 0
        self.tokens, self.trained = array("q"), array("q")
        self.roles = {r: [0, 0] for r in STAT_ROLES}

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:  # a failed run leaves no half-written spool behind
            self.writer.close()
            self.sink.close()
            self.path.unlink()

    def add(self, source: str, record_id: str, pieces: list[Sample]) -> tuple[int, int]:
        """Append a record's samples; (first row, number of rows)."""
        import numpy as np

        first = self.rows
        for i, p in enumerate(pieces):
            ids, labels = np.asarray(p.input_ids, dtype=np.int32), np.asarray(p.labels, dtype=np.int32)
            self.pending.append((ids, labels, source, record_id, i))
            self.tokens.append(len(ids))
            self.trained.append(int((labels != IGNORE).sum()))
            for role, (total, trained) in p.role_tokens.items():
                self.roles[role][0] += total
                self.roles[role][1] += trained
            self.rows += 1
        if len(self.pending) >= self.BATCH:
            self._flush()
        return first, len(pieces)

    def _flush(self) -> None:
        import numpy as np
        import pyarrow as pa

        if not self.pending:
            return
        cols = list(zip(*self.pending, strict=True))
        lengths = np.fromiter((len(x) for x in cols[0]), dtype=np.int32, count=len(cols[0]))
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int32)]).astype(np.int32))
        lists = [pa.ListArray.from_arrays(offsets, pa.array(np.concatenate(c))) for c in cols[:2]]
        self.writer.write_batch(pa.record_batch(
            [*lists, pa.array(cols[2], pa.string()), pa.array(cols[3], pa.string()), pa.array(cols[4], pa.int32())],
            schema=_schema()))
        self.pending = []

    def close(self) -> str:
        """Finish the file; its sha256 (the content part of the splits' fingerprints)."""
        self._flush()
        self.writer.close()
        self.sink.close()
        digest = hashlib.sha256()
        with self.path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


def weighted_rows(rows: list[int], weight: float, seed: int) -> list[int]:
    """``weight`` x ``rows``: whole repeats, then a seeded sample of the remainder (in row order)."""
    whole, frac = int(weight), weight - int(weight)
    extra = round(frac * len(rows))
    picked = list(rows) * whole + [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), extra))]
    if rows and not picked:
        raise FinetuneError(f"weight {weight} keeps no sample of a {len(rows)}-sample set")
    return picked


def _capped(rows: list[int], tokens: array, cap: int | None, seed: int) -> list[int]:
    """Whole samples, in a seeded order, while their tokens fit under ``cap`` (then back in row order)."""
    if cap is None:
        return rows
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    kept, total = [], 0
    for i in order:
        if total + tokens[rows[i]] <= cap:
            kept.append(i)
            total += tokens[rows[i]]
    return [rows[i] for i in sorted(kept)]


class _Reading:
    """Reads every source into the spool: the trace pipeline (``traces/``) and the code pipeline
    (``code/``), each record counted once (kept, or rejected with its reason)."""

    def __init__(self, data, tok, rejects: Rejects, spool: _Spool, bar):
        self.data, self.tok, self.rejects, self.spool, self.bar = data, tok, rejects, spool, bar
        self.records: list[tuple[int, int, int]] = []  # (source index, first row, rows)
        self.per_source: dict[str, Counter] = {}
        self.code_stats: dict[str, dict] = {}
        self.formats: dict[str, str | None] = {s.path: (None if s.format == "auto" else s.format)
                                               for s in data.sources}
        self.seen: dict[str, str] = {}  # canonical trace -> where it was first seen
        self.rendering = None  # started at the first trace source: code alone needs no chat template
        self.dedups: dict = {}  # near-duplicate threshold -> Deduplicator: duplicates across repositories too
        self.decontaminators: dict = {}  # (evaluation sets, n-gram) -> Decontaminator

    def source(self, si: int, src) -> None:
        counts = self.per_source.setdefault(src.path, Counter())
        (self.codebase if src.format == "codebase" else self.traces)(si, src, counts)

    def close(self) -> None:
        if self.rendering is not None:
            self.rendering.close()

    def traces(self, si: int, src, counts: Counter) -> None:
        path, data = src.path, self.data
        if self.rendering is None:
            self.rendering = TraceRendering(self.tok, data.max_seq_length, data.num_proc)
        for item, rendered in self.rendering.over(read_traces(path, self.formats[path])):
            raw, trace = item.raw, item.trace
            counts["in"] += 1
            self.bar.update()
            self.formats[path] = item.layout
            rid = item.record_id or f"{Path(raw.source).name}:{raw.line}"
            try:
                if item.error:
                    raise item.error
                key = canonical_key(trace)
                if data.dedup and key in self.seen:
                    raise RecordError("duplicate", f"exact duplicate of {self.seen[key]}")
                pieces = rendered()
            except RecordError as exc:
                self.rejects.add(raw, exc.reason, exc.detail, rid)
                counts["rejected"] += 1
                continue
            self.seen[key] = f"{raw.source}:{raw.line}"
            counts["ok"] += 1
            self.records.append((si, *self.spool.add(path, rid, pieces)))

    def codebase(self, si: int, src, counts: Counter) -> None:
        from finetune.data.code.dedup import Decontaminator, Deduplicator
        from finetune.data.code.samples import codebase_records, new_stats
        from finetune.data.code.walk import Skip

        path, cb, data = src.path, src.codebase, self.data
        cstats = self.code_stats[path] = new_stats()
        if cb.near_duplicate_threshold not in self.dedups:
            self.dedups[cb.near_duplicate_threshold] = Deduplicator(cb.near_duplicate_threshold, exact=data.dedup)
        sets = (tuple(cb.decontaminate), cb.decontaminate_ngram)
        if sets not in self.decontaminators:  # evaluation sets are read once, however many repositories
            self.decontaminators[sets] = Decontaminator(*sets)
        for item in codebase_records(path, cb, self.tok, data.max_seq_length, data.seed, cstats,
                                     self.dedups[cb.near_duplicate_threshold], self.decontaminators[sets]):
            self.bar.update()
            if isinstance(item, Skip):
                self.rejects.add(RawRecord(path, None, None), item.reason, item.detail, item.path)
            else:
                self.records.append((si, *self.spool.add(path, item.record_id, item.samples)))
        counts.update({"in": cstats["files_in"], "ok": cstats["files_ok"], "rejected": sum(cstats["skipped"].values())})


def _split(records: list[tuple[int, int, int]], data, spool: _Spool):
    """Records (whole: a split trace's pieces stay together) to validation and train; the train
    rows shaped per source by weight and token cap. Returns (validation records, validation rows,
    train rows, mixture stats)."""
    rng = random.Random(data.seed)
    order = list(range(len(records)))
    rng.shuffle(order)
    n_val = round(len(records) * data.validation_fraction)
    if data.validation_fraction > 0 and len(records) >= 2:
        n_val = max(1, n_val)
    val_idx = set(order[:n_val])
    val_rows: list[int] = []
    train_by_source: dict[int, list[int]] = {}
    for i, (si, first, n) in enumerate(records):
        (val_rows if i in val_idx else train_by_source.setdefault(si, [])).extend(range(first, first + n))
    train_rows: list[int] = []
    mixture = {}
    for si, src in enumerate(data.sources):
        rows = weighted_rows(train_by_source.get(si, []), src.weight, data.seed + si)
        picked = _capped(rows, spool.tokens, src.max_tokens, data.seed + si)
        train_rows += picked
        mixture[src.path] = {"weight": src.weight, "max_tokens": src.max_tokens, "samples": len(picked),
                             "capped_samples": len(rows) - len(picked),
                             "tokens": sum(spool.tokens[r] for r in picked),
                             "tokens_trained": sum(spool.trained[r] for r in picked)}
    train_tokens = sum(m["tokens"] for m in mixture.values())
    for m in mixture.values():
        m["token_share"] = round(m["tokens"] / train_tokens, 4) if train_tokens else 0.0
    return val_idx, val_rows, train_rows, mixture


def prepare(spec: Prepare, progress: bool = False) -> dict:
    """Run the whole pipeline on ``spec`` (the model and data sections; a training recipe is one);
    return the stats (also written to ``data.output_dir/stats.json``)."""
    from datasets import Dataset, DatasetDict
    from tqdm import tqdm

    from finetune.data.code.fim import FimTokens

    data, model = spec.data, spec.model
    missing = [s.path for s in data.sources if not Path(s.path).exists()]
    if missing:  # every missing input at once, before any slow loading
        raise FinetuneError(f"source {', '.join(missing)} does not exist")
    for s in data.sources:
        if Path(s.path).is_dir() and s.format != "codebase":
            check_folder(Path(s.path))
    tok, fitted = load_model_tokenizer(model.path, model.chat_template)
    if any(s.codebase and s.codebase.fim and s.codebase.fim.rate > 0 for s in data.sources):
        FimTokens.of(tok)  # no FIM tokens: say so before any work
    out = Path(data.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # A failed run must not leave an older dataset behind that looks like its result.
    for stale in ("dataset", "tokenizer"):
        shutil.rmtree(out / stale, ignore_errors=True)
    rejects = Rejects(out / "rejects.jsonl")
    spool = _Spool(out / "spool.arrow")
    with rejects, spool, tqdm(desc="prepare", unit="rec", disable=not progress or not sys.stderr.isatty()) as bar:
        reading = _Reading(data, tok, rejects, spool, bar)
        try:
            for si, src in enumerate(data.sources):
                reading.source(si, src)
        finally:
            reading.close()
    records, per_source, code_stats, formats = reading.records, reading.per_source, reading.code_stats, reading.formats
    fingerprint = spool.close()

    n_in = sum(c["in"] for c in per_source.values())
    n_ok = sum(c["ok"] for c in per_source.values())
    n_rej = sum(rejects.reasons.values())
    assert all(c["ok"] + c["rejected"] == c["in"] for c in per_source.values()), "every input is kept or rejected"
    assert n_ok + n_rej == n_in
    val_idx, val_rows, train_rows, mixture = _split(records, data, spool)

    role_tokens = {r: {"tokens": t, "trained": k} for r, (t, k) in spool.roles.items() if t or r in ROLES}
    tokens_total = sum(v["tokens"] for v in role_tokens.values())
    tokens_trained = sum(v["trained"] for v in role_tokens.values())
    trace_counts = [c for s, c in per_source.items() if formats.get(s) != "codebase"]
    stats = {
        "records_in": n_in, "records_ok": n_ok, "records_rejected": n_rej,
        "reject_reasons": dict(rejects.reasons.most_common()),
        "duplicates": rejects.reasons.get("duplicate", 0),
        "records_split": sum(n > 1 for *_, n in records),
        "pieces": spool.rows,
        "truncated": 0,  # never: long traces are split at turn boundaries, long files at lines
        "samples": {"train": len(train_rows), "validation": len(val_rows)},
        "records_per_split": {"train": len(records) - len(val_idx), "validation": len(val_idx)},
        "tokens_total": tokens_total, "tokens_trained": tokens_trained,
        "trained_share": round(tokens_trained / tokens_total, 4) if tokens_total else 0.0,
        "tokens_per_role": role_tokens,
        "max_seq_length": data.max_seq_length,
        "sources": {k: {"format": formats.get(k), **v, **({"codebase": _plain(code_stats[k])} if k in code_stats else {})}
                    for k, v in per_source.items()},
        "mixture": mixture,
        "model": model.path, "chat_template": model.chat_template or "model",
        "tokenizer": fitted,
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    try:
        if n_in == 0:
            raise FinetuneError(f"no records in {', '.join(s.path for s in data.sources)}")
        t_in, t_rej = sum(c["in"] for c in trace_counts), sum(c["rejected"] for c in trace_counts)
        if t_in and t_rej / t_in > data.max_reject_fraction:  # skipped code files are filtering, not errors
            top = ", ".join(f"{k} x{v}" for k, v in rejects.reasons.most_common(3))
            raise FinetuneError(f"{t_rej} of {t_in} records rejected ({t_rej / t_in:.0%} > max_reject_fraction "
                                f"{data.max_reject_fraction:.0%}); top reasons: {top}; see {out / 'rejects.jsonl'}")
        if tokens_trained == 0:
            raise FinetuneError("no token would be trained: no usable assistant turn or code file (all rejected, "
                                f"or train: false); see {out / 'rejects.jsonl'}")
        ds = Dataset.from_file(str(spool.path))
        # An empty split cannot be loaded back by `datasets`: it is left out (validation_fraction 0).
        # Fingerprints from content, so that the same inputs and seed give byte-identical folders.
        splits = {k: ds.select(v, new_fingerprint=hashlib.sha256(f"{fingerprint}:{k}:{v}".encode()).hexdigest()[:16])
                  for k, v in (("train", train_rows), ("validation", val_rows)) if v}
        DatasetDict(splits).save_to_disk(str(out / "dataset"))
        del ds, splits
    finally:
        spool.path.unlink()
    # The exact tokenizer and chat template that made the masks travel with the data.
    tok.save_pretrained(str(out / "tokenizer"))
    return stats


def _plain(stats: dict) -> dict:
    """Counters as sorted plain dicts, for stats.json."""
    return {k: dict(sorted(v.items())) if isinstance(v, Counter) else v for k, v in stats.items()}


def load_prepared(folder: str | Path):
    """The DatasetDict written by ``prepare`` (``FOLDER/dataset``)."""
    from datasets import load_from_disk

    path = Path(folder) / "dataset"
    if not (path / "dataset_dict.json").exists():
        raise FinetuneError(f"{folder} holds no prepared dataset (run `finetune data prepare` first)")
    return load_from_disk(str(path))
