"""A pool folder (the folder holding ``manifest.json``) holds its own artifacts, so that it can
move as one and nothing it serves lies outside it.

``pool build`` and ``pool render --out`` bring every local artifact's listed files into
``FOLDER/artifacts/<source folder name>/`` (:class:`Placement`): hard links, which cost no space,
or copies where linking fails (another filesystem). Only the files in the artifact's ``files`` come
along. Reading them back (:func:`file_problems`) checks what the manifest's lexical rules cannot:
each file's real path (symlinks followed) must lie inside the folder's real path.

Hashing a large GGUF on every ``pool serve`` is slow, so :class:`Hashes` keeps each file's sha256
in ``FOLDER/.sha256-cache.json``, used only while the file's size, mtime, ctime and inode are
all unchanged: rewriting a file sets its ctime, which ``touch`` cannot set back, so a rewritten
file is always hashed again (a file changed in the last two seconds is not cached at all, since
file times tick coarsely). A read-only folder is hashed without the cache. Whoever can write the
pool folder can also rewrite its manifest: the cache guards against changed files, not against
the folder's owner.

Example::

    placement = Placement()
    root = placement.root(Path("runs/coder-export"))      # "artifacts/coder-export"
    placement.bring_in([artifact_with_that_root], Path("runs/pool"))
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from finetune.contracts.artifacts import FOLDER_FORMATS, file_problem, sha256_file

ARTIFACTS = "artifacts"  # inside the pool folder
CACHE = ".sha256-cache.json"
RECENT_NS = 2_000_000_000  # a file changed more recently than this is hashed, not cached
REBUILD = "rebuild the pool with `finetune pool build`, which keeps artifacts inside the pool folder"


class Placement:
    """Where each source folder's files go inside a pool folder: ``artifacts/<its name>``, made
    unique (``-2``, ``-3``) when two source folders share a name; every artifact of one source
    folder shares its place."""

    def __init__(self):
        self.sources: dict[str, Path] = {}  # root inside the pool folder -> the source folder

    def root(self, source: Path) -> str:
        source = Path(source).resolve()
        for root, known in self.sources.items():
            if known == source:
                return root
        name = re.sub(r"[^A-Za-z0-9._-]", "-", source.name).lstrip(".") or "artifact"
        root, n = f"{ARTIFACTS}/{name}", 1
        while root in self.sources:
            n += 1
            root = f"{ARTIFACTS}/{name}-{n}"
        self.sources[root] = source
        return root

    def bring_in(self, artifacts: Iterable, folder: Path) -> None:
        """Link (or copy) the listed files of every artifact whose root this placement gave into
        ``folder``. A file already there is replaced, unless it is the same file (a rebuild)."""
        for a in artifacts:
            if a.root in self.sources:
                for f in a.files:
                    _place(self.sources[a.root] / f.path, Path(folder) / a.root / f.path)


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and os.path.samefile(src, dst):
        return
    tmp = dst.with_name(f".{dst.name}.incomplete")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another filesystem, or one without hard links
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def pool_folder(manifest_path: Path) -> Path:
    """The folder every artifact of the manifest must lie in (the one artifact roots are relative to)."""
    return Path(manifest_path).resolve().parent


class Hashes:
    """sha256 of the files of one pool folder, from ``FOLDER/.sha256-cache.json`` when a file's
    size, mtime_ns, ctime_ns and inode all match what was recorded; ``trust=False`` hashes every
    file (``pool verify``) and records the results. Call :meth:`save` when done."""

    def __init__(self, folder: Path, trust: bool = True):
        self.folder, self.trust, self.changed = Path(folder), trust, False
        self.real = Path(os.path.realpath(self.folder))
        try:
            self.entries = json.loads((self.folder / CACHE).read_text())["files"]
            if not isinstance(self.entries, dict):
                raise TypeError
        except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: start afresh
            self.entries = {}

    def __call__(self, path: Path) -> str:
        real = os.path.realpath(path)
        st = os.stat(real)  # before hashing: a change while hashing leaves a stale stamp, hashed next time
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        key = os.path.relpath(real, self.real)
        entry = self.entries.get(key)
        if self.trust and isinstance(entry, dict) and entry.get("stamp") == stamp:
            return str(entry.get("sha256"))
        digest = sha256_file(Path(real))
        # File times tick coarsely (a few ms): a file changed just now could change again with the same
        # stamp, so it is recorded only once its ctime is RECENT_NS old (as git treats "racy" files).
        if time.time_ns() - st.st_ctime_ns > RECENT_NS:
            self.entries[key] = {"stamp": stamp, "sha256": digest}
            self.changed = True
        return digest

    def save(self) -> None:
        """Write the cache (atomically); a read-only folder keeps none."""
        if not self.changed:
            return
        tmp = self.folder / f"{CACHE}.incomplete"
        try:
            tmp.write_text(json.dumps({"stamp": ["size", "mtime_ns", "ctime_ns", "inode"], "files": self.entries}))
            tmp.replace(self.folder / CACHE)
        except OSError:  # a read-only folder: hashed again next time
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        self.changed = False


def file_problems(manifest_path: Path, owned: Iterable, hashes: Hashes | None) -> tuple[list[str], int]:
    """Check the local files of ``(owner, artifact)`` pairs: each lies inside the pool folder once
    symlinks are followed, is there and has the manifest's size and (unless ``hashes`` is None)
    sha256; a model folder (safetensors, adapter, bnb-nf4) holds no file the manifest does not
    list. Returns the problems, one line each naming owner, format and file, and the number of
    files checked."""
    folder = pool_folder(manifest_path)
    real = Path(os.path.realpath(folder))
    problems, checked = [], 0
    for owner, a in owned:
        if a.root is None:
            continue
        if a.format in FOLDER_FORMATS:  # a loader reads the whole folder: nothing in it may go unchecked
            listed = {Path(os.path.normpath(folder / a.root / f.path)) for f in a.files}
            for extra in sorted(p for p in (folder / a.root / a.path).rglob("*")
                                if (p.is_file() or p.is_symlink()) and p not in listed):
                problems.append(f"{owner} {a.format}: {extra}: in the model folder but not listed in the manifest, "
                                f"so nothing checks it; remove it or {REBUILD}")
        for f in a.files:
            checked += 1
            path = Path(os.path.normpath(folder / a.root / f.path))
            resolved = Path(os.path.realpath(path))
            if not resolved.is_relative_to(real):
                problems.append(f"{owner} {a.format}: {path}: resolves to {resolved}, outside the pool folder "
                                f"{folder}; {REBUILD}")
                continue
            problem = file_problem(path, f.bytes, f.sha256, "the manifest", hashes)
            if problem:
                problems.append(f"{owner} {a.format}: {path}: {problem}")
    return problems, checked
