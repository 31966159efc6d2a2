"""Exact and near-duplicate detection for code files, and decontamination against evaluation sets.

* **Exact:** sha256 of the text with line-end whitespace and blank lines dropped, so a file that
  only differs in trailing spaces or CRLF line ends is the same file.
* **Near:** MinHash over 5-word shingles (``datasketch``, 128 permutations, fixed seed) in an LSH
  index at the configured Jaccard threshold; the first file seen (the walk is sorted) is kept.
  Memory is the signatures only (about 1 KB per kept file), never the texts.
* **Decontamination:** a file that shares one ``n``-word sequence (default 20 words) with any
  evaluation item is dropped. Words are ``\\w+`` runs, so formatting does not hide a copy; 20
  words is a sentence of a docstring or a few lines of a solution, longer than shared
  boilerplate such as an import block.

Example::

    dedup = Deduplicator(near_threshold=0.85)
    dedup.check("a.py", text)   # None, or ("near_duplicate", "of b.py (Jaccard ~0.91)")
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from finetune import FinetuneError

_WORD = re.compile(r"\w+")
SHINGLE = 5
NUM_PERM = 128


def normalised_hash(text: str) -> str:
    lines = (line.rstrip() for line in text.splitlines())
    return hashlib.sha256("\n".join(x for x in lines if x).encode()).hexdigest()


class Deduplicator:
    def __init__(self, near_threshold: float | None, exact: bool = True):
        self.exact = exact
        self.hashes: dict[str, str] = {}
        self.lsh = None
        self.signatures: dict[str, object] = {}  # key -> hash values (1 KB), for the detail's Jaccard
        if near_threshold is not None:
            from datasketch import MinHash, MinHashLSH

            self.lsh = MinHashLSH(threshold=near_threshold, num_perm=NUM_PERM)
            # One set of permutations for every signature (a MinHash makes its own 2 KB set otherwise).
            self.permutations = MinHash(num_perm=NUM_PERM, seed=1).permutations

    def _minhash(self, text: str):
        from datasketch import MinHash

        words = _WORD.findall(text)
        shingles = {" ".join(words[i:i + SHINGLE]) for i in range(max(1, len(words) - SHINGLE + 1))}
        m = MinHash(num_perm=NUM_PERM, seed=1, permutations=self.permutations, scheme="affine32")
        m.update_batch([s.encode() for s in shingles])
        return m

    def check(self, key: str, text: str) -> tuple[str, str] | None:
        """None for a new file (now remembered), else (reason, detail) naming the file it repeats."""
        if self.exact:
            h = normalised_hash(text)
            if h in self.hashes:
                return "exact_duplicate", f"same text as {self.hashes[h]}"
            self.hashes[h] = key
        if self.lsh is not None:
            m = self._minhash(text)
            similar = sorted(self.lsh.query(m))
            if similar:
                first = similar[0]
                jaccard = float((m.hashvalues == self.signatures[first]).mean())
                return "near_duplicate", f"of {first} (Jaccard ~{jaccard:.2f})"
            self.lsh.insert(key, m)
            self.signatures[key] = m.hashvalues
        return None


def _eval_texts(path: Path):
    """(item label, text) of an evaluation file: every string of each JSONL/JSON record, or the whole file."""
    def strings(x):
        if isinstance(x, str):
            yield x
        elif isinstance(x, dict):
            for v in x.values():
                yield from strings(v)
        elif isinstance(x, list):
            for v in x:
                yield from strings(v)

    if path.suffix == ".jsonl":
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise FinetuneError(f"{path}:{n}: not valid JSON ({exc.msg}); decontamination sets are "
                                        "JSONL, JSON or plain text") from None
                label = rec.get("task_id") or rec.get("id") if isinstance(rec, dict) else None
                yield f"{path.name}:{label or n}", "\n".join(strings(rec))
    elif path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        for n, rec in enumerate(data if isinstance(data, list) else [data], start=1):
            yield f"{path.name}[{n}]", "\n".join(strings(rec))
    else:
        yield path.name, path.read_text(encoding="utf-8", errors="replace")


class Decontaminator:
    """Drops texts that share an ``n``-word sequence with an evaluation item."""

    def __init__(self, eval_sets, n: int):
        self.n = n
        self.grams: dict[str, str] = {}
        for name in eval_sets:
            path = Path(name)
            if not path.is_file():
                raise FinetuneError(f"decontamination set {path} does not exist")
            for label, text in _eval_texts(path):
                words = _WORD.findall(text)
                for i in range(len(words) - n + 1):
                    self.grams.setdefault(" ".join(words[i:i + n]), label)

    def check(self, text: str) -> tuple[str, str] | None:
        if not self.grams:
            return None
        words = _WORD.findall(text)
        for i in range(len(words) - self.n + 1):
            label = self.grams.get(" ".join(words[i:i + self.n]))
            if label is not None:
                return "contaminated", f"shares {self.n} words with evaluation item {label}"
        return None
