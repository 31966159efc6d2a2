"""`pool build` and `pool verify` on real exports of tiny models, the published JSON Schema, strict
reading, and a real llama.cpp server started from what `pool render --backend llamacpp` wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from finetune import FinetuneError
from finetune.cli import main
from finetune.contracts.schema import recipe_from_tree
from finetune.pool.build import build_pool
from finetune.pool.config import PoolSpec
from finetune.pool.local import free_port
from finetune.pool.manifest import (
    PUBLISHED_SCHEMA,
    SCHEMA_FILE,
    artifacts_of,
    load_manifest,
    schema_text,
    verify_manifest,
)
from finetune.pool.render import render
from tests.conftest import REPO


def _spec(root, **extra):
    tree = {"name": "tiny-pool",
            "members": [{"name": "coder", "export": str(root / "coder-export"), "sampling": {"max_tokens": 32}},
                        {"name": "coder-lora", "base": str(root / "base-export"), "adapter": str(root / "lora-export")},
                        {"name": "remote", "endpoint": {"url": "http://10.1.2.3:8000/v1", "model": "big-coder",
                                                        "api_key_env": "REMOTE_KEY"},
                         "tool_call_format": "hermes", "context_length": 16384}],
            "judge": {"run": str(root / "judge")}, "fusion": {"mode": "best_of", "quorum": 2}, **extra}
    return recipe_from_tree(tree, "test pool", PoolSpec)


@pytest.fixture()
def pool(artifacts, tmp_path):
    """A private copy of the artifacts (tests below damage files) and its built manifest."""
    root = tmp_path / "artifacts"
    shutil.copytree(artifacts, root, ignore=shutil.ignore_patterns("*-adapter", "minilm"))
    manifest = build_pool(_spec(root), tmp_path / "pool" / "manifest.json")
    return root, tmp_path / "pool" / "manifest.json", manifest


def test_shipped_and_published_schema_are_generated_from_the_models():
    fix = "run from the repository root: python -m finetune.pool.manifest --write-schema"
    assert SCHEMA_FILE.read_text() == schema_text(), fix
    assert (REPO / PUBLISHED_SCHEMA).read_text() == schema_text(), fix


def test_build_resolves_exports_shared_base_judge_and_endpoint(pool, capsys):
    root, path, m = pool
    assert [x.name for x in m.members] == ["coder", "coder-lora", "remote"]
    coder, lora, remote = m.members
    assert {a.format for a in coder.artifacts} == {"safetensors", "gguf-q8_0"}
    assert lora.base == m.bases[0].name and {a.format for a in lora.adapters} == {"adapter", "gguf-lora"}
    assert {a.format for a in m.bases[0].artifacts} == {"safetensors", "gguf-f16"}
    assert m.tool_call_format == coder.tool_call_format == lora.tool_call_format == "hermes"  # read from the template
    assert coder.chat_template and "<tool_call>" in coder.chat_template and coder.sampling.max_tokens == 32
    assert remote.endpoint.api_key_env == "REMOTE_KEY" and remote.context_length == 16384
    assert m.judge.kind == "reward_model" and m.judge.max_length == 256 and "sentence_pair" in m.judge.templates["input"]
    assert {f.path for f in m.judge.artifacts[0].files} >= {"model/config.json", "model/model.safetensors"}
    for a in coder.artifacts:  # sizes and hashes come from the export's artifacts.json
        listed = {f["path"]: f for x in json.loads((root / "coder-export" / "artifacts.json").read_text())["artifacts"]
                  for f in x["files"]}
        assert all(listed[f.path]["sha256"] == f.sha256 for f in a.files)
    assert main(["pool", "verify", str(path)]) == 0
    checked = verify_manifest(path)[2]
    assert checked == sum(len(a.files) for _, a in artifacts_of(m)) > 10
    assert f"{checked} file(s) match" in capsys.readouterr().out


def test_verify_names_each_damaged_file(pool, capsys):
    _, path, m = pool
    here = path.parent / "artifacts"  # the pool's own files (hard links of the exports')
    gguf = here / "coder-export" / next(a.path for a in m.members[0].artifacts if a.format == "gguf-q8_0")
    data = bytearray(gguf.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit, same size
    gguf.write_bytes(bytes(data))
    (here / "judge" / "model" / "config.json").unlink()
    (here / "base-export" / "notes.txt").write_text("not listed in the manifest: ignored\n")
    tokenizer = here / "lora-export" / "adapter" / "tokenizer_config.json"
    tokenizer.write_text(tokenizer.read_text() + " ")
    assert main(["pool", "verify", str(path)]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s)" in err
    assert f"members[coder] gguf-q8_0: {gguf}: sha256 differs from the manifest" in err
    assert f"judge safetensors: {here / 'judge' / 'model' / 'config.json'}: missing" in err
    assert f"members[coder-lora] adapter adapter: {tokenizer}: {tokenizer.stat().st_size} bytes, the manifest says " \
           f"{tokenizer.stat().st_size - 1}" in err


def test_build_and_render_folders_are_self_contained(pool, tmp_path, capsys):
    """`pool build` links the listed files into the pool folder and `pool render` into its own: each
    verifies after the exports are gone and the folder has moved; a rebuild in place works."""
    root, path, m = pool
    assert {a.root for _, a in artifacts_of(m) if a.root} == {
        "artifacts/coder-export", "artifacts/base-export", "artifacts/lora-export", "artifacts/judge"}
    gguf = next(a for a in m.members[0].artifacts if a.format == "gguf-q8_0").path
    assert (path.parent / "artifacts" / "coder-export" / gguf).stat().st_ino == (root / "coder-export" / gguf).stat().st_ino
    listed = {f"{a.root}/{f.path}" for _, a in artifacts_of(m) if a.root for f in a.files}
    placed = {p.relative_to(path.parent).as_posix() for p in (path.parent / "artifacts").rglob("*") if p.is_file()}
    assert placed == listed  # only the listed files: no artifacts.json, no judge.json
    build_pool(_spec(root), path)  # again, into the same folder
    render(path, "llamacpp", tmp_path / "pool" / "llamacpp")
    shutil.rmtree(root)
    shutil.move(tmp_path / "pool", tmp_path / "moved")
    served = tmp_path / "moved" / "llamacpp"
    shutil.move(served, tmp_path / "served")
    for manifest in (tmp_path / "moved" / "manifest.json", tmp_path / "served" / "manifest.json"):
        assert main(["pool", "verify", str(manifest)]) == 0, capsys.readouterr().err
    assert f"--model artifacts/coder-export/{gguf}" in (tmp_path / "served" / "servers" / "coder.sh").read_text()
    assert {a.root for _, a in artifacts_of(load_manifest(tmp_path / "served" / "manifest.json")) if a.root} == {
        "artifacts/coder-export", "artifacts/base-export", "artifacts/lora-export", "artifacts/judge"}


def test_mixed_tool_call_formats_are_refused_with_each_members_format(artifacts, tmp_path):
    spec = _spec(artifacts)
    spec.members[2].tool_call_format = "llama3"
    with pytest.raises(FinetuneError, match=r"cannot serve one tool-call format \(coder: hermes, coder-lora: hermes, "
                                            r"remote: llama3\).*tools: false"):
        build_pool(spec, tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()
    spec.tools = False
    assert build_pool(spec, tmp_path / "m.json").tool_call_format == "none"


def test_shipped_pool_description_validates(capsys):

    assert main(["validate", str(REPO / "recipes" / "pool" / "demo.yaml")]) == 0
    assert "ok (pool demo-pool, 2 member(s), mode best_of)" in capsys.readouterr().out


def test_bad_pool_yaml_and_missing_export(artifacts, tmp_path, capsys):
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump({"name": "p", "members": [{"name": "a", "exprt": "x"}],
                                                        "judge": {"run": "j"}}))
    assert main(["pool", "build", str(tmp_path / "pool.yaml"), "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert "exprt" in err and "export" in err  # unknown key, closest valid one suggested
    with pytest.raises(FinetuneError, match="has no artifacts.json"):
        build_pool(recipe_from_tree({"name": "p", "members": [{"name": "a", "export": str(tmp_path)}],
                                     "judge": {"run": str(artifacts / "judge")}}, "t", PoolSpec), tmp_path / "m.json")
    with pytest.raises(FinetuneError, match="quorum 3 exceeds the 1 member"):
        build_pool(recipe_from_tree({"name": "p", "members": [{"name": "a", "export": str(artifacts / "coder-export")}],
                                     "judge": {"run": str(artifacts / "judge")}, "fusion": {"quorum": 3}}, "t", PoolSpec),
                   tmp_path / "m.json")


def test_manifest_reading_is_strict_and_versioned(pool, tmp_path):
    _, path, _ = pool
    raw = json.loads(path.read_text())
    cases = {"newer": ({**raw, "schema_version": 2}, "schema version 2, but this finetune reads version 1 at most"),
             "unknown key": ({**raw, "extra": 1}, "extra"),
             "wrong type": ({**raw, "fusion": {**raw["fusion"], "quorum": "2"}}, "quorum"),
             "no version": ({k: v for k, v in raw.items() if k != "schema_version"}, "no integer schema_version")}
    for name, (data, message) in cases.items():
        bad = tmp_path / f"{name}.json"
        bad.write_text(json.dumps(data))
        with pytest.raises(FinetuneError, match=message):
            load_manifest(bad)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(FinetuneError, match="not JSON"):
        load_manifest(tmp_path / "broken.json")


@pytest.mark.slow
def test_rendered_llamacpp_servers_answer_chat_completions(pool, tmp_path):
    """The scripts `pool render --backend llamacpp` writes start llama.cpp servers (the merged
    member's GGUF; the shared base GGUF with the member's GGUF LoRA) that answer the OpenAI chat API."""
    import httpx

    _, path, _ = pool
    out = tmp_path / "llamacpp"
    render(path, "llamacpp", out, port=free_port())
    served = load_manifest(out / "manifest.json")
    env = {**os.environ, "PYTHON": sys.executable}
    procs = []
    try:
        for member in ("coder", "coder-lora"):
            log = open(tmp_path / f"{member}.log", "w")
            procs.append(subprocess.Popen(["bash", str(out / "servers" / f"{member}.sh")], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        for member in served.members[:2]:
            url, deadline = member.endpoint.url, time.time() + 120
            while True:
                try:
                    if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.time() < deadline, (tmp_path / f"{member.name}.log").read_text()[-2000:]
                time.sleep(0.5)
            r = httpx.post(f"{url}/chat/completions", timeout=60, json={
                "model": member.endpoint.model, "max_tokens": 8, "temperature": 0,
                "messages": [{"role": "user", "content": "Write hello world in Python."}]})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["model"] == member.name and body["choices"][0]["message"]["role"] == "assistant"
            assert body["usage"]["completion_tokens"] >= 1
            log = (tmp_path / f"{member.name}.log").read_text()
            if member.base:  # the LoRA really loaded on the base
                assert "lora" in log.lower(), log[-2000:]
    finally:
        for p in procs:
            os.killpg(p.pid, 15)
            p.wait(timeout=30)
