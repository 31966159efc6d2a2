"""The gateway as a hostile client meets it: bodies counted as they arrive (chunked too), slow
heads, slow bodies and idle sockets closed, the key's scheme in any case, no OpenAPI document,
every response counted; and what it answers: finish reasons passed on, usage labelled, streams
that start at once (a member used directly: token by token)."""

from __future__ import annotations

import json
import socket
import time

import httpx

from benchmarks.gateway_probe import chunked_body, closed_after, connect
from tests.pool.stubs import Stub
from tests.pool.test_gateway import ASK, _post, serving, write_manifest

KEY = "sk-limits-test"


def _response(sock: socket.socket) -> bytes:
    """One whole HTTP response (head and Content-Length body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return head


def _judged(stubs, tmp_path, **members: Stub):
    return write_manifest(tmp_path / "m.json", members, stubs(content='{"winner": "A"}'))


def test_a_chunked_body_is_counted_as_it_arrives(stubs, tmp_path):
    with serving(_judged(stubs, tmp_path, a=stubs()), api_key=KEY, max_body_bytes=1 << 20) as (url, _):
        sent, reply = chunked_body(url, f"Authorization: Bearer {KEY}\r\n", 300)
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert sent < 16 << 20, f"{sent >> 20} MiB sent before the 413"  # 1 MiB limit, plus socket buffers
    assert 'finetune_pool_http_responses_total{route="/v1/chat/completions",status="413"} 1.0' in metrics


def test_slow_heads_slow_bodies_and_idle_sockets_are_closed(stubs, tmp_path):
    with serving(_judged(stubs, tmp_path, a=stubs()), header_timeout_s=1.0, body_timeout_s=1.0) as (url, _):
        idle = connect(url)  # connects and says nothing
        assert closed_after(idle, 8) < 4
        slow = connect(url)  # a request head one byte at a time
        start = time.perf_counter()
        try:
            for byte in b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n":
                slow.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass
        assert time.perf_counter() - start + closed_after(slow, 8) < 5
        body = connect(url)  # a whole head, then 10 of the 100 body bytes it announced
        body.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n0123456789")
        body.settimeout(8)
        assert body.recv(4096).startswith(b"HTTP/1.1 408")
        kept = connect(url)  # keep-alive: a second request is served, then the idle socket closes
        for _ in range(2):
            kept.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert _response(kept).startswith(b"HTTP/1.1 200")
        assert closed_after(kept, 8) < 4
        assert _post(url, {"messages": ASK}).status_code == 200  # the gateway itself is fine


def test_key_scheme_openapi_and_every_status_counted(stubs, tmp_path):
    with serving(_judged(stubs, tmp_path, a=stubs()), api_key=KEY) as (url, _):
        assert _post(url, {"messages": ASK}, headers={"Authorization": f"bearer {KEY}"}).status_code == 200
        assert _post(url, {"messages": ASK}, headers={"Authorization": f"BEARER  {KEY}"}).status_code == 200
        assert _post(url, {"messages": ASK}, headers={"Authorization": f"Basic {KEY}"}).status_code == 401
        assert _post(url, {"messages": ASK}, headers={"Authorization": KEY}).status_code == 401
        auth = {"Authorization": f"Bearer {KEY}"}
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert httpx.get(f"{url}{path}", headers=auth).status_code == 404
        assert _post(url, {"model": "nope", "messages": ASK}, headers=auth).status_code == 404
        assert _post(url, {"messages": "hi"}, headers=auth).status_code == 400
        metrics = httpx.get(f"{url}/metrics", headers=auth).text
    counted = {line.split("{")[1].split("}")[0]: float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("finetune_pool_http_responses_total")}
    assert counted['route="/v1/chat/completions",status="200"'] == 2
    assert counted['route="/v1/chat/completions",status="401"'] == 2
    assert counted['route="/v1/chat/completions",status="404"'] == 1
    assert counted['route="/v1/chat/completions",status="400"'] == 1
    assert counted['route="other",status="404"'] == 3  # unknown paths are one label, not one each


def test_finish_reason_and_usage_say_what_happened(stubs, tmp_path):
    a, b = stubs(content="cut short", finish="length"), stubs(content="whole answer")
    judge = stubs(content='{"winner": "A"}')
    with serving(write_manifest(tmp_path / "m.json", {"a": a, "b": b}, judge, quorum=2)) as (url, _):
        out = _post(url, {"messages": ASK}).json()
        direct = _post(url, {"model": "a", "messages": ASK}).json()
    assert out["fusion"]["winner"] == "a" and out["choices"][0]["finish_reason"] == "length"
    assert direct["choices"][0]["finish_reason"] == "length"
    assert out["usage"] == {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}  # both members
    usage = out["fusion"]["usage"]
    assert usage["calls"] == 2 and usage["winner"] == {"prompt_tokens": 5, "completion_tokens": 3}
    assert "sum of all 2 member calls" in usage["scope"]


def _timed_events(url: str, body: dict) -> list[tuple[float, str]]:
    start, out = time.perf_counter(), []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line:
                out.append((time.perf_counter() - start, line))
    return out


def test_streams_start_at_once_and_a_member_streams_token_by_token(stubs, tmp_path):
    slow = stubs(content="one two three four five", delay=1.5, pace=0.3)
    judge = stubs(content='{"winner": "A"}')
    manifest = write_manifest(tmp_path / "m.json", {"slow": slow}, judge)
    with serving(manifest, heartbeat_s=0.3) as (url, _):
        fused = _timed_events(url, {"model": "pool", "messages": ASK, "stream": True})
        direct = _timed_events(url, {"model": "slow", "messages": ASK, "stream": True,
                                     "stream_options": {"include_usage": True}})
    role_at, role = fused[0]
    assert role_at < 1.0 and json.loads(role[6:])["choices"][0]["delta"]["role"] == "assistant"
    assert any(line.startswith(":") for _, line in fused)  # keep-alive comments while the members work
    data = [json.loads(line[6:]) for _, line in fused if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in data) == "one two three four five"
    assert len({c["id"] for c in data}) == 1 and data[-1]["fusion"]["winner"] == "slow"
    words = [(t, json.loads(line[6:])) for t, line in direct if line.startswith("data: {")]
    pieces = [(t, c["choices"][0]["delta"]["content"]) for t, c in words if c["choices"]
              and c["choices"][0]["delta"].get("content")]
    assert [p for _, p in pieces] == ["one ", "two ", "three ", "four ", "five"]
    assert pieces[-1][0] - pieces[0][0] > 0.8  # sent as generated, 0.3 s apart, not all at the end
    assert direct[0][0] < 1.0 and words[-2][1]["choices"][0]["finish_reason"] == "stop"
    assert words[-1][1]["choices"] == [] and words[-1][1]["usage"]["completion_tokens"] == 5
    assert direct[-1][1] == "data: [DONE]"


def test_a_failure_after_the_stream_started_is_an_error_event(stubs, tmp_path):
    broken = stubs(status=500)
    with serving(_judged(stubs, tmp_path, a=broken)) as (url, _):
        fused = _timed_events(url, {"model": "pool", "messages": ASK, "stream": True})
        direct = _timed_events(url, {"model": "a", "messages": ASK, "stream": True})
    for events in (fused, direct):
        error = json.loads(events[-2][1][6:])["error"]
        assert error["type"] in ("quorum_not_met", "upstream_error") and "500" in error["message"]
        assert events[-1][1] == "data: [DONE]"


def test_a_merged_answer_streams_as_the_judge_writes_it(stubs, tmp_path):
    a, b = stubs(content="def f(xs): return xs[::-1]"), stubs(content="def f(xs): return list(reversed(xs))")
    words = "merged answer written one word at a time by the judge"
    judge = stubs(content=words, pace=0.3)
    request = {"model": "pool", "messages": ASK, "stream": True}
    with serving(write_manifest(tmp_path / "m.json", {"a": a, "b": b}, judge, quorum=2, mode="merge")) as (url, _):
        events = _timed_events(url, request)
    data = [(t, json.loads(line[6:])) for t, line in events if line.startswith("data: {")]
    pieces = [(t, c["choices"][0]["delta"]["content"]) for t, c in data if c["choices"][0]["delta"].get("content")]
    assert "".join(p for _, p in pieces) == words and len(pieces) == len(words.split())
    assert pieces[-1][0] - pieces[0][0] > 2.0  # as the judge wrote them, 0.3 s apart
    assert data[-1][1]["fusion"]["winner"] == "merged" and data[-1][1]["choices"][0]["finish_reason"] == "stop"
    assert judge.requests[0]["body"]["stream"] is True

    # A judge cut off by the timeout after it began: the client keeps what it was sent, marked cut short.
    judge = stubs(content=words, pace=0.3)
    manifest = write_manifest(tmp_path / "cut.json", {"a": a, "b": b}, judge, quorum=2, mode="merge",
                              member_timeout_s=1.5)
    with serving(manifest) as (url, _):
        events = _timed_events(url, request)
    data = [json.loads(line[6:]) for _, line in events if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in data)
    assert 0 < len(text) < len(words) and words.startswith(text)
    assert data[-1]["choices"][0]["finish_reason"] == "length" and "partial" in data[-1]["fusion"]["judge"]
