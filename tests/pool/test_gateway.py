"""The gateway over HTTP with small local OpenAI-compatible stub servers as members and judge:
each mode, quorum and faults, early finish, tool-call validation, streaming, security limits,
health and metrics, and 200 concurrent requests with a member down."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from finetune import FinetuneError
from finetune.contracts.judging import SYSTEM
from finetune.pool.build import folder_artifact
from finetune.pool.gateway import create_app, server_config
from finetune.pool.local import free_port
from finetune.pool.manifest import SCHEMA_VERSION
from finetune.pool.place import Placement
from finetune.pool.runtime import Pool
from tests.pool.stubs import Stub, call

TOOLS = [{"type": "function", "function": {"name": "read_file", "description": "Read a file.", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}, "start": {"type": "integer"}},
    "required": ["path"]}}}]
ASK = [{"role": "user", "content": "Show me utils.py."}]


def write_manifest(path: Path, members: dict, judge=None, reward_run: Path | None = None, temperature=None,
                   **fusion) -> Path:
    """A pool manifest whose members (and generative judge) are the given stubs' endpoints; a reward
    judge's run is brought into the manifest's folder as `pool build` does."""
    fake = {"format": "gguf-q8_0", "uri": "https://example.invalid/judge.gguf", "path": "judge.gguf",
            "files": [{"path": "judge.gguf", "bytes": 1, "sha256": "0" * 64}]}
    if reward_run is not None:
        placement = Placement()
        model = folder_artifact("safetensors", reward_run, "model", placement)
        placement.bring_in([model], path.parent)
        judge_spec = {"kind": "reward_model", "max_length": 256, "templates": {"input": "sentence_pair"},
                      "temperature": temperature, "artifacts": [model.model_dump()]}
    else:
        judge_spec = {"kind": "generative", "max_length": 2048, "artifacts": [fake],
                      "endpoint": {"url": judge.url, "model": "judge"},
                      "templates": {"system": SYSTEM, "task": "Task:\n{task}", "candidate": "Candidate {letter}:\n{answer}",
                                    "merge": "Write one answer from the candidates."}}
    manifest = {"schema_version": SCHEMA_VERSION, "name": "pool", "created": "2026-11-28T00:00:00Z",
                "toolkit_version": "test", "tool_call_format": "hermes",
                "members": [{"name": n, "tool_call_format": "hermes", "context_length": 4096, "cost": 1.0 + i,
                             "endpoint": {"url": s.url if isinstance(s, Stub) else s, "model": n,
                                          "api_key_env": None}} for i, (n, s) in enumerate(members.items())],
                "judge": judge_spec, "fusion": {"member_timeout_s": 5.0, **fusion}}
    path.write_text(json.dumps(manifest))
    return path


@contextmanager
def serving(manifest: Path, header_timeout_s: float = 10.0, **kw):
    """The gateway on a free port, in a thread, configured as `pool serve` runs it: yields its URL
    and its Pool."""
    import uvicorn

    port = free_port()
    pool = Pool(manifest)
    server = uvicorn.Server(server_config(create_app(pool, **kw), "127.0.0.1", port, header_timeout_s,
                                          log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 180
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "gateway did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", pool
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@contextmanager
def gateway(manifest: Path, **kw):
    with serving(manifest, **kw) as (url, _pool):
        yield url


def _post(url, body, **kw):
    return httpx.post(f"{url}/v1/chat/completions", json={"model": "pool", **body}, timeout=60, **kw)


def test_best_of_generative_judge_picks_the_named_candidate(stubs, tmp_path):
    a, b = stubs(content="def f(xs): return xs[::-1]"), stubs(content="def f(xs): return xs")
    judge = stubs(content='{"winner": "B", "scores": {"A": 2, "B": 9}, "rationale": "B is right."}')
    with gateway(write_manifest(tmp_path / "m.json", {"a": a, "b": b}, judge, quorum=2)) as url:
        r = _post(url, {"model": "pool", "messages": ASK, "temperature": 0.1})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "chat.completion" and out["model"] == "pool"
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "def f(xs): return xs"}
    f = out["fusion"]
    assert f["winner"] == "b" and f["mode"] == "best_of" and f["judge"]["kind"] == "generative"
    assert [m["status"] for m in f["members"]] == ["ok", "ok"] and out["usage"]["total_tokens"] == 16
    verdict_request = judge.requests[0]["body"]["messages"]
    assert "Candidate A:\ndef f(xs): return xs[::-1]" in verdict_request[1]["content"]
    assert a.requests[0]["body"]["temperature"] == 0.1  # request parameters reach members


def test_best_of_reward_model_judge_scores_each_answer(stubs, artifacts, tmp_path):
    from finetune.judge.score import RewardJudge

    a, b = stubs(content="return a + b"), stubs(content="return a - b")
    manifest = write_manifest(tmp_path / "m.json", {"a": a, "b": b}, reward_run=artifacts / "judge", temperature=0.5)
    with gateway(manifest) as url:
        out = _post(url, {"messages": ASK}).json()
    scores = out["fusion"]["judge"]["scores"]
    judge = RewardJudge(artifacts / "judge" / "model", 256)
    expected = judge.score([ASK, ASK], [[{"role": "assistant", "content": "return a + b"}],
                                        [{"role": "assistant", "content": "return a - b"}]])
    assert scores == pytest.approx({"a": expected[0], "b": expected[1]}, abs=1e-3)
    assert out["fusion"]["winner"] == max(scores, key=scores.get)
    # The pick's probability: softmax of the scores at the manifest's fitted temperature.
    gap = abs(expected[0] - expected[1]) / 0.5
    assert out["fusion"]["judge"]["confidence"] == pytest.approx(1 / (1 + math.exp(-gap)), abs=2e-3)
    assert out["fusion"]["judge"]["calibrated"] is True


def test_quorum_faults_and_clear_503(stubs, tmp_path):
    ok = stubs(content="fine")
    slow, erroring, garbage = stubs(delay=3.0), stubs(status=500), stubs(raw=b"<html>oops</html>")
    judge = stubs(content='{"winner": "A"}')
    members = {"ok": ok, "slow": slow, "erroring": erroring, "garbage": garbage, "down": f"http://127.0.0.1:{free_port()}/v1"}
    with gateway(write_manifest(tmp_path / "q2.json", members, judge, quorum=2, member_timeout_s=1.0)) as url:
        r = _post(url, {"messages": ASK})
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["type"] == "quorum_not_met" and "1 usable answer(s), quorum 2" in err["message"]
    statuses = {m["member"]: m["status"] for m in err["fusion"]["members"]}
    assert statuses == {"ok": "ok", "slow": "timeout", "erroring": "error", "garbage": "garbage", "down": "error"}
    assert "HTTP 500" in err["message"] and "within 1 s" in err["message"]
    with gateway(write_manifest(tmp_path / "q1.json", members, judge, quorum=1, member_timeout_s=1.0)) as url:
        r = _post(url, {"messages": ASK})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "fine"
    assert r.json()["fusion"]["judge"]["skipped"] == "one valid answer"
    with gateway(write_manifest(tmp_path / "ba.json", members, judge, quorum=3, below_quorum="best_available",
                                member_timeout_s=1.0)) as url:
        r = _post(url, {"messages": ASK})
    assert r.status_code == 200 and r.json()["fusion"]["below_quorum"] is True


def test_candidates_failing_the_requests_own_doctests_and_asserts_are_not_judged(stubs, tmp_path):
    ask = [{"role": "user", "content": "Write clamp(x, lo, hi).\n>>> clamp(5, 0, 3)\n3\nassert clamp(-1, 0, 3) == 0"}]
    wrong = stubs(content="```python\ndef clamp(x, lo, hi):\n    return min(x, hi)\n```")
    right = stubs(content="```python\ndef clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n```")
    also_right = stubs(content="def clamp(x, lo, hi):\n    return sorted((lo, x, hi))[1]\n")
    prose = stubs(content="Use min and max.")
    judge = stubs(content='{"winner": "B"}')
    members = {"wrong": wrong, "right": right, "also_right": also_right, "prose": prose}
    with gateway(write_manifest(tmp_path / "m.json", members, judge)) as url:
        out = _post(url, {"messages": ask}).json()
    assert out["fusion"]["execution"] == {"wrong": "test_failed", "right": "passed", "also_right": "passed",
                                          "prose": "no_program"}
    shown = judge.requests[0]["body"]["messages"][1]["content"]  # only the two that passed
    assert "max(lo, min(x, hi))" in shown and "sorted((lo, x, hi))" in shown
    assert "return min(x, hi)" not in shown and "Candidate C" not in shown
    assert out["fusion"]["winner"] == "also_right"
    # One passes: it wins without the judge. None passes: all are judged. Switched off: nothing runs.
    with gateway(write_manifest(tmp_path / "one.json", {"wrong": wrong, "right": right}, judge)) as url:
        out = _post(url, {"messages": ask}).json()
    assert out["fusion"]["winner"] == "right" and len(judge.requests) == 1
    assert out["fusion"]["judge"]["skipped"] == "one answer passed the request's doctests and asserts"
    with gateway(write_manifest(tmp_path / "none.json", {"wrong": wrong, "prose": prose}, judge)) as url:
        out = _post(url, {"messages": ask}).json()
    assert out["fusion"]["execution"] == {"wrong": "test_failed", "prose": "no_program"}
    assert out["fusion"]["winner"] == "prose" and len(judge.requests) == 2
    with gateway(write_manifest(tmp_path / "off.json", {"wrong": wrong, "right": right}, judge,
                                execute_checks=False)) as url:
        out = _post(url, {"messages": ask}).json()
    assert "execution" not in out["fusion"] and out["fusion"]["winner"] == "right" and len(judge.requests) == 3
    # merge: only what passed is merged; one passing answer is taken as it is.
    merger = stubs(reply=lambda body: "merged " + str(body["messages"][1]["content"].count("Candidate ")))
    with gateway(write_manifest(tmp_path / "merge.json", members, merger, mode="merge")) as url:
        out = _post(url, {"messages": ask}).json()
    assert out["choices"][0]["message"]["content"] == "merged 2" and out["fusion"]["winner"] == "merged"
    with gateway(write_manifest(tmp_path / "merge1.json", {"wrong": wrong, "right": right}, merger, mode="merge")) as url:
        out = _post(url, {"messages": ask}).json()
    assert out["fusion"]["winner"] == "right" and "merge_skipped" not in out["fusion"]


def test_without_bubblewrap_nothing_runs_and_the_record_says_so(stubs, tmp_path, monkeypatch):
    from finetune.pool.request import parse_request

    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on the PATH
    a, b = stubs(content="def f():\n    return 1\n"), stubs(content="def f():\n    return 2\n")
    judge = stubs(content='{"winner": "B"}')
    body = {"model": "pool", "messages": [{"role": "user", "content": "Write f.\nassert f() == 1"}]}

    async def ask():
        async with Pool(write_manifest(tmp_path / "m.json", {"a": a, "b": b}, judge)) as pool:
            return await pool.complete(parse_request(json.dumps(body).encode()))
    out = asyncio.run(ask())
    assert out["fusion"]["execution"] == {"skipped": "no sandbox: executing candidate code needs bubblewrap"}
    assert out["fusion"]["winner"] == "b"  # judged as before: the failing answer was not dropped


def test_early_finish_cancels_stragglers(stubs, tmp_path):
    fast1, fast2, straggler = stubs(content="a"), stubs(content="b"), stubs(delay=4.0)
    judge = stubs(content='{"winner": "A"}')
    manifest = write_manifest(tmp_path / "m.json", {"f1": fast1, "f2": fast2, "slow": straggler}, judge,
                              quorum=2, early_finish_grace_s=0.3, member_timeout_s=10.0)
    with gateway(manifest) as url:
        start = time.perf_counter()
        r = _post(url, {"messages": ASK})
        took = time.perf_counter() - start
    assert r.status_code == 200 and took < 2.5, took
    statuses = {m["member"]: m["status"] for m in r.json()["fusion"]["members"]}
    assert statuses == {"f1": "ok", "f2": "ok", "slow": "cancelled"}


def test_invalid_tool_calls_never_win_and_calls_are_not_merged(stubs, tmp_path):
    good = stubs(content="", tool_calls=[call("read_file", path="utils.py")])
    missing = stubs(content="", tool_calls=[call("read_file", start=3)])
    unknown = stubs(content="", tool_calls=[call("delete_file", path="utils.py")])
    in_text = stubs(content='<tool_call>\n{"name": "read_file", "arguments": {"path": 7}}\n</tool_call>')
    judge = stubs(content='{"winner": "B"}')  # would name a bad one if the bad ones were candidates
    members = {"missing": missing, "good": good, "unknown": unknown, "in_text": in_text}
    with gateway(write_manifest(tmp_path / "m.json", members, judge, mode="merge")) as url:
        r = _post(url, {"messages": ASK, "tools": TOOLS})
    out = r.json()
    statuses = {m["member"]: (m["status"], m["error"]) for m in out["fusion"]["members"]}
    assert statuses["good"] == ("ok", None)
    assert statuses["missing"][0] == statuses["unknown"][0] == statuses["in_text"][0] == "invalid_tool_call"
    assert "missing_required_argument" in statuses["missing"][1] and "unknown_tool" in statuses["unknown"][1]
    assert "wrong_argument_type" in statuses["in_text"][1]  # parsed from the hermes text, then checked
    message = out["choices"][0]
    assert message["finish_reason"] == "tool_calls" and out["fusion"]["winner"] == "good"
    assert message["message"]["tool_calls"][0]["function"] == {"name": "read_file", "arguments": '{"path": "utils.py"}'}
    assert judge.requests == []  # one valid answer: nothing to judge, nothing merged


def test_merge_writes_one_answer_and_debate_shows_members_each_other(stubs, tmp_path):
    a, b = stubs(content="use reversed()"), stubs(content="use slicing [::-1]")
    judge = stubs(reply=lambda body: "merged answer" if body["messages"][0]["content"].startswith("Write one")
                  else '{"winner": "A"}')
    with gateway(write_manifest(tmp_path / "merge.json", {"a": a, "b": b}, judge, mode="merge")) as url:
        out = _post(url, {"messages": ASK}).json()
    assert out["choices"][0]["message"]["content"] == "merged answer" and out["fusion"]["winner"] == "merged"
    merge_prompt = judge.requests[-1]["body"]["messages"][1]["content"]
    assert "Candidate A:\nuse reversed()" in merge_prompt and "Candidate B:\nuse slicing [::-1]" in merge_prompt
    with gateway(write_manifest(tmp_path / "debate.json", {"a": a, "b": b}, judge, mode="debate",
                                debate_rounds=2)) as url:
        out = _post(url, {"messages": ASK}).json()
    rounds = [(m["member"], m["round"]) for m in out["fusion"]["members"]]
    assert rounds == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    revision = a.requests[-1]["body"]["messages"]
    assert revision[-2] == {"role": "assistant", "content": "use reversed()"}
    assert "Answer from b:\nuse slicing [::-1]" in revision[-1]["content"] and "Answer from a" not in revision[-1]["content"]
    assert out["fusion"]["winner"] == "a"


def test_self_fusion_samples_one_member_n_ways_and_the_judge_picks_a_sample(stubs, tmp_path):
    seen = []
    a = stubs(reply=lambda body: seen.append((body["seed"], body["temperature"])) or f"answer {body['seed']}")
    judge = stubs(content='{"winner": "C"}')
    path = write_manifest(tmp_path / "m.json", {"a": a}, judge)
    manifest = json.loads(path.read_text())
    manifest["members"][0].update(samples=3, sampling={"temperature": 0.7})
    path.write_text(json.dumps(manifest))
    with gateway(path) as url:
        out = _post(url, {"messages": ASK, "temperature": 0.0, "seed": 9}).json()
    # the request's temperature and seed do not apply: seeds 1..3 at the member's own temperature
    assert sorted(seen) == [(1, 0.7), (2, 0.7), (3, 0.7)]
    assert [m["member"] for m in out["fusion"]["members"]] == ["a#1", "a#2", "a#3"]
    assert out["fusion"]["winner"] == "a#3" and out["choices"][0]["message"]["content"] == "answer 3"
    verdict = judge.requests[-1]["body"]["messages"][1]["content"]
    assert "Candidate A:\nanswer 1" in verdict and "Candidate C:\nanswer 3" in verdict
    manifest["members"][0]["sampling"]["temperature"] = 0.0
    path.write_text(json.dumps(manifest))
    with pytest.raises(FinetuneError, match="samples 3 at temperature 0 are one answer"):
        Pool(path)


def test_streaming_sends_the_fused_answer_as_sse(stubs, tmp_path):
    a = stubs(content="x" * 150)
    judge = stubs(content='{"winner": "A"}')
    with gateway(write_manifest(tmp_path / "m.json", {"a": a}, judge)) as url:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={"model": "pool", "messages": ASK, "stream": True},
                          timeout=30) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "x" * 150
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["fusion"]["winner"] == "a"
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def test_key_limits_unknown_models_and_the_key_never_logged(stubs, tmp_path, caplog, monkeypatch):
    a = stubs(content="hi")
    judge = stubs(content='{"winner": "A"}')
    key = "sk-test-very-secret-123"
    caplog.set_level(logging.DEBUG)
    with gateway(write_manifest(tmp_path / "m.json", {"a": a}, judge), api_key=key, max_body_bytes=4096,
                 max_tokens_limit=512) as url:
        auth = {"Authorization": f"Bearer {key}"}
        assert _post(url, {"messages": ASK}).status_code == 401
        assert _post(url, {"messages": ASK}, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert _post(url, {"messages": ASK}, headers=auth).status_code == 200
        big = {"messages": [{"role": "user", "content": "x" * 5000}]}
        assert _post(url, big, headers=auth).status_code == 413
        r = _post(url, {"messages": ASK, "max_tokens": 100000}, headers=auth)
        assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
        assert _post(url, {"messages": "hi"}, headers=auth).status_code == 400
        r = httpx.post(f"{url}/v1/chat/completions", content=b"{not json",
                       headers={**auth, "Content-Type": "application/json"})
        assert r.status_code == 400
        r = _post(url, {"model": "http://169.254.169.254/latest", "messages": ASK}, headers=auth)
        assert r.status_code == 404 and "no model" in r.json()["error"]["message"]
        direct = _post(url, {"model": "a", "messages": ASK}, headers=auth)  # one member, for direct use
        assert direct.status_code == 200 and direct.json()["model"] == "a" and "fusion" not in direct.json()
        models = httpx.get(f"{url}/v1/models", headers=auth).json()
        assert [m["id"] for m in models["data"]] == ["pool", "a"]
    manifest = json.loads((tmp_path / "m.json").read_text())
    manifest.update(tool_call_format="none")  # a pool built with `tools: false`
    (tmp_path / "text-only.json").write_text(json.dumps(manifest))
    with gateway(tmp_path / "text-only.json") as url:
        r = _post(url, {"messages": ASK, "tools": TOOLS})
        assert r.status_code == 400 and "tools: false" in r.json()["error"]["message"]
    assert key not in caplog.text
    assert all(req["authorization"] is None for req in a.requests)  # the client's key is not forwarded


def test_health_and_metrics(stubs, tmp_path):
    a = stubs(content="hi")
    judge = stubs(content='{"winner": "A"}')
    members = {"a": a, "b": stubs(status=500), "down": f"http://127.0.0.1:{free_port()}/v1"}
    with gateway(write_manifest(tmp_path / "m.json", members, judge, quorum=1)) as url:
        health = httpx.get(f"{url}/healthz").json()
        _post(url, {"messages": ASK})
        text = httpx.get(f"{url}/metrics").text
    assert health["status"] == "ok" and health["members"]["a"] == "up" and health["members"]["down"].startswith("down")
    assert 'finetune_pool_requests_total{model="pool",status="200"} 1.0' in text
    assert 'finetune_pool_member_failures_total{member="b",reason="error"} 1.0' in text
    assert 'finetune_pool_member_latency_seconds_count{member="a"} 1.0' in text


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_200_concurrent_requests_with_a_member_down(stubs, tmp_path):
    a, b = stubs(content="alpha", delay=0.05), stubs(content="beta", delay=0.1)
    judge = stubs(content='{"winner": "B"}')
    members = {"a": a, "b": b, "down": f"http://127.0.0.1:{free_port()}/v1"}

    async def burst(url, n):
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=n)) as client:
            return await asyncio.gather(*(client.post(f"{url}/v1/chat/completions", json={
                "model": "pool", "messages": [{"role": "user", "content": f"question {i}"}]}) for i in range(n)))

    # Stubs, gateway and clients share this process (and its GIL) on 2 cores: a generous member
    # timeout keeps the slowest stub in; what is tested is that every request is answered.
    with gateway(write_manifest(tmp_path / "m.json", members, judge, quorum=2, member_timeout_s=60.0)) as url:
        asyncio.run(burst(url, 200))  # warm up: connection pools, first allocations
        before = _rss_mb()
        for _ in range(2):
            responses = asyncio.run(burst(url, 200))
            assert [r.status_code for r in responses] == [200] * 200
            for r in responses:
                out = r.json()
                assert out["choices"][0]["message"]["content"] == "beta" and out["fusion"]["winner"] == "b"
                assert {m["member"]: m["status"] for m in out["fusion"]["members"]}["down"] == "error"
        grown = _rss_mb() - before
    assert grown < 60, f"RSS grew {grown:.0f} MB over 400 requests"


def test_agreement_counts_the_same_calls_whatever_their_ids_and_argument_order():
    from finetune.pool.runtime import Answer, agreement

    def call(name, args, cid):
        return {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}

    same_a = Answer("a", "ok", tool_calls=[call("read_file", {"path": "u.py", "start": 1}, "x")])
    same_b = Answer("b", "ok", tool_calls=[call("read_file", {"start": 1, "path": "u.py"}, "y")])
    other = Answer("c", "ok", tool_calls=[call("read_file", {"path": "v.py"}, "z")])
    text = Answer("d", "ok", content="read_file u.py")
    assert agreement([same_a, same_b, other, text]) == [pytest.approx(1 / 3), pytest.approx(1 / 3), 0.0, 0.0]
    assert agreement([same_a, same_b]) == [0.0, 0.0]  # two agreeing answers are one answer
