"""A ``codebase`` source: a repository on disk in, code samples out, every file accounted for.

Per file, in the walk's sorted order: walk checks (``walk.py``), exact and near dedup and
decontamination on the raw text (``dedup.py``), then secret redaction (``secrets.py``). Kept files
are spooled to a temporary file on disk, so memory holds one file and the per-file metadata,
never the repository.

Sample shapes:

* ``file``: one file per sample, its path as a header comment in its own language.
* ``repo``: Python files in import-dependency order (a module after the modules it imports;
  cycles broken at the first file met), then the other files in path order, packed into contexts
  of ``max_seq_length`` tokens, as DeepSeek-Coder's repository-level data is.

A file longer than a context is split at line starts (a single longer line at a token boundary);
every later piece repeats the header. Nothing is truncated. Each sample is
``BOS + text + end-of-document`` or, at ``fim.rate``, a fill-in-the-middle sample (``fim.py``).

Example::

    opts = Codebase()
    items = codebase_records("path/to/repo", opts, tokenizer, 2048, 42, new_stats(),
                             Deduplicator(opts.near_duplicate_threshold), Decontaminator([], 20))
    for item in items:
        ...   # CodeRecord(record_id, samples) or Skip(path, reason, detail)
"""

from __future__ import annotations

import bisect
import json
import random
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from finetune import FinetuneError
from finetune.data.code.dedup import Decontaminator, Deduplicator
from finetune.data.code.fim import IGNORE, FimTokens, cut
from finetune.data.code.secrets import Redactor
from finetune.data.code.walk import CodeFile, Skip, WalkStats, header, walk_repository
from finetune.data.config import Codebase
from finetune.data.traces.render import Sample

DOC_END = ("<|end_of_text|>", "<｜end▁of▁sentence｜>", "<|endoftext|>", "</s>")
FIM_MARGIN = 8  # sentinels (4) + tokens that cutting inside a word can add at each cut (2 x 2)
MIN_BUDGET = 32  # tokens of code per sample, at least
_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+([\w., \t()*]+)|import[ \t]+([\w., \t]+))",
                     re.MULTILINE)


@dataclass
class CodeRecord:
    record_id: str
    samples: list[Sample]


@dataclass
class _Doc:
    path: str
    language: str
    offset: int  # in the spool file
    imports: list[str]


def _imports(path: str, text: str) -> list[str]:
    """Dotted module names a Python file imports; relative imports resolved against its package."""
    package = path[:-3].replace("/", ".").split(".")[:-1]  # a/b/c.py -> [a, b]; a/b/__init__.py -> [a, b]
    names = []
    for frm, what, plain in _IMPORT.findall(text):
        if plain:
            names += [n.split(" as ")[0].strip() for n in plain.split(",")]
            continue
        dots = len(frm) - len(frm.lstrip("."))
        base = frm.lstrip(".")
        if dots:
            base = ".".join([*package[: len(package) - dots + 1], *([base] if base else [])])
        names.append(base)
        names += [f"{base}.{n.split(' as ')[0].strip()}" for n in what.strip("() \t").split(",") if n.strip()]
    return [n for n in names if n]


def python_order(docs: list[_Doc]) -> list[_Doc]:
    """Python files after the repository modules they import (depth first in import order; a cycle is
    broken where it is first met),
    then every other file in path order."""
    module_of: dict[str, _Doc] = {}
    for d in docs:
        if d.language == "python":
            parts = d.path[:-3].split("/")
            if parts[-1] == "__init__":
                parts = parts[:-1]
            for i in range(len(parts)):  # src/pkg/mod.py is also importable as pkg.mod
                module_of.setdefault(".".join(parts[i:]), d)
    order, state = [], {}

    def visit(d: _Doc):
        stack = [(d, iter(dict.fromkeys(d.imports)))]
        state[d.path] = 1
        while stack:
            cur, deps = stack[-1]
            for name in deps:
                dep = next((module_of[m] for m in _prefixes(name) if m in module_of), None)
                if dep is not None and dep.path not in state:
                    state[dep.path] = 1
                    stack.append((dep, iter(dict.fromkeys(dep.imports))))
                    break
            else:
                stack.pop()
                order.append(cur)

    for d in docs:
        if d.language == "python" and d.path not in state:
            visit(d)
    return order + [d for d in docs if d.language != "python"]


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


class _Builder:
    """Token-level chunking, packing and the final sample layout."""

    def __init__(self, tok, max_seq_length: int, opts: Codebase, seed: int, stats: dict):
        self.tok, self.max, self.opts, self.seed, self.stats = tok, max_seq_length, opts, seed, stats
        self.fim = FimTokens.of(tok) if opts.fim and opts.fim.rate > 0 else None
        self.budget = max_seq_length - 2 - (FIM_MARGIN if self.fim else 0)
        if self.budget < MIN_BUDGET:
            raise FinetuneError(f"max_seq_length {max_seq_length} leaves {self.budget} tokens per code sample "
                                f"(BOS, end token{' and FIM sentinels' if self.fim else ''} take the rest); "
                                f"code needs at least {MIN_BUDGET}: raise data.max_seq_length")
        vocab = tok.get_vocab()
        self.bos = tok.bos_token_id if tok.bos_token else None
        self.end = next((vocab[t] for t in DOC_END if t in vocab), tok.eos_token_id)

    def chunks(self, path: str, language: str, text: str) -> list[tuple[str, list[int]]]:
        """(text, ids) pieces of one file, each within the budget, every piece headed by the path."""
        head = header(path, language)
        full = head + text
        enc = self.tok(full, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
        if len(ids) <= self.budget:
            return [(full, ids)]
        head_ids = self.tok(head, add_special_tokens=False)["input_ids"]
        if len(head_ids) > self.budget // 2:  # a path too long to repeat: later pieces go without it
            head, head_ids = "", []
        line_starts = {m.end() for m in re.finditer("\n", full)}
        cuttable = [k for k, (a, _) in enumerate(offsets) if a in line_starts]  # tokens that start a line
        pieces, start, room = [], 0, self.budget
        while start < len(ids):
            limit = start + room
            if limit >= len(ids):
                end = len(ids)
            else:  # the last line start that fits, or (a single longer line) a token boundary
                i = bisect.bisect_right(cuttable, limit) - 1
                end = cuttable[i] if i >= 0 and cuttable[i] > start else limit
            a = offsets[start][0]
            b = offsets[end][0] if end < len(ids) else len(full)
            pieces.append(((head if start else "") + full[a:b], (head_ids if start else []) + ids[start:end]))
            start, room = end, self.budget - len(head_ids)
        self.stats["files_split"] += 1
        return pieces

    def sample(self, record_id: str, text: str, ids: list[int]) -> Sample:
        f = self.opts.fim
        rng = random.Random(f"{self.seed}:{record_id}")
        if self.fim is not None and rng.random() < f.rate:
            spm = rng.random() < f.spm_rate
            prefix, middle, suffix = cut(text, rng, f.split)
            fids, labels = self.fim.sample(prefix, middle, suffix, spm, f.loss, self.bos)
            if len(fids) <= self.max:
                self.stats["fim"]["spm" if spm else "psm"] += 1
                return _sample(fids, labels)
            self.stats["fim"]["too_long"] += 1
        full = ([self.bos] if self.bos is not None else []) + ids + [self.end]
        return _sample(full, [IGNORE, *full[1:]])


def _sample(ids: list[int], labels: list[int]) -> Sample:
    import numpy as np

    ids, labels = np.asarray(ids, dtype=np.int32), np.asarray(labels, dtype=np.int32)
    return Sample(ids, labels, {"code": [len(ids), int((labels != IGNORE).sum())]})


def new_stats() -> dict:
    return {"files_in": 0, "files_ok": 0, "skipped": Counter(), "pruned_dirs": {}, "license": None,
            "languages": Counter(), "redacted": Counter(), "files_split": 0, "samples": 0,
            "fim": Counter({"psm": 0, "spm": 0, "too_long": 0})}


def codebase_records(root: str, opts: Codebase, tok, max_seq_length: int, seed: int, stats: dict,
                     dedup: Deduplicator, decontaminate: Decontaminator):
    """Yield a ``Skip`` for every file left out and a ``CodeRecord`` per sample group; fill ``stats``
    (from ``new_stats()``). ``dedup`` may be shared by several repositories, to find copies across them."""
    builder = _Builder(tok, max_seq_length, opts, seed, stats)
    redactor = Redactor(pii=opts.redact_pii) if opts.redact_secrets or opts.redact_pii else None
    walk = WalkStats()
    docs: list[_Doc] = []
    with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        for item in walk_repository(root, opts, walk):
            stats["files_in"] += 1
            if isinstance(item, CodeFile):
                verdict = dedup.check(f"{root}/{item.path}", item.text) or decontaminate.check(item.text)
                if verdict:
                    item = Skip(item.path, *verdict)
            if isinstance(item, Skip):
                stats["skipped"][item.reason] += 1
                yield item
                continue
            text = item.text
            if redactor is not None:
                text, counts = redactor.redact(text, item.path)
                stats["redacted"].update(counts)
            stats["files_ok"] += 1
            stats["languages"][item.language] += 1
            docs.append(_Doc(item.path, item.language, spool.tell(),
                             _imports(item.path, text) if opts.shape == "repo" and item.language == "python" else []))
            spool.write(json.dumps(text) + "\n")
        stats["pruned_dirs"], stats["license"] = dict(walk.pruned_dirs), walk.license

        def read(d: _Doc) -> str:
            spool.seek(d.offset)
            return json.loads(spool.readline())

        name = Path(root).resolve().name
        if opts.shape == "file":
            for d in docs:
                pieces = builder.chunks(d.path, d.language, read(d))
                rid = f"{name}/{d.path}"
                yield CodeRecord(rid, [builder.sample(f"{rid}#{i}", *p) for i, p in enumerate(pieces)])
                stats["samples"] += len(pieces)
            return
        texts, ids, first, k = [], [], None, 0

        def context() -> CodeRecord:
            stats["samples"] += 1
            rid = f"{name}/context-{k:05d}:{first}"
            return CodeRecord(rid, [builder.sample(rid, "".join(texts), ids)])

        for d in python_order(docs):
            for piece_text, piece_ids in builder.chunks(d.path, d.language, read(d)):
                if ids and len(ids) + len(piece_ids) > builder.budget:
                    yield context()
                    texts, ids, k = [], [], k + 1
                if not ids:
                    first = d.path
                texts.append(piece_text)
                ids.extend(piece_ids)
        if ids:
            yield context()
