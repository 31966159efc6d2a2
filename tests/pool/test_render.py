"""Renderers: every backend's files for a pool of shared-base adapters and a pool of distinct
GGUFs, compared with the expected files in tests/pool/expected (regenerate them with
FINETUNE_UPDATE_EXPECTED=1 and read the diff); plus the refusals."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from finetune import FinetuneError
from finetune.contracts.chat import TEMPLATES
from finetune.pool.manifest import SCHEMA_VERSION, Manifest, artifacts_of
from finetune.pool.render import render
from tests.conftest import REPO

EXPECTED = REPO / "tests" / "pool" / "expected"
BACKENDS = ["vllm", "llamacpp", "ollama", "sglang", "tgi"]


def _artifact(fmt, root, path, *names):
    return {"format": fmt, "root": root, "path": path,
            "files": [{"path": f"{path}/{n}" if n else path, "bytes": 100 + i, "sha256": f"{i:064x}"}
                      for i, n in enumerate(names or [""])]}


def _member(name, fmt, **kw):
    return {"name": name, "tool_call_format": fmt, "context_length": 4096, "chat_template": TEMPLATES[fmt].jinja,
            "sampling": {"temperature": 0.3, "top_p": 0.9, "max_tokens": 256, "stop": []}, **kw}


POOLS = {
    # Two adapters on one base, a remote member, a generative judge, merge mode.
    "shared-base": {
        "name": "shared", "tool_call_format": "hermes",
        "bases": [{"name": "base", "context_length": 4096, "chat_template": TEMPLATES["hermes"].jinja,
                   "artifacts": [_artifact("safetensors", "artifacts/base", "safetensors", "model.safetensors"),
                                 _artifact("gguf-f16", "artifacts/base", "gguf/base-F16.gguf")]}],
        "members": [
            _member("coder-a", "hermes", base="base",
                    adapters=[_artifact("adapter", "artifacts/lora-a", "adapter", "adapter_config.json"),
                              _artifact("gguf-lora", "artifacts/lora-a", "gguf/a-LoRA.gguf")]),
            _member("coder-b", "hermes", base="base",
                    adapters=[_artifact("adapter", "artifacts/lora-b", "adapter", "adapter_config.json"),
                              _artifact("gguf-lora", "artifacts/lora-b", "gguf/b-LoRA.gguf")]),
            _member("remote", "hermes", endpoint={"url": "https://llm.example.com/v1", "model": "coder-xl",
                                                  "api_key_env": "REMOTE_KEY"}),
        ],
        "judge": {"kind": "generative", "max_length": 2048, "base_model": "base",
                  "templates": {"system": "Judge.", "task": "Task:\n{task}", "candidate": "{letter}: {answer}",
                                "merge": "Merge."},
                  "artifacts": [_artifact("safetensors", "artifacts/judge", "model", "model.safetensors"),
                                _artifact("gguf-q8_0", "artifacts/judge-export", "gguf/judge-Q8_0.gguf")]},
        "fusion": {"mode": "merge", "quorum": 2, "member_timeout_s": 30.0},
    },
    # Two separately merged models, each with safetensors and a GGUF; a reward-model judge.
    "distinct-gguf": {
        "name": "distinct", "tool_call_format": "llama3",
        "members": [
            _member("alpha", "llama3", artifacts=[
                _artifact("safetensors", "artifacts/alpha", "safetensors", "model.safetensors"),
                _artifact("gguf-q4_k_m", "artifacts/alpha", "gguf/alpha-Q4_K_M.gguf")]),
            _member("beta", "llama3", artifacts=[
                _artifact("safetensors", "artifacts/beta", "safetensors", "model.safetensors"),
                _artifact("gguf-q8_0", "artifacts/beta", "gguf/beta-Q8_0.gguf")]),
        ],
        "judge": {"kind": "reward_model", "max_length": 256, "templates": {"input": "sentence_pair"},
                  "artifacts": [_artifact("safetensors", "artifacts/judge", "model", "model.safetensors")]},
        "fusion": {"mode": "best_of", "quorum": 1, "early_finish_grace_s": 2.0},
    },
}


def _write_pool(tmp_path: Path, name: str) -> Path:
    """The pool in tmp_path/pool, its listed files written there with their real sizes and hashes."""
    pool = {"schema_version": SCHEMA_VERSION, "created": "2026-11-28T00:00:00Z", "toolkit_version": "test",
            **json.loads(json.dumps(POOLS[name]))}
    ranks = {"lora-a": 8, "lora-b": 32}  # vLLM/SGLang size --max-lora-rank from these
    folder = tmp_path / "pool"
    for _, a in artifacts_of(Manifest.model_validate(pool)):
        for f in a.files:
            rank = ranks.get(Path(a.root).name)
            data = json.dumps({"r": rank}) if f.path.endswith("adapter_config.json") else f"{a.root}/{f.path}\n"
            (folder / a.root / f.path).parent.mkdir(parents=True, exist_ok=True)
            (folder / a.root / f.path).write_text(data)
    for x in [*pool.get("bases", []), *pool["members"], pool["judge"]]:
        for a in [*x.get("artifacts", []), *x.get("adapters", [])]:
            for f in a["files"]:
                data = (folder / a["root"] / f["path"]).read_bytes()
                f.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (folder / "manifest.json").write_text(json.dumps(pool, indent=2))
    return folder / "manifest.json"


def _tree(folder: Path) -> dict[str, str]:
    """Every file the render wrote, less the artifacts it brought in (checked on their own)."""
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] != "artifacts"}


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_renders_match_expected_files(pool, tmp_path):
    manifest = _write_pool(tmp_path, pool)
    got = {}
    for backend in BACKENDS:
        render(manifest, backend, tmp_path / "pool" / backend)
        got[backend] = _tree(tmp_path / "pool" / backend)
    render(tmp_path / "pool" / "llamacpp" / "manifest.json", "litellm", tmp_path / "pool" / "litellm")
    got["litellm"] = _tree(tmp_path / "pool" / "litellm")
    if os.environ.get("FINETUNE_UPDATE_EXPECTED"):
        shutil.rmtree(EXPECTED / pool, ignore_errors=True)
        for backend, files in got.items():
            for rel, text in files.items():
                (EXPECTED / pool / backend / rel).parent.mkdir(parents=True, exist_ok=True)
                (EXPECTED / pool / backend / rel).write_text(text)
    for backend, files in got.items():
        assert files == _tree(EXPECTED / pool / backend), f"{pool}/{backend} differs from tests/pool/expected"


def test_shared_base_is_one_server_with_every_adapter(tmp_path):
    manifest = _write_pool(tmp_path, "shared-base")
    render(manifest, "vllm", tmp_path / "pool" / "vllm")
    scripts = sorted(p.name for p in (tmp_path / "pool" / "vllm" / "servers").iterdir())
    assert scripts == ["base.sh", "judge.sh"]  # coder-a and coder-b share one base server; remote is external
    text = (tmp_path / "pool" / "vllm" / "servers" / "base.sh").read_text()
    assert "--lora-modules coder-a=artifacts/lora-a/adapter coder-b=artifacts/lora-b/adapter" in text
    assert "--max-lora-rank 32" in text and "--tool-call-parser hermes" in text
    served = json.loads((tmp_path / "pool" / "vllm" / "manifest.json").read_text())
    endpoints = {m["name"]: m["endpoint"] for m in served["members"]}
    assert endpoints["coder-a"]["url"] == endpoints["coder-b"]["url"] == "http://127.0.0.1:8101/v1"
    assert endpoints["coder-b"]["model"] == "coder-b" and endpoints["remote"]["url"] == "https://llm.example.com/v1"
    assert served["judge"]["endpoint"] == {"url": "http://127.0.0.1:8102/v1", "model": "judge", "api_key_env": None}
    # llama.cpp: one server per member, base GGUF + that member's LoRA.
    render(manifest, "llamacpp", tmp_path / "pool" / "llamacpp", port=9000)
    a = (tmp_path / "pool" / "llamacpp" / "servers" / "coder-a.sh").read_text()
    assert "--model artifacts/base/gguf/base-F16.gguf" in a and "--lora_path artifacts/lora-a/gguf/a-LoRA.gguf" in a
    assert "--port 9000" in a and "--port 9001" in (tmp_path / "pool" / "llamacpp" / "servers" / "coder-b.sh").read_text()


def test_refusals(tmp_path):
    manifest = _write_pool(tmp_path, "distinct-gguf")
    with pytest.raises(FinetuneError, match="litellm fronts running servers.*alpha, beta"):
        render(manifest, "litellm", tmp_path / "l")
    with pytest.raises(FinetuneError, match="unknown backend 'triton'"):
        render(manifest, "triton", tmp_path / "t")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FinetuneError, match="not empty"):
        render(manifest, "vllm", tmp_path / "full")
    pool = json.loads(manifest.read_text())
    pool["members"][0]["artifacts"] = pool["members"][0]["artifacts"][:1]  # alpha: safetensors only
    manifest.write_text(json.dumps(pool))
    with pytest.raises(FinetuneError, match=r"members\[alpha\]: llama.cpp needs a GGUF"):
        render(manifest, "llamacpp", tmp_path / "g")
