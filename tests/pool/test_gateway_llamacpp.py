"""End to end: the gateway starts real llama.cpp servers (llama-cpp-python) for an exported tiny
pool (a merged GGUF member, a base GGUF + GGUF LoRA member, and a GGUF generative judge or the
MiniLM reward judge) and answers through the HTTP API in each fusion mode."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.pool.conftest import generative_judge, tiny_pool
from tests.pool.test_gateway import serving


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["best_of", "merge", "debate"])
def test_each_mode_through_real_llamacpp_servers(mode, artifacts, tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_SECRET", "sk-gateway-only")  # must never reach a member's environment
    path, manifest = tiny_pool(artifacts, tmp_path, max_tokens=12, quorum=2, member_timeout_s=60)
    if mode != "best_of":  # merge needs a generative judge: the tiny merged GGUF plays one
        gguf = next(a for a in manifest["members"][0]["artifacts"] if a["format"] == "gguf-q8_0")
        manifest["judge"] = generative_judge(gguf, max_length=1024)
    manifest["fusion"]["mode"] = mode
    path.write_text(json.dumps(manifest))
    ask = [{"role": "user", "content": "Write a Python function that reverses a list."}]
    with serving(path) as (url, pool):
        health = httpx.get(f"{url}/healthz", timeout=10).json()
        r = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
            "model": "tiny-pool", "max_tokens": 12, "temperature": 0, "messages": ask})
        if mode == "best_of":
            _members_only_behind_the_gateway(url, pool, ask)
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


def _members_only_behind_the_gateway(url, pool, ask):
    """The llama.cpp servers start with a clean environment and a per-run key: another local process
    cannot reach them around the gateway; a member used directly streams its tokens."""
    for proc in pool.local.procs:
        env = dict(x.split("=", 1) for x in open(f"/proc/{proc.pid}/environ").read().split("\0") if "=" in x)
        assert "GATEWAY_SECRET" not in env and env["API_KEY"] == pool.local.key and len(pool.local.key) >= 32
        assert pool.local.key not in open(f"/proc/{proc.pid}/cmdline").read()
    member = pool.endpoints["coder"].url
    body = {"model": "coder", "max_tokens": 4, "messages": ask}
    assert httpx.post(f"{member}/chat/completions", json=body, timeout=60).status_code == 401
    assert httpx.post(f"{member}/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {pool.local.key}"}).status_code == 200
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=120, json={
            "model": "coder", "max_tokens": 8, "temperature": 0, "stream": True, "messages": ask}) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant" and 1 <= len(pieces) <= 8 and all(pieces)
    assert chunks[-1]["choices"][0]["finish_reason"] == ("length" if len(pieces) == 8 else "stop")
    assert chunks[-1]["usage"]["completion_tokens"] == len(pieces) and chunks[-1]["usage"]["prompt_tokens"] > 10
