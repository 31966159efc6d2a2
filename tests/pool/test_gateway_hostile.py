"""The second hostile probe's attacks (issue 29), each through the real gateway over HTTP with stub
members: host files sent out through the request's checks, a flood of check output, a schema whose
pattern backtracks, requests that can never succeed, a web page posting to a keyless gateway or
rebinding its name, a body framed twice, and a stream the client left. The attacks whose outcome
depends on real llama.cpp members are in test_gateway_llamacpp.py."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import httpx

from finetune.judge.sandbox import REASONS
from tests.pool.test_gateway import ASK, TOOLS, _post, serving, write_manifest

PASSWD = open("/etc/passwd").read()
# The probe's payload: a check that prints a host file, hex-encoded so it looks like an error name.
EXFILTRATE = ("assert __import__('os').write(1, (open('/etc/passwd').read()[:64].encode().hex()+'Error\\n').encode())"
              " and __import__('os')._exit(3)")


def _judged(stubs, tmp_path, **members):
    return write_manifest(tmp_path / "m.json", members, stubs(content='{"winner": "A"}'))


def _reason_ok(reason: str) -> bool:
    return reason in REASONS or re.fullmatch(r"error:[A-Za-z]+", reason) is not None


def test_host_files_do_not_leave_through_the_requests_checks(stubs, tmp_path):
    a = stubs(content="```python\ndef f(x):\n    return x\n```")
    b = stubs(content="```python\ndef f(x):\n    return -x\n```")
    flood = stubs(content="```python\nwhile True:\n    print('x' * 65536)\n```")  # ~1 GB in its 5 s
    ask = [{"role": "user", "content": f"Write f.\n{EXFILTRATE}\nassert f(1) == 1"}]
    with serving(_judged(stubs, tmp_path, a=a, b=b, flood=flood)) as (url, _):
        r = _post(url, {"messages": ask})
        listing = _post(url, {"messages": [{"role": "user", "content": "Write f.\nassert __import__('os').write(1, "
                              "(','.join(__import__('os').listdir('/'))+'Error\\n').encode()) and f(1) == 1"}]})
    assert r.status_code == 200, r.text
    execution = r.json()["fusion"]["execution"]
    assert set(execution) == {"a", "b", "flood"} and all(_reason_ok(v) for v in execution.values()), execution
    assert execution["flood"] == "output_limit" and execution["a"] == "error:FileNotFoundError"
    leaked = PASSWD[:64].encode().hex()
    assert leaked[:16] not in r.text and PASSWD[:16] not in r.text
    # a listing of the sandbox's root (what Python needs, nothing of the host's) never reaches the client
    assert listing.status_code == 200 and all(_reason_ok(v) for v in listing.json()["fusion"]["execution"].values())
    assert "usr" not in json.dumps(listing.json()["fusion"]["execution"])


def test_a_backtracking_pattern_cannot_freeze_the_gateway(stubs, tmp_path):
    # ^(.*)*x$ on 40 characters is ~2^40 steps for a backtracking engine; the probe froze the whole
    # gateway (its /healthz too) for 21.9 s at 27 characters.
    answer = json.dumps("a" * 40)
    schema = {"type": "string", "minLength": 40, "maxLength": 40, "not": {"pattern": "^(.*)*x$"}}
    body = {"messages": ASK, "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}}
    with serving(_judged(stubs, tmp_path, a=stubs(content=answer), b=stubs(content=answer))) as (url, _):
        health: list[float] = []

        def probe():
            start = time.perf_counter()
            httpx.get(f"{url}/healthz", timeout=30)
            health.append(time.perf_counter() - start)
        start = time.perf_counter()
        checker = threading.Thread(target=probe)
        checker.start()
        r = _post(url, body)
        checker.join()
        took = time.perf_counter() - start
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == answer, r.text
    assert took < 10 and health[0] < 5, (took, health)


def test_requests_that_can_never_succeed_are_400_before_any_member_is_called(stubs, tmp_path):
    a = stubs(content="fine")
    params = TOOLS[0]["function"]["parameters"]
    dangling = {**params, "properties": {"path": {"$ref": "#/$defs/missing"}}}

    def tools(parameters):
        return [{"type": "function", "function": {"name": "read_file", "parameters": parameters}}]
    hopeless = {
        "dangling $ref": {"tools": tools(dangling)},
        "required: 5": {"tools": tools({**params, "required": 5})},
        "unknown type": {"tools": tools({**params, "properties": {"path": {"type": "strnig"}}})},
        "empty stop": {"stop": ""},
        "five stops": {"stop": ["a", "b", "c", "d", "e"]},
        "80,000 stops": {"stop": ["s"] * 80_000},
    }
    with serving(_judged(stubs, tmp_path, a=a), max_body_bytes=4 << 20) as (url, _):
        answers = {k: _post(url, {"messages": ASK, **v}) for k, v in hopeless.items()}
        assert not a.requests, "a member was called"
        # A tool without parameters is valid in OpenAI's API: a function of no arguments.
        fine = _post(url, {"messages": ASK, "tools": [{"type": "function", "function": {"name": "now"}}]})
    assert {k: r.status_code for k, r in answers.items()} == dict.fromkeys(hopeless, 400)
    assert "tools[0].function.parameters" in answers["dangling $ref"].json()["error"]["message"]
    assert fine.status_code == 200, fine.text
    sent = a.requests[0]["body"]["tools"][0]["function"]
    assert sent["parameters"] == {"type": "object", "properties": {}}


def test_a_web_page_cannot_use_a_keyless_gateway(stubs, tmp_path):
    a = stubs(content="fine")
    manifest = _judged(stubs, tmp_path, a=a)
    body = json.dumps({"model": "pool", "messages": ASK})
    with serving(manifest) as (url, _):
        here = url.removeprefix("http://")

        def post(**headers):
            return httpx.post(f"{url}/v1/chat/completions", content=body, timeout=30,
                              headers={"Content-Type": "application/json", **headers})
        rebound = post(Host=f"rebind.attacker.example:{here.split(':')[1]}")  # DNS rebinding: a name, not an address
        cross = post(Origin="http://attacker.example")
        simple = httpx.post(f"{url}/v1/chat/completions", content=body, timeout=30,  # no CORS preflight for this
                            headers={"Content-Type": "text/plain"})
        assert not a.requests
        same = post(Origin=f"http://{here}")
        local = post(Host=f"localhost:{here.split(':')[1]}")
    assert (rebound.status_code, cross.status_code, simple.status_code) == (403, 403, 415)
    assert "--api-key-env" in rebound.json()["error"]["message"]
    assert same.status_code == 200 and local.status_code == 200
    with serving(manifest, api_key="k") as (url, _):  # with a key, any name may be used
        named = httpx.post(f"{url}/v1/chat/completions", content=body, timeout=30,
                           headers={"Content-Type": "application/json", "Authorization": "Bearer k",
                                    "Host": "pool.internal.example"})
    assert named.status_code == 200, named.text


def test_a_body_framed_twice_is_refused(stubs, tmp_path):
    a = stubs(content="fine")
    body = json.dumps({"model": "pool", "messages": ASK}).encode()
    with serving(_judged(stubs, tmp_path, a=a)) as (url, _):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
                      % (host.encode(), port.encode(), len(body), len(body), body))
            reply = s.recv(65536)
    assert reply.split(b"\r\n")[0] in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 400 "), reply[:300]
    assert not a.requests


def test_a_stream_the_client_left_is_counted_as_499_not_200(stubs, tmp_path):
    slow = stubs(content=" ".join(["word"] * 40), pace=0.1)
    with serving(_judged(stubs, tmp_path, a=slow)) as (url, _):
        with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=30,
                          json={"model": "a", "stream": True, "messages": ASK}) as r:
            for line in r.iter_lines():
                if '"content": "word' in line:
                    break  # leave after the first word
        time.sleep(1.0)
        metrics = httpx.get(f"{url}/metrics").text
    assert 'finetune_pool_http_responses_total{route="/v1/chat/completions",status="499"} 1.0' in metrics
    assert 'route="/v1/chat/completions",status="200"' not in metrics
