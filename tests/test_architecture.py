"""The package's shape: import contracts, light verbs without the ML stack, an installable wheel
that finds its own data, one version."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import finetune
from tests.conftest import REPO

BIN = Path(sys.executable).parent


def endpoint_manifest(folder: Path) -> Path:
    """A pool whose members and generative judge are OpenAI endpoints (none has to be up)."""
    weights = folder / "judge" / "judge.gguf"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"GGUF")
    endpoint = {"url": "http://127.0.0.1:9/v1", "model": "m"}
    manifest = {
        "schema_version": 1, "name": "remote-pool", "created": "2026-12-03T00:00:00Z", "toolkit_version": "0",
        "tool_call_format": "hermes",
        "members": [{"name": n, "endpoint": endpoint, "tool_call_format": "hermes", "context_length": 4096}
                    for n in ("a", "b")],
        "judge": {"kind": "generative", "max_length": 512, "endpoint": endpoint,
                  "artifacts": [{"format": "gguf-q8_0", "root": "judge", "path": "judge.gguf",
                                 "files": [{"path": "judge.gguf", "bytes": 4,
                                            "sha256": hashlib.sha256(b"GGUF").hexdigest()}]}],
                  "templates": {"system": "Judge.", "task": "{task}", "candidate": "{letter}: {answer}",
                                "merge": "Merge."}},
    }
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def test_import_contracts_hold():
    """Layers (a stage imports only those below it; contracts import no stage) and no torch,
    transformers or datasets under finetune.contracts and finetune.pool (pyproject.toml)."""
    res = subprocess.run([str(BIN / "lint-imports")], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 kept, 0 broken" in res.stdout


def test_light_verbs_and_an_endpoint_gateway_run_without_the_ml_stack(tmp_path):
    manifest = endpoint_manifest(tmp_path)
    script = textwrap.dedent(f"""
        import sys
        from fastapi.testclient import TestClient
        from finetune.cli import main
        for argv in (["validate", "recipes/tiny/traces.yaml"], ["validate", "recipes/judge/minilm-reward.yaml"],
                     ["validate", "recipes/eval/demo.yaml"], ["pool", "verify", {str(manifest)!r}],
                     ["pool", "render", {str(manifest)!r}, "--backend", "vllm", "--out", {str(tmp_path / "r")!r}]):
            assert main(argv) == 0, argv
        from finetune.pool.gateway import create_app
        from finetune.pool.runtime import Pool
        with TestClient(create_app(Pool({str(manifest)!r})), base_url="http://127.0.0.1") as client:
            assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["remote-pool", "a", "b"]
        print("HEAVY", sorted(m for m in ("torch", "transformers", "datasets") if m in sys.modules))
    """)
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout, res.stdout


@pytest.mark.slow
def test_the_wheel_installs_and_verifies_a_manifest_with_its_own_schema(tmp_path):
    """Built and installed like a user's `pip install`, outside the repository: `pool verify` finds
    the schema shipped as package data, and the installed metadata has the package's version."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path / "dist"),
                    str(REPO)], check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("finetune-*.whl"))
    assert wheel.name.startswith(f"finetune-{finetune.__version__}-")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    manifest = endpoint_manifest(tmp_path / "pool")
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import finetune; print(finetune.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where
    res = subprocess.run([sys.executable, "-m", "finetune", "pool", "verify", str(manifest)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "schema v1 ok; 1 file(s) match" in res.stdout
    # Without the schema file the installed package says what is wrong instead of passing.
    (site / "finetune" / "pool" / "fusion-manifest.schema.json").unlink()
    res = subprocess.run([sys.executable, "-m", "finetune", "pool", "verify", str(manifest)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "installed without its manifest schema" in res.stderr, res.stderr
