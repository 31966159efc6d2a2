"""Artifacts, the vocabulary every stage after training shares (export writes them, the pool's
manifest lists them, eval serves them): the formats, file hashing, checking a file against a
listing, re-checking an export folder, and folders that appear only when complete. No torch.

Example::

    with staged_folder(Path("runs/export")) as tmp:
        (tmp / "model.safetensors").write_bytes(data)   # runs/export appears only if this finishes
    verify_artifacts(Path("runs/export"))                 # [] when every listed file matches
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from finetune import FinetuneError

# What `finetune export --format` writes; the manifest's artifact formats are the same names.
FORMATS = ("safetensors", "adapter", "gguf-f16", "gguf-bf16", "gguf-q8_0", "gguf-q4_k_m", "gguf-q5_k_m",
           "gguf-q6_k", "gguf-lora", "bnb-nf4")
LOSSLESS = ("safetensors", "adapter", "gguf-f16", "gguf-bf16", "gguf-lora")
HF_FORMATS = ("safetensors", "bnb-nf4")  # formats transformers loads (the rest are llama.cpp's)
FOLDER_FORMATS = ("safetensors", "adapter", "bnb-nf4")  # an artifact's path is a folder; the GGUFs' is a file


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_problem(path: Path, size: int, sha256: str, listing: str, hasher=sha256_file) -> str | None:
    """What is wrong with ``path`` against the size and hash ``listing`` gives for it (None: nothing).
    The hash is only computed when the file is there with the right size, by ``hasher`` (a cache's
    lookup, say; None: presence and size only)."""
    if not path.is_file():
        return "missing"
    if path.stat().st_size != size:
        return f"{path.stat().st_size} bytes, {listing} says {size}"
    if hasher is not None and hasher(path) != sha256:
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


def verify_artifacts(out: Path) -> list[str]:
    """Re-hash every file listed in ``out/artifacts.json``; returns the problems (empty: all good)."""
    out = Path(out)
    listing = out / "artifacts.json"
    if not listing.exists():
        raise FinetuneError(f"{listing} not found: not a finished export (an interrupted one leaves none)")
    problems = []
    for artifact in json.loads(listing.read_text())["artifacts"]:
        for f in artifact["files"]:
            problem = file_problem(out / f["path"], f["bytes"], f["sha256"], "artifacts.json")
            if problem:
                problems.append(f"{f['path']}: {problem}")
    return problems
