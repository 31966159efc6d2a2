"""End to end: the gateway starts real llama.cpp servers (llama-cpp-python) for an exported tiny
pool (a merged GGUF member, a base GGUF + GGUF LoRA member, and a GGUF generative judge or the
MiniLM reward judge) and answers through the HTTP API in each fusion mode."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.pool.conftest import generative_judge, tiny_pool
from tests.pool.test_gateway import gateway


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["best_of", "merge", "debate"])
def test_each_mode_through_real_llamacpp_servers(mode, artifacts, tmp_path):
    path, manifest = tiny_pool(artifacts, tmp_path, max_tokens=12, quorum=2, member_timeout_s=60)
    if mode != "best_of":  # merge needs a generative judge: the tiny merged GGUF plays one
        gguf = next(a for a in manifest["members"][0]["artifacts"] if a["format"] == "gguf-q8_0")
        manifest["judge"] = generative_judge(gguf, max_length=1024)
    manifest["fusion"]["mode"] = mode
    path.write_text(json.dumps(manifest))
    with gateway(path) as url:
        health = httpx.get(f"{url}/healthz", timeout=10).json()
        r = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
            "model": "tiny-pool", "max_tokens": 12, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a Python function that reverses a list."}]})
    assert health == {"status": "ok", "quorum": 2, "members": {"coder": "up", "coder-lora": "up"}, "restarts": {}}
    assert r.status_code == 200, r.text
    out = r.json()
    f = out["fusion"]
    assert [m["member"] for m in f["members"] if m["round"] == 0] == ["coder", "coder-lora"]
    assert all(m["status"] == "ok" and m["usage"]["completion_tokens"] >= 1 for m in f["members"])
    assert f["total_latency_s"] >= max(m["latency_s"] for m in f["members"])
    if mode == "best_of":
        assert set(f["judge"]["scores"]) == {"coder", "coder-lora"} and f["winner"] in f["judge"]["scores"]
    elif mode == "merge":
        assert f["winner"] in ("merged", "coder", "coder-lora") and "latency_s" in f["judge"]
    else:
        assert sorted({m["round"] for m in f["members"]}) == [0, 1]
    assert isinstance(out["choices"][0]["message"]["content"], str)
