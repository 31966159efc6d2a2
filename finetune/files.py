"""File contracts every stage shares, without torch: hashing, checking a file against a listing,
and folders that appear only when complete.

Example::

    with staged_folder(Path("runs/export")) as tmp:
        (tmp / "model.safetensors").write_bytes(data)   # runs/export appears only if this finishes
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from finetune import FinetuneError


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_problem(path: Path, size: int, sha256: str, listing: str) -> str | None:
    """What is wrong with ``path`` against the size and hash ``listing`` gives for it (None: nothing).
    The hash is only computed when the file is there with the right size."""
    if not path.is_file():
        return "missing"
    if path.stat().st_size != size:
        return f"{path.stat().st_size} bytes, {listing} says {size}"
    if sha256_file(path) != sha256:
        return f"sha256 differs from {listing} (the file changed or is corrupt)"
    return None


def check_new_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FinetuneError(f"--out {out} already exists and is not empty; choose a new folder or remove it")


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A hidden sibling ``.OUT.incomplete`` to write into; it is renamed to ``out`` only when the
    block finishes, and removed when it fails, so a failed or interrupted run never leaves a
    folder that looks complete."""
    check_new_folder(out)
    tmp = out.parent / f".{out.name}.incomplete"
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted run; never looked complete
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    tmp.rename(out)
