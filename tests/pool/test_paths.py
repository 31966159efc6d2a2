"""A pool folder's paths stay inside it, and a pool serves only files that match its manifest: the
hostile manifests (`..`, absolute roots, escaping files, symlinks out, an artifact path nothing
checks) are refused by load, verify, render and serve; a flipped byte stops `pool serve` before
anything starts; the sha256 cache is used only for unchanged files. Small fake GGUFs, no servers."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import pytest

from finetune import FinetuneError
from finetune.cli import main
from finetune.pool import place
from finetune.pool.local import free_port
from finetune.pool.manifest import load_manifest
from finetune.pool.place import CACHE, Placement
from finetune.pool.runtime import Pool

GGUF = b"GGUF" + bytes(range(256)) * 16


def _ref(path: str, data: bytes) -> dict:
    return {"path": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def small_pool(folder: Path) -> Path:
    """folder/manifest.json: one local GGUF member (its file in folder/artifacts/coder) and a
    generative judge at an endpoint."""
    (folder / "artifacts" / "coder").mkdir(parents=True)
    (folder / "artifacts" / "coder" / "coder.gguf").write_bytes(GGUF)
    endpoint = {"url": "http://127.0.0.1:9/v1", "model": "judge"}
    manifest = {
        "schema_version": 1, "name": "pool", "created": "2026-12-03T00:00:00Z", "toolkit_version": "test",
        "tool_call_format": "hermes",
        "members": [{"name": "coder", "tool_call_format": "hermes", "context_length": 4096, "artifacts": [
            {"format": "gguf-q8_0", "root": "artifacts/coder", "path": "coder.gguf",
             "files": [_ref("coder.gguf", GGUF)]}]}],
        "judge": {"kind": "generative", "max_length": 512, "endpoint": endpoint,
                  "artifacts": [{"format": "gguf-q8_0", "uri": "https://example.invalid/j.gguf", "path": "j.gguf",
                                 "files": [_ref("j.gguf", b"J")]}],
                  "templates": {"system": "Judge.", "task": "{task}", "candidate": "{letter}: {answer}",
                                "merge": "Merge."}},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder / "manifest.json"


def _edit(path: Path, change) -> None:
    raw = json.loads(path.read_text())
    change(raw["members"][0]["artifacts"][0])
    path.write_text(json.dumps(raw))


def test_the_hostile_paths_are_refused_by_load_verify_render_and_serve(tmp_path, capsys):
    outside = tmp_path / "secret.gguf"
    outside.write_bytes(b"not yours")
    cases = {  # each: what the manifest says, the field named, what the message says
        "path ../": (lambda a: a.update(path="../../../../../../etc/passwd"), "members.0.artifacts.0.path",
                     "not a relative path inside"),
        # a file that escapes, with the size and hash of the real file it reaches
        "files ../": (lambda a: a.update(path="../../../../secret.gguf",
                                         files=[_ref("../../../../secret.gguf", b"not yours")]),
                      "members.0.artifacts.0.files.0.path", "not a relative path inside"),
        "absolute root": (lambda a: a.update(root=str(tmp_path / "pool" / "artifacts" / "coder")),
                          "members.0.artifacts.0.root", "not a relative path inside the pool folder"),
        "old outside root": (lambda a: a.update(root="../exports/coder"), "members.0.artifacts.0.root",
                             "rebuild the pool with `finetune pool build`"),
        "path not a file": (lambda a: a.update(path="other.gguf"), "members.0.artifacts.0",
                            "gguf-q8_0 path 'other.gguf' is not one of the artifact's files"),
        "folder without files": (lambda a: a.update(format="safetensors", path="model"), "members.0.artifacts.0",
                                 "safetensors path 'model' is a folder, but none of the artifact's files lies in it"),
    }
    for name, (change, field, message) in cases.items():
        path = small_pool(tmp_path / name.replace(" ", "-") / "pool")
        _edit(path, change)
        with pytest.raises(FinetuneError, match=message) as err:
            load_manifest(path)
        assert f"{field}: " in str(err.value) and "finetune pool build" in str(err.value), name
        out = path.parent / "rendered"
        assert main(["pool", "verify", str(path)]) == 2
        assert main(["pool", "render", str(path), "--backend", "llamacpp", "--out", str(out)]) == 2
        assert main(["pool", "serve", str(path), "--port", str(free_port())]) == 2
        assert capsys.readouterr().err.count(f"{field}: ") == 3, name
        assert not out.exists()  # nothing rendered, so no script names /etc/passwd


def test_a_symlink_out_of_the_pool_folder_is_refused_when_read(tmp_path, capsys):
    """The lexical rules cannot see links: a file, or its folder, that resolves outside the pool
    folder is a problem naming the file, even with the right content."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "coder.gguf").write_bytes(GGUF)
    for link in ("file", "folder"):
        path = small_pool(tmp_path / link)
        gguf = path.parent / "artifacts" / "coder" / "coder.gguf"
        if link == "file":
            gguf.unlink()
            gguf.symlink_to(tmp_path / "elsewhere" / "coder.gguf")
        else:
            gguf.unlink()
            gguf.parent.rmdir()
            gguf.parent.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
        assert main(["pool", "verify", str(path)]) == 2
        err = capsys.readouterr().err
        assert f"members[coder] gguf-q8_0: {gguf}: resolves to {tmp_path / 'elsewhere' / 'coder.gguf'}, outside the " \
               f"pool folder {path.parent}" in err, err
        with pytest.raises(FinetuneError, match="outside the pool folder"):
            Pool(path)
        assert main(["pool", "render", str(path), "--backend", "llamacpp", "--out", str(tmp_path / "r")]) == 2
        assert "outside the pool folder" in capsys.readouterr().err and not (tmp_path / "r").exists()
    inside = small_pool(tmp_path / "inside")  # a link that stays inside is fine
    (inside.parent / "artifacts" / "coder" / "coder.gguf").rename(inside.parent / "real.gguf")
    (inside.parent / "artifacts" / "coder" / "coder.gguf").symlink_to(inside.parent / "real.gguf")
    assert main(["pool", "verify", str(inside)]) == 0


def test_serve_refuses_a_flipped_byte_before_starting_anything(tmp_path, capsys):
    path = small_pool(tmp_path / "pool")
    gguf = path.parent / "artifacts" / "coder" / "coder.gguf"
    data = bytearray(GGUF)
    data[len(data) // 2] ^= 0x01
    gguf.write_bytes(bytes(data))
    assert main(["pool", "serve", str(path), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "1 problem(s) with the files this pool loads; nothing was started" in err
    assert f"members[coder] gguf-q8_0: {gguf}: sha256 differs from the manifest" in err
    assert f"finetune pool verify {path}" in err
    gguf.write_bytes(GGUF[:-1])
    with pytest.raises(FinetuneError, match=re.escape(f"{gguf}: {len(GGUF) - 1} bytes, the manifest says {len(GGUF)}")):
        Pool(path)
    gguf.unlink()
    with pytest.raises(FinetuneError, match=re.escape(f"{gguf}: missing")):
        Pool(path)
    raw = json.loads(path.read_text())  # served elsewhere: the pool loads nothing of it, so checks nothing
    raw["members"][0]["endpoint"] = {"url": "http://127.0.0.1:9/v1", "model": "coder"}
    path.write_text(json.dumps(raw))
    assert Pool(path).endpoints["coder"].url == "http://127.0.0.1:9/v1"


def test_the_hash_cache_is_used_only_for_unchanged_files(tmp_path, monkeypatch):
    hashed = []
    real = place.sha256_file
    monkeypatch.setattr(place, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    path = small_pool(tmp_path / "pool")
    gguf = path.parent / "artifacts" / "coder" / "coder.gguf"
    Pool(path)
    Pool(path)
    assert hashed == ["coder.gguf"] * 2  # just written: too recent to cache (file times tick coarsely)
    monkeypatch.setattr(place, "RECENT_NS", 0)
    Pool(path)
    assert (path.parent / CACHE).is_file()
    Pool(path)
    assert hashed == ["coder.gguf"] * 3  # unchanged: the cached hash
    # Rewritten with one byte flipped, same size, its times set back: the ctime still differs.
    stat = gguf.stat()
    time.sleep(0.05)  # a clock tick later
    data = bytearray(GGUF)
    data[7] ^= 0x01
    gguf.write_bytes(bytes(data))
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (gguf.stat().st_size, gguf.stat().st_mtime_ns, gguf.stat().st_ino) == (stat.st_size, stat.st_mtime_ns,
                                                                                   stat.st_ino)
    with pytest.raises(FinetuneError, match="sha256 differs"):
        Pool(path)
    assert hashed == ["coder.gguf"] * 4
    time.sleep(0.05)
    gguf.write_bytes(GGUF)
    Pool(path)
    Pool(path)
    assert hashed == ["coder.gguf"] * 5
    assert main(["pool", "verify", str(path)]) == 0  # the full check hashes every file, cache or not
    assert hashed == ["coder.gguf"] * 6
    (path.parent / CACHE).write_text("{not json")  # a broken cache is hashed over, not trusted
    Pool(path)
    assert hashed == ["coder.gguf"] * 7
    (path.parent / CACHE).unlink()

    def read_only(self, *args, **kwargs):
        raise PermissionError(13, "Read-only file system", str(self))
    monkeypatch.setattr(Path, "write_text", read_only)  # a folder that cannot be written: hashed, no cache
    Pool(path)
    Pool(path)
    assert hashed == ["coder.gguf"] * 9 and not (path.parent / CACHE).exists()


def test_placement_links_shares_a_folder_and_copies_across_filesystems(tmp_path, monkeypatch):
    from finetune.pool.manifest import Artifact

    def export(folder: Path) -> Artifact:
        (folder / "gguf").mkdir(parents=True)
        (folder / "gguf" / "m.gguf").write_bytes(GGUF)
        (folder / "big-unlisted.bin").write_bytes(b"x")
        return Artifact(format="gguf-q8_0", root=placement.root(folder), path="gguf/m.gguf",
                        files=[_ref("gguf/m.gguf", GGUF)])

    placement = Placement()
    a, b = export(tmp_path / "one" / "export"), export(tmp_path / "two" / "export")
    again = Artifact(format="gguf-f16", root=placement.root(tmp_path / "one" / "export"), path="gguf/m.gguf",
                     files=[_ref("gguf/m.gguf", GGUF)])
    assert (a.root, b.root, again.root) == ("artifacts/export", "artifacts/export-2", "artifacts/export")
    placement.bring_in([a, b, again], tmp_path / "pool")
    placed = tmp_path / "pool" / "artifacts" / "export" / "gguf" / "m.gguf"
    assert placed.stat().st_ino == (tmp_path / "one" / "export" / "gguf" / "m.gguf").stat().st_ino
    assert not (tmp_path / "pool" / "artifacts" / "export" / "big-unlisted.bin").exists()

    def no_links(src, dst):
        raise OSError(18, "Invalid cross-device link")
    monkeypatch.setattr(place.os, "link", no_links)
    placement.bring_in([a], tmp_path / "copied")
    copied = tmp_path / "copied" / "artifacts" / "export" / "gguf" / "m.gguf"
    assert copied.read_bytes() == GGUF and copied.stat().st_ino != placed.stat().st_ino


def test_a_model_folder_holds_only_listed_files(tmp_path, capsys):
    """A loader reads a whole model folder (a reward judge's config, weights, tokenizer): a file
    put there that the manifest does not list would be loaded unchecked, so it is a problem."""
    path = small_pool(tmp_path / "pool")
    weights = b"\x00" * 64
    (path.parent / "artifacts" / "judge" / "model").mkdir(parents=True)
    (path.parent / "artifacts" / "judge" / "model" / "model.safetensors").write_bytes(weights)
    raw = json.loads(path.read_text())
    raw["members"][0]["artifacts"].append({"format": "safetensors", "root": "artifacts/judge", "path": "model",
                                            "files": [_ref("model/model.safetensors", weights)]})
    path.write_text(json.dumps(raw))
    assert main(["pool", "verify", str(path)]) == 0
    extra = path.parent / "artifacts" / "judge" / "model" / "tokenizer.json"
    extra.write_text("{}")
    assert main(["pool", "verify", str(path)]) == 2
    assert f"members[coder] safetensors: {extra}: in the model folder but not listed in the manifest" \
           in capsys.readouterr().err
    with pytest.raises(FinetuneError, match="not listed in the manifest"):
        Pool(path)
