"""The pool as agents call it: the official OpenAI Python SDK as the client, real llama.cpp members
serving the real SmolLM2-135M-Instruct (imported offline, exported to GGUF q8_0).

* a three-step agent loop (call, result, call, result, answer) in each fusion mode, streamed and
  not, with a ``developer`` turn and content given as parts;
* ``chat.completions.parse`` with a pydantic ``response_format``;
* invalid requests answered 400 before any member is called (stub members count their requests);
* a long request the client gives up on stops costing member time;
* 200 concurrent multi-turn tool requests with one member SIGKILLed mid-run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import openai
import pytest
from pydantic import BaseModel

from finetune.contracts.schema import recipe_from_tree
from finetune.pool.build import build_pool
from finetune.pool.config import PoolSpec
from tests.pool.conftest import generative_judge, minilm_judge, tiny_pool
from tests.pool.stubs import Stub
from tests.pool.test_gateway import gateway, serving, write_manifest

TOOLS = [{"type": "function", "function": {"name": "read_file", "description": "Read a file of the repository.",
                                           "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                                                          "required": ["path"]}}},
         {"type": "function", "function": {"name": "run_tests", "description": "Run the tests of one file.",
                                           "parameters": {"type": "object", "properties": {"target": {"type": "string"}},
                                                          "required": ["target"]}}}]
START = [{"role": "developer", "content": "You are a coding agent. Use the tools."},
         {"role": "user", "content": [{"type": "text", "text": "Read utils.py, "}, {"type": "text", "text": "then run its tests."}]}]
RESULTS = {"read_file": "def add(a, b):\n    return a + b\n", "run_tests": "3 passed in 0.01s"}


def forced(name: str) -> dict:
    return {"type": "function", "function": {"name": name}}


@pytest.fixture(scope="module")
def smol_root(smollm2, tmp_path_factory):
    """SmolLM2 exported to GGUF q8_0 (verified against the HF model) and the MiniLM reward judge."""
    from finetune.export.run import export

    root = tmp_path_factory.mktemp("smol-pool")
    export(smollm2, ["gguf-q8_0"], root / "export", say=lambda _: None)
    minilm_judge(root)
    return root


def smol_pool(root, path, mode: str, member_timeout_s: float = 60.0):
    """Two SmolLM2 members (greedy and sampled); a generative SmolLM2 judge for merge and debate."""
    spec = recipe_from_tree({
        "name": "smol-pool", "judge": {"run": str(root / "judge")},
        "members": [{"name": "greedy", "export": str(root / "export"), "sampling": {"temperature": 0.0}},
                    {"name": "sampled", "export": str(root / "export"), "sampling": {"temperature": 0.7}}],
        "fusion": {"mode": "best_of", "quorum": 1, "member_timeout_s": member_timeout_s}}, "test", PoolSpec)
    manifest = build_pool(spec, path).model_dump()
    if mode != "best_of":
        manifest["judge"] = generative_judge(manifest["members"][0]["artifacts"][0], max_length=2048)
    manifest["fusion"]["mode"] = mode
    path.write_text(json.dumps(manifest))
    return path


def _collect(stream) -> tuple[dict, str, object]:
    """A streamed answer put back together the way agent frameworks do: message, finish reason, usage."""
    content, calls, finish, usage = "", {}, None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for c in choice.delta.tool_calls or []:
                slot = calls.setdefault(c.index, {"id": c.id, "type": "function",
                                                  "function": {"name": c.function.name, "arguments": ""}})
                slot["function"]["arguments"] += c.function.arguments or ""
            finish = choice.finish_reason or finish
    message = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message, finish, usage


def agent_loop(client, stream: bool) -> list[tuple[dict, str, object]]:
    """call read_file, its result, call run_tests, its result, then the answer (no tools)."""
    messages, steps = list(START), []
    for choice in (forced("read_file"), forced("run_tests"), "none"):
        kw = dict(model="smol-pool", messages=messages, tools=TOOLS, tool_choice=choice, max_tokens=96)
        if stream:
            message, finish, usage = _collect(client.chat.completions.create(
                **kw, stream=True, stream_options={"include_usage": True}))
        else:
            out = client.chat.completions.create(**kw)
            message = out.choices[0].message.model_dump(exclude_none=True, include={"role", "content", "tool_calls"})
            finish, usage = out.choices[0].finish_reason, out.usage
        steps.append((message, finish, usage))
        messages.append(message)
        for call in message.get("tool_calls") or []:
            messages.append({"role": "tool", "tool_call_id": call["id"],
                             "content": RESULTS[call["function"]["name"]]})
    return steps


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["best_of", "merge", "debate"])
def test_agent_loop_through_the_openai_sdk_in_each_mode(mode, smol_root, tmp_path):
    with gateway(smol_pool(smol_root, tmp_path / "pool" / "manifest.json", mode)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
        runs = {stream: agent_loop(client, stream) for stream in (False, True)}
        assert client.models.retrieve("smol-pool").id == "smol-pool"
        assert client.models.retrieve("greedy").owned_by == "finetune-pool-member"
    for stream, steps in runs.items():
        for (message, finish, usage), name in zip(steps[:2], ("read_file", "run_tests"), strict=True):
            assert finish == "tool_calls", (mode, stream, message)
            call = message["tool_calls"][0]["function"]
            assert call["name"] == name and isinstance(json.loads(call["arguments"]), dict)
            assert usage.prompt_tokens > 50 and usage.completion_tokens > 0
            assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        message, finish, usage = steps[2]
        assert finish in ("stop", "length") and "tool_calls" not in message and message["content"].strip()
        # no tool schemas in this prompt (tool_choice none), but the two calls and their results
        assert usage.prompt_tokens > 100 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.slow
def test_structured_output_and_a_request_given_up_on(smol_root, tmp_path):
    class Summary(BaseModel):
        language: str
        functions: int

    with serving(smol_pool(smol_root, tmp_path / "pool" / "manifest.json", "best_of")) as (url, pool):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
        parsed = client.chat.completions.parse(
            model="smol-pool", max_tokens=60, response_format=Summary,
            messages=[{"role": "user", "content": "Describe utils.py (one Python function) as JSON."}])
        limit = pool.max_tokens_limit
        with pytest.raises(openai.BadRequestError, match=f"max_tokens: must be at most {limit}"):
            client.chat.completions.create(model="smol-pool", max_tokens=limit + 1, messages=START)
        # The longest request the pool accepts (a schema of 1000 numbers keeps the members writing
        # to the end), abandoned by its client after 2 s ...
        numbers = {"type": "object", "properties": {"n": {"type": "array", "items": {"type": "integer"},
                                                          "minItems": 1000}}, "required": ["n"]}
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{url}/v1/chat/completions", timeout=2, json={
                "model": "smol-pool", "max_tokens": limit, "temperature": 0,
                "response_format": {"type": "json_schema", "json_schema": {"name": "numbers", "schema": numbers}},
                "messages": [{"role": "user", "content": "Count from 1 to 5000."}]})
        time.sleep(0.5)  # the gateway notices within 0.25 s and closes its member streams
        start = time.perf_counter()
        short = client.chat.completions.create(model="smol-pool", max_tokens=2, messages=START)
        took = time.perf_counter() - start
        metrics = httpx.get(f"{url}/metrics").text
    assert isinstance(parsed.choices[0].message.parsed, Summary)
    # ... ... then a short one: limit tokens take about member_timeout_s / 2 = 30 s to generate, so
    # had the members gone on writing for the abandoned request, it would have waited for them.
    assert short.choices[0].finish_reason == "length" and took < 12, took
    assert 'finetune_pool_requests_total{model="smol-pool",status="499"} 1.0' in metrics


def test_invalid_requests_are_400_before_any_member_is_called(tmp_path):
    a, b, judge = Stub(content="fine"), Stub(content="also fine"), Stub(content='{"winner": "A"}')
    try:
        with gateway(write_manifest(tmp_path / "m.json", {"a": a, "b": b}, judge, quorum=2),
                     max_tokens_limit=512) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")  # default retries: 2

            def refused(expect: str, **kw):
                with pytest.raises(openai.BadRequestError) as err:
                    client.chat.completions.create(**{"model": "pool", "messages": START, **kw})
                assert err.value.status_code == 400 and expect in err.value.message, err.value.message
                return err.value

            refused("messages[0].role: 'hacker' is not one of", messages=[{"role": "hacker", "content": "x"}])
            refused("messages[0].content: Input should be a valid string", messages=[{"role": "user", "content": 5}])
            refused("temperature: Input should be a valid number", temperature="hot")
            assert refused("temperature: Input should be less than or equal to 2", temperature=5).param == "temperature"
            refused("model: String should have at least 1 character", model="")
            refused("n: the pool returns one fused answer", n=2)
            refused("logprobs:", logprobs=True, top_logprobs=3)
            refused("max_tokens: must be at most 512", max_tokens=4096)
            refused("logit_bias: token ids differ between members", logit_bias={"42": 5})
            refused("top_k: unrecognized request argument", extra_body={"top_k": 5})
            refused("this pool is text-only", messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}}]}])
            refused("messages[2].tool_call_id: 'call_9' answers no tool call", messages=[
                *START, {"role": "tool", "tool_call_id": "call_9", "content": "3 passed"}])
            refused("tool_choice.function.name: 'delete_repo' is not among the tools", tools=TOOLS,
                    tool_choice=forced("delete_repo"))
            refused("response_format.json_schema.schema: required", response_format={
                "type": "json_schema", "json_schema": {"name": "x"}})
            for raw, expect in [(b'{"model": "pool", "messages": [{"role": "user", "content": "\\ud800 hi"}]}',
                                 "messages[0].content: text with a lone UTF-16 surrogate"),
                                (b'{"model": "pool", "messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
                                 "body: not valid JSON (nested too deep)"),
                                (b"[1, 2]", "body: Input should be an object")]:
                r = httpx.post(f"{url}/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
                assert r.status_code == 400 and expect in r.json()["error"]["message"], r.text
            with pytest.raises(openai.NotFoundError, match="Responses API"):
                client.responses.create(model="pool", input="hi")
            ok = client.chat.completions.create(model="pool", messages=START)
    finally:
        for s in (a, b, judge):
            s.close()
    assert ok.choices[0].message.content in ("fine", "also fine")
    assert len(a.requests) == len(b.requests) == 1  # only the valid request reached the members
    sent = a.requests[0]["body"]["messages"]
    assert sent == START  # endpoint members get the wire form as it is


def test_key_in_the_query_string_is_not_logged(tmp_path, caplog):
    import logging

    a, judge = Stub(content="fine"), Stub(content='{"winner": "A"}')
    caplog.set_level(logging.INFO, logger="finetune.pool.access")
    try:
        with gateway(write_manifest(tmp_path / "m.json", {"a": a}, judge), api_key="sk-secret-42") as url:
            r = httpx.post(f"{url}/v1/chat/completions?api_key=sk-secret-42",
                           json={"model": "pool", "messages": START})
    finally:
        a.close()
        judge.close()
    assert r.status_code == 401
    assert '"POST /v1/chat/completions" 401' in caplog.text and "sk-secret-42" not in caplog.text


@pytest.mark.slow
def test_200_concurrent_tool_loops_with_a_member_killed(artifacts, tmp_path):
    """Real llama.cpp members (tiny exported models); one is SIGKILLed mid-run. Every request is
    answered by the other; health reports the dead member down, the pool starts it again, and the
    next request has both members' answers."""
    path, _ = tiny_pool(artifacts, tmp_path, max_tokens=8, quorum=1, member_timeout_s=120)
    history = [{"role": "user", "content": "Read utils.py."},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function", "function": {"name": "read_file",
                                                                    "arguments": '{"path": "utils.py"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": RESULTS["read_file"]}]

    async def burst(url, pool, n=200):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600,
                                    http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=n)))
        seen = []  # coder-lora's health while the burst runs

        async def one(i):
            return await client.chat.completions.with_raw_response.create(
                model="tiny-pool", tools=TOOLS, messages=[*history, {"role": "user", "content": f"Now test {i}."}])

        async def watch(until):
            async with httpx.AsyncClient() as http:
                while not until.done():
                    seen.append((await http.get(f"{url}/healthz", timeout=10)).json()["members"]["coder-lora"])
                    await asyncio.sleep(0.1)
        tasks = asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
        watcher = asyncio.create_task(watch(tasks))
        await asyncio.sleep(1.0)
        os.kill(pool.local.procs[1].pid, signal.SIGKILL)  # coder-lora's server
        answers = await tasks
        await watcher
        return answers, seen

    with serving(path) as (url, pool):
        raw, seen = asyncio.run(burst(url, pool))
        deadline = time.time() + 120
        while httpx.get(f"{url}/healthz").json()["members"]["coder-lora"] != "up":
            assert time.time() < deadline, "the killed member was not started again"
            time.sleep(0.2)
        health = httpx.get(f"{url}/healthz").json()
        after = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
            "model": "tiny-pool", "tools": TOOLS, "messages": [*history, {"role": "user", "content": "Again."}]})
    problems = [r for r in raw if isinstance(r, Exception) or r.status_code != 200]
    assert not problems, problems[:3]
    statuses = []
    for r in raw:
        out = r.parse()  # the SDK's own parser: a malformed answer raises here
        assert out.choices[0].finish_reason in ("stop", "length", "tool_calls")
        assert out.usage.total_tokens > 0
        statuses.append({m["member"]: m["status"] for m in json.loads(r.text)["fusion"]["members"]})
    assert all(s["coder"] == "ok" for s in statuses)
    assert any(s["coder-lora"] == "error" for s in statuses)  # the killed member's failures are reported
    assert any(state.startswith("down") for state in seen), seen
    assert health["restarts"] == {"coder-lora": 1} and health["members"] == {"coder": "up", "coder-lora": "up"}
    assert {m["member"]: m["status"] for m in after.json()["fusion"]["members"]} == {"coder": "ok", "coder-lora": "ok"}
