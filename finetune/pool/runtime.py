"""The fusion runtime: one request in, every member asked at once, the judge decides, one answer out.

``Pool`` loads a manifest, starts llama.cpp servers (llama-cpp-python's) for members that are
local GGUF artifacts and talks to the others at their manifest ``endpoint`` over HTTP (httpx);
nothing else is ever called. ``await pool.complete(job)`` (a request checked by
:mod:`finetune.pool.request`) returns an OpenAI ``chat.completion`` with a ``fusion`` record:
every member's answer, status, latency and usage, which answers passed the request's own
doctests and asserts in the sandbox (only those are judged, when some pass), the judge's scores
(with ``confidence``, the calibrated probability that its pick is right) or verdict, the mode and
the total time. The completion's ``usage`` is the sum over every member call of the request (what
the pool spent); ``fusion.usage`` says so and gives the winner's own counts. Its ``finish_reason``
is the chosen answer's (``length`` included). ``pool.relay(member, job)`` streams one member's
answer as it is generated (direct use). A reward-model pick among three or more answers is
hybrid: the judge's probability plus the agreement of the other answers' tool calls
(:func:`agreement`).

* **Members in parallel.** Each call is bounded by ``fusion.member_timeout_s``; a local member is
  read as a stream and its ``max_tokens`` capped at what it writes within that time, so a call
  given up on stops its generation. A member that errors, times out, returns garbage, an invalid
  tool call or an answer outside the ``response_format`` is dropped and reported with the reason.
  Once the quorum has answered, ``early_finish_grace_s`` bounds the wait for the rest, and
  stragglers are cancelled. Below the quorum, :class:`QuorumError` is raised (``fail``), or
  whatever came back is used (``best_available``, flagged).
* **Tool calls.** They are read from the wire ``tool_calls``, or parsed from the text in the
  pool's format (llama.cpp's server returns it as text). They are validated against the request's
  tool schemas with the same checker ``data prepare`` uses. An invalid call never wins, and tool
  calls are chosen, never merged.
* **Modes.** ``best_of``: a reward-model judge scores each answer, or a generative judge names a
  winner. ``merge``: a generative judge writes one answer from the candidates. ``debate``: for
  ``debate_rounds`` rounds each member sees the others' latest answers and may revise, then the
  judge picks.

Example::

    async with Pool(Path("runs/pool/manifest.json")) as pool:
        out = await pool.complete(parse_request(b'{"model": "demo-pool", "messages": '
                                                b'[{"role": "user", "content": "Reverse a list in Python."}]}'))
        print(out["choices"][0]["message"]["content"], out["fusion"]["winner"])
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from finetune import FinetuneError, RecordError
from finetune.contracts.chat import TEMPLATES
from finetune.contracts.judging import canonical_call, judge_prompt, parse_verdict, verdict_prompt
from finetune.contracts.toolcalls import check_call
from finetune.judge.execute import request_checks, run_checks
from finetune.judge.sandbox import Limits, Sandbox
from finetune.pool import schemas
from finetune.pool.local import LocalServers
from finetune.pool.manifest import Endpoint, Manifest, artifact_root, check_loaded, load_manifest
from finetune.pool.request import Job

log = logging.getLogger("finetune.pool.runtime")
# After a call to a local llama.cpp server is given up, how long it has to notice (it does at its next
# token: tens of ms) before it is taken to be working for nobody and is started again (~3 s for a
# small GGUF; the probe saw servers go on for 7-10 minutes when nothing stopped them).
STOP_GRACE_S = 2.0
FORMAT_CHECK_S = 2.0  # the most one answer's response_format check may take (RE2 keeps it linear)


class QuorumError(Exception):
    """Fewer valid answers than the quorum; ``record`` says what each member did."""

    def __init__(self, message: str, record: dict):
        super().__init__(message)
        self.record = record


@dataclass
class Answer:
    member: str
    status: str = "pending"  # ok | timeout | error | garbage | invalid_tool_call | invalid_format | cancelled
    content: str = ""
    tool_calls: list[dict] = field(default_factory=list)  # OpenAI wire form
    latency_s: float = 0.0
    usage: dict = field(default_factory=dict)
    error: str | None = None
    round: int = 0
    finish_reason: str = "stop"  # stop | length (tool calls are said by the completion)


def _wire_tools(tools: list[dict] | None) -> dict[str, dict]:
    """name -> {name, parameters} from OpenAI request tools."""
    out = {}
    for t in tools or []:
        f = t.get("function", t)
        out[f["name"]] = {"name": f["name"], "parameters": f.get("parameters") or {"type": "object"}}
    return out


def read_answer(answer: Answer, data, tool_format: str, job: Job) -> Answer:
    """Fill ``answer`` from a member's chat.completion body: text, tool calls (wire or parsed from
    the text), usage, finish reason; the status says why an answer cannot be used: its calls must
    fit the request's tool schemas and ``tool_choice``, its text the ``response_format`` schema."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        content = message.get("content") or ""
        calls = list(message.get("tool_calls") or [])
        if not isinstance(content, str):
            raise TypeError("content is not text")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        answer.status, answer.error = "garbage", f"not a chat completion ({type(exc).__name__}: {exc})"
        return answer
    answer.finish_reason = "length" if choice.get("finish_reason") == "length" else "stop"
    # With tool_choice "none" the member was shown no tools: what it writes is its text answer.
    if not calls and job.tools and job.tool_choice != "none" and tool_format in TEMPLATES:
        try:
            content, parsed = TEMPLATES[tool_format].parse(content)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            answer.status, answer.error = "invalid_tool_call", f"unreadable tool call in the text ({exc})"
            return answer
        calls = [{"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                  "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}} for c in parsed]
    answer.content, answer.tool_calls = content, calls
    answer.usage = data.get("usage") or {}
    problem = _answer_problem(content, calls, job)
    if problem:
        answer.status, answer.error = problem
        return answer
    answer.status = "ok"
    return answer


def _answer_problem(content: str, calls: list[dict], job: Job) -> tuple[str, str] | None:
    """Why an answer does not fit the request, as (status, reason), or None."""
    choice = job.tool_choice
    if calls:
        schemas = _wire_tools(job.tools)
        if not schemas:
            return "invalid_tool_call", "tool call, but the request offers no tools"
        if choice == "none":
            return "invalid_tool_call", "tool call, but tool_choice is 'none'"
        if len(calls) > 1 and not job.parallel_tool_calls:
            return "invalid_tool_call", f"{len(calls)} tool calls, but parallel_tool_calls is false"
        for c in calls:
            f = c.get("function") or {}
            if isinstance(choice, dict) and f.get("name") != choice["function"]["name"]:
                return "invalid_tool_call", f"call to {f.get('name')!r}, but tool_choice names " \
                                            f"{choice['function']['name']!r}"
            try:
                check_call({"name": f.get("name"), "arguments": f.get("arguments")}, schemas, "tool call")
            except RecordError as exc:
                return "invalid_tool_call", f"{exc.reason}: {exc}"
        return None
    if choice == "required" or isinstance(choice, dict):
        return "invalid_tool_call", "no tool call, but tool_choice requires one"
    if not content.strip():
        return "garbage", "empty answer"
    if job.schema is not None:
        return _format_problem(content, job.schema)
    return None


def _format_problem(content: str, schema: dict) -> tuple[str, str] | None:
    """An answer that must be JSON (``response_format``) and match the schema. Patterns are matched
    by RE2 (linear time: a backtracking ``^(.*)*x$`` once froze the whole gateway for 21.9 s on 27
    characters) and the whole check stops after ``FORMAT_CHECK_S``; the caller runs it off the
    event loop."""
    import jsonschema

    try:
        value = json.loads(content)
    except (json.JSONDecodeError, RecursionError) as exc:
        return "invalid_format", f"response_format asks for JSON; the answer is not JSON ({getattr(exc, 'msg', exc)})"
    if not schema:
        return None if isinstance(value, dict) else ("invalid_format", "json_object asks for a JSON object")
    try:
        with schemas.time_limit(FORMAT_CHECK_S):
            error = jsonschema.exceptions.best_match(schemas.validator(schema).iter_errors(value))
    except TimeoutError:
        return "invalid_format", f"the answer could not be checked against the response_format schema within " \
                                 f"{FORMAT_CHECK_S:g} s"
    except RecursionError:  # a recursive schema ({"items": {"$ref": "#"}}) and a deeply nested answer
        return "invalid_format", "the answer is nested too deeply to check against the response_format schema"
    if error is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path) or "the answer"
        return "invalid_format", f"does not match the response_format schema at {where.lstrip('.')}: {error.message}"
    return None


def calls_key(answer: Answer) -> str | None:
    """What a tool-call answer does, whatever its call ids and argument order (None: a text answer)."""
    if not answer.tool_calls:
        return None
    calls = [canonical_call(c) for c in answer.tool_calls]
    return json.dumps(sorted([c["name"], json.dumps(c["arguments"], sort_keys=True)] for c in calls))


def agreement(candidates: list[Answer]) -> list[float]:
    """Per candidate, the share of the other candidates that make exactly the same tool calls (0 for
    text answers): a verifiable signal, since independent answers rarely agree on a wrong call."""
    keys = [calls_key(a) for a in candidates]
    if len(keys) < 3:  # with two, agreeing answers are the same answer: nothing to weigh
        return [0.0] * len(keys)
    return [0.0 if k is None else (keys.count(k) - 1) / (len(keys) - 1) for k in keys]


def hybrid_pick(scores: list[float], temperature: float | None, candidates: list[Answer]
                ) -> tuple[int, list[float], list[float]]:
    """A reward judge's pick: (winner, the judge's probabilities, the call agreement). The
    probabilities are the softmax of the scores at the fitted temperature; the winner has the
    highest probability plus share of other answers making the same tool calls (ties: score)."""
    top = max(scores)
    weights = [math.exp((s - top) / (temperature or 1.0)) for s in scores]
    probs = [w / sum(weights) for w in weights]
    votes = agreement(candidates)
    best = max(range(len(candidates)), key=lambda i: (probs[i] + votes[i], scores[i]))
    return best, probs, votes


def as_judged(answer: Answer) -> list[dict]:
    """An answer as the judge reads it: its text with calls rendered as <tool_call> lines."""
    return judge_prompt([], [{"role": "assistant", "content": answer.content, "tool_calls": answer.tool_calls}])


class Pool:
    """A running fusion pool (see the module docstring)."""

    def __init__(self, manifest_path: Path, manifest: Manifest | None = None):
        """``manifest`` replaces the file's content (a variant of it: another mode, fewer members);
        paths stay relative to ``manifest_path``'s folder. The files the pool loads are checked
        here, before anything starts (sizes and hashes, cached in the pool folder): a pool never
        serves a file that differs from its manifest or lies outside its folder."""
        self.manifest_path = Path(manifest_path)
        self.manifest: Manifest = manifest or load_manifest(self.manifest_path)
        check_loaded(self.manifest_path, self.manifest)
        self.clients: dict[str, httpx.AsyncClient] = {}
        self.endpoints: dict[str, Endpoint] = {m.name: m.endpoint for m in self.manifest.members if m.endpoint}
        self.judge_endpoint = self.manifest.judge.endpoint
        self.reward = None
        self.local = None  # LocalServers, when the manifest has local GGUF members
        self.ceilings: dict[str, int] = {}  # local member -> the most tokens it generates within the timeout
        self.supervisor: asyncio.Task | None = None  # restarts local servers that die
        self.box, self.no_box = None, None  # the sandbox for the request's checks, or why there is none
        self.heard: dict[str, float] = {}  # local member (or "judge") -> when its server last sent a chunk
        self.reapers: dict[str, asyncio.Task] = {}  # local server -> the check after a call was given up

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def start(self) -> None:
        """Start llama.cpp servers for local members (and a local generative judge), measure how many
        tokens each generates within the member timeout; load a reward judge."""
        m = self.manifest
        local = [x for x in m.members if x.endpoint is None]
        if local or (m.judge.kind == "generative" and m.judge.endpoint is None):
            self.local = LocalServers(m, self.manifest_path)
            # On this (the event loop's) thread, not a worker's: the servers' PR_SET_PDEATHSIG fires
            # when the thread that started them exits, and this one lives as long as the gateway.
            started = self.local.start()
            self.judge_endpoint = started.pop("judge", self.judge_endpoint)
            self.endpoints.update(started)
            for name in started:
                self.ceilings[name] = await self._ceiling(self.endpoints[name], name)
            if "judge" in self.local.counters:
                self.ceilings["judge"] = await self._ceiling(self.judge_endpoint, None)
            self.local.measure()
            self.supervisor = asyncio.create_task(self._supervise())
        if m.fusion.execute_checks:
            try:
                self.box = Sandbox(Limits(wall_seconds=5.0, cpu_seconds=5))  # bubblewrap only, never unsafe
            except FinetuneError as exc:
                self.no_box = str(exc).split(" (")[0]  # "no sandbox: executing candidate code needs bubblewrap"
                log.warning("fusion.execute_checks: %s; requests' doctests and asserts will not be run", exc)
        if m.judge.kind == "reward_model":
            from finetune.judge.score import RewardJudge

            art = next(a for a in m.judge.artifacts if a.format == "safetensors" and a.root)
            model_dir = artifact_root(self.manifest_path, art) / art.path
            self.reward = await asyncio.to_thread(RewardJudge, model_dir, m.judge.max_length)

    async def _supervise(self, every_s: float = 1.0) -> None:
        """Start a local server again when its process dies (requests meanwhile fail over to the
        other members, and health reports it down until it answers again), and when its memory has
        grown past its limit and it is idle (a request sent meanwhile waits for it, :meth:`_send`)."""
        while True:
            await asyncio.sleep(every_s)
            for name in self.local.revive():
                log.warning("the llama.cpp server for %s had exited; started it again", name)
            for who in self.local.grown():
                if await self.local.idle(who, 0.2):
                    i = self.local.serving[who]
                    log.warning("the llama.cpp server for %s holds %d MB, over its limit of %d MB; started it again",
                                who, self.local.rss(i) >> 20, self.local.rss_limit[i] >> 20)
                    self.local.restart(who)

    async def close(self) -> None:
        for task in list(self.reapers.values()):
            task.cancel()
        if self.supervisor is not None:
            self.supervisor.cancel()
            self.supervisor = None
        if self.local is not None:
            await asyncio.to_thread(self.local.stop)
        for client in self.clients.values():
            await client.aclose()
        self.clients = {}

    def http(self, url: str) -> httpx.AsyncClient:
        """The HTTP client for one server. One client (connection pool) per server: httpcore's pool
        scans all its connections for every request, which measured 22% of the gateway's CPU with one
        shared pool for four servers at 10 concurrent requests."""
        base = httpx.URL(url)
        key = f"{base.scheme}://{base.host}:{base.port}"
        if key not in self.clients:
            # Idle connections are dropped after 2 s: uvicorn-based servers (llama-cpp-python, vLLM,
            # SGLang) close theirs after 5 s, and httpx's default of 5 s races them into ReadErrors.
            self.clients[key] = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000, keepalive_expiry=2.0))
        return self.clients[key]

    @property
    def max_tokens_limit(self) -> int | None:
        """The most tokens every member can generate within ``member_timeout_s`` (local members are
        measured at start; endpoint members are trusted), or None when nothing was measured."""
        return min((v for k, v in self.ceilings.items() if k != "judge"), default=None)

    # -- calling models -------------------------------------------------------------------------

    def _headers(self, ep: Endpoint) -> dict:
        """A local server's per-run key, or the key an endpoint's ``api_key_env`` names (the client's
        own key is never forwarded)."""
        if self.local is not None and ep.url in self.local.urls:
            return {"Authorization": f"Bearer {self.local.key}"}
        return {"Authorization": f"Bearer {os.environ.get(ep.api_key_env, '')}"} if ep.api_key_env else {}

    async def _chat(self, ep: Endpoint, body: dict, timeout: float) -> dict:
        r = await self.http(ep.url).post(f"{ep.url.rstrip('/')}/chat/completions", json={**body, "model": ep.model},
                                         headers=self._headers(ep), timeout=timeout)
        r.raise_for_status()
        return r.json()

    async def _deltas(self, ep: Endpoint, body: dict, timeout: float, who: str | None = None):
        """A server's streamed answer as it comes: each ``(delta, finish_reason)`` of its
        chat.completion.chunk events, and ``(None, usage)`` for a chunk that carries usage. ``who``
        (a local server's member) notes when it last sent something (:meth:`_reap`)."""
        async with self.http(ep.url).stream("POST", f"{ep.url.rstrip('/')}/chat/completions",
                                            json={**body, "model": ep.model, "stream": True},
                                            headers=self._headers(ep), timeout=timeout) as r:
            if r.status_code != 200:
                await r.aread()
                r.raise_for_status()
            async for line in r.aiter_lines():
                if who is not None:
                    self.heard[who] = time.monotonic()
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    break
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    yield None, chunk["usage"]
                for choice in chunk.get("choices") or []:
                    yield choice.get("delta") or {}, choice.get("finish_reason")

    async def _chat_streamed(self, ep: Endpoint, body: dict, timeout: float, times: list | None = None,
                             on_text=None, who: str | None = None) -> dict:
        """A streamed answer returned as one chat.completion: a local llama.cpp server's (streamed
        so that giving up stops it: llama-cpp-python ends a streamed generation when its client goes
        away, but runs a plain request to the end), or a judge's whose text is wanted as it comes
        (``on_text`` is called with each piece). A llama.cpp stream carries no usage: completion
        tokens are counted (one chunk per token), prompt tokens by the caller
        (:class:`finetune.pool.local.PromptCounter`)."""
        content, calls, finish, tokens = [], {}, "stop", 0
        async for delta, finish_reason in self._deltas(ep, body, timeout, who):
            if delta is None:
                continue
            if delta.get("content"):
                content.append(delta["content"])
                tokens += 1
                if on_text is not None:
                    on_text(delta["content"])
            for c in delta.get("tool_calls") or []:
                slot = calls.setdefault(c.get("index", 0), {"id": None, "type": "function",
                                                            "function": {"name": "", "arguments": ""}})
                f = c.get("function") or {}
                slot["id"] = c.get("id") or slot["id"]
                slot["function"]["name"] = f.get("name") or slot["function"]["name"]
                slot["function"]["arguments"] += f.get("arguments") or ""
                tokens += 1
            if times is not None and (delta.get("content") or delta.get("tool_calls")):
                times.append(time.perf_counter())
            finish = finish_reason or finish
        message = {"role": "assistant", "content": "".join(content)}
        if calls:
            message["tool_calls"] = [calls[i] for i in sorted(calls)]
        return {"choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"completion_tokens": tokens}}

    async def _ceiling(self, ep: Endpoint, member: str | None) -> int:
        """Tokens a local member (or the judge) generates within the member timeout, from its decode
        speed on a short warm-up request, halved for prompt processing and other servers sharing the
        machine."""
        times: list[float] = []
        body = {"messages": [{"role": "user", "content": "Count from 1 to 100, separated by spaces."}],
                "max_tokens": 32, "temperature": 0.0}
        timeout = self.manifest.fusion.member_timeout_s
        try:
            await asyncio.wait_for(self._chat_streamed(ep, body, timeout, times), timeout)
        except (TimeoutError, httpx.HTTPError):
            pass
        if len(times) < 8:  # too few tokens to time (a very slow server): trust the manifest's settings
            return next((x.sampling.max_tokens for x in self.manifest.members if x.name == member), 1024)
        rate = (len(times) - 1) / max(times[-1] - times[0], 1e-6)
        return max(1, int(rate * timeout / 2))

    async def _send(self, who: str, ep: Endpoint, body: dict, on_text=None) -> dict:
        """One chat call within the member timeout. A local server (member or judge) is streamed, so
        that giving up stops it, and asked for no more tokens than it writes within the timeout; so
        is any server whose text is wanted as it comes (``on_text``); others get a plain request.
        A call cut short because the gateway itself restarted the server (:meth:`_reap`, memory)
        is asked once more, within the same timeout, unless some of its text was passed on already;
        a server that crashed fails its calls (the supervisor starts it again), and calls sent
        while it starts wait for it."""
        timeout = self.manifest.fusion.member_timeout_s
        if who not in self.ceilings and on_text is None:
            return await asyncio.wait_for(self._chat(ep, body, timeout), timeout)
        if who not in self.ceilings:
            return await asyncio.wait_for(self._chat_streamed(ep, body, timeout, on_text=on_text), timeout)
        body["max_tokens"] = min(body["max_tokens"], self.ceilings[who])
        said: list[str] = []
        heard = on_text if on_text is None else lambda piece: (said.append(piece), on_text(piece))
        async with asyncio.timeout(timeout):
            while True:
                await self.local.ready(who, timeout)
                generation = self.local.generation[who]
                try:
                    return await self._given_up_watch(who, self._chat_streamed(ep, body, timeout, on_text=heard,
                                                                               who=who))
                except httpx.TransportError:
                    if said or self.local.generation[who] == generation:
                        raise

    async def _given_up_watch(self, who: str, work):
        """Await a local server's ``work``; if it is given up (cancelled, timed out), check the
        server afterwards."""
        try:
            return await work
        except (asyncio.CancelledError, httpx.TimeoutException):
            self._given_up(who)
            raise

    def _given_up(self, who: str) -> None:
        """A call to a local server was given up: check the server in a moment (:meth:`_reap`)."""
        if who not in self.reapers:
            self.reapers[who] = asyncio.get_running_loop().create_task(self._reap(who))

    async def _reap(self, who: str, grace_s: float = STOP_GRACE_S) -> None:
        """After a call to a local server was given up: a streaming server notices the closed
        connection at its next token, so after ``grace_s`` it should be free again. If it is still
        busy and has sent nothing to anyone for ``grace_s`` (no live call is being answered), it is
        working for nobody: it is stopped and started again, so the next request is served."""
        try:
            await asyncio.sleep(grace_s)
            while not await self.local.idle(who, 1.0):
                if time.monotonic() - self.heard.get(who, 0.0) > grace_s:
                    log.warning("the llama.cpp server for %s was still busy %g s after its call was given up; "
                                "started it again", who, grace_s)
                    self.local.restart(who)
                    return
                await asyncio.sleep(0.5)
        finally:
            self.reapers.pop(who, None)

    async def context_problem(self, model: str, job: Job) -> str | None:
        """Why the request cannot fit, before any member is called: its prompt, counted with each
        local member's own template and tokenizer, leaves no room to generate in that member's
        context (llama.cpp would refuse it; endpoint members count for themselves). A pool is
        refused when fewer than its quorum of candidates could take the prompt."""
        if self.local is None:
            return None
        names = [model] if model != self.manifest.name else [x.name for x in self.manifest.members]
        over = {}
        for name in names:
            if name in self.local.counters:
                n = await self._prompt_tokens(name, job, self._body(name, job))
                if n is not None and n >= self.local.contexts[name]:
                    over[name] = (n, self.local.contexts[name])
        if not over:
            return None
        fit = sum(1 for c in self.candidates() if c.partition("#")[0] in names and c.partition("#")[0] not in over)
        if model == self.manifest.name and fit >= self.manifest.fusion.quorum:
            return None
        return "messages: the prompt does not fit: " + "; ".join(
            f"{name}: {n} prompt tokens, context {ctx}" for name, (n, ctx) in over.items()) + \
            "; send a shorter conversation"

    async def _prompt_tokens(self, member: str, job: Job, body: dict, turns=None) -> int | None:
        """A local member's prompt tokens for ``body``, counted once per request (the context check
        and the usage both need them); debate ``turns`` are a conversation of their own."""
        if turns is not None:
            return await asyncio.to_thread(self.local.counters[member], body)
        if member not in job.prompt_tokens:
            job.prompt_tokens[member] = await asyncio.to_thread(self.local.counters[member], body)
        return job.prompt_tokens[member]

    def candidates(self) -> list[str]:
        """The answers each request asks for: every member, and ``NAME#k`` for each of the ``samples``
        of a self-fusion member."""
        return [x.name if x.samples == 1 else f"{x.name}#{k}" for x in self.manifest.members
                for k in range(1, x.samples + 1)]

    def _body(self, candidate: str, job: Job, turns: tuple[list[dict], list[dict]] | None = None) -> dict:
        """What one member is sent: its sampling defaults, the request's parameters, the tools, the
        response format; a local server gets the normalised conversation, an endpoint the wire form."""
        member, _, sample = candidate.partition("#")
        spec = next(x for x in self.manifest.members if x.name == member)
        messages, wire = turns or (job.messages, job.wire)
        streamed = member in self.ceilings
        body = {"messages": messages if streamed else wire, "temperature": spec.sampling.temperature,
                "top_p": spec.sampling.top_p, "max_tokens": spec.sampling.max_tokens,
                **({"stop": spec.sampling.stop} if spec.sampling.stop else {}), **job.params}
        if sample:  # self-fusion: the member's own temperature, one seed per sample
            body.update(temperature=spec.sampling.temperature, seed=int(sample))
        if job.tools and job.tool_choice != "none":  # "none": the member is not shown the tools at all
            body["tools"] = job.tools
            if job.tool_choice is not None:
                body["tool_choice"] = job.tool_choice
        if job.schema is not None:  # llama-cpp-python takes the schema in json_object; others the OpenAI form
            body["response_format"] = ({"type": "json_object", **({"schema": job.schema} if job.schema else {})}
                                       if streamed else job.response_format)
        return body

    async def relay(self, member: str, job: Job):
        """One member's answer as it is generated (direct use with ``stream: true``): its deltas,
        then ``(None, {"finish_reason": ..., "usage": ...})``. Bounded by the member timeout like
        :meth:`ask`; a local server's ``max_tokens`` is capped the same way."""
        body, ep = self._body(member, job), self.endpoints[member]
        local = member in self.ceilings
        if local:
            body["max_tokens"] = min(body["max_tokens"], self.ceilings[member])
        else:
            body["stream_options"] = {"include_usage": True}
        finish, usage, tokens, timeout = "stop", {}, 0, self.manifest.fusion.member_timeout_s
        try:
            async with asyncio.timeout(timeout):
                if local:
                    await self.local.ready(member, timeout)
                async for delta, extra in self._deltas(ep, body, timeout, member if local else None):
                    if delta is None:
                        usage = extra
                        continue
                    finish = "length" if extra == "length" else finish
                    if delta.get("content") or delta.get("tool_calls"):
                        tokens += 1
                        yield {k: v for k, v in delta.items() if k in ("content", "tool_calls")}, None
        except (GeneratorExit, asyncio.CancelledError, TimeoutError, httpx.TimeoutException):
            if local:  # the client left, or the member was too slow
                self._given_up(member)
            raise
        if local:
            usage = {"completion_tokens": tokens,
                     "prompt_tokens": await self._prompt_tokens(member, job, body)}
        yield None, {"finish_reason": finish, "usage": usage}

    async def ask(self, candidate: str, job: Job, turns: tuple[list[dict], list[dict]] | None = None,
                  round_: int = 0) -> Answer:
        """One member's answer (``candidate`` is a member's name, or ``NAME#k`` for its k-th sample),
        never raising: failures are in the status. ``turns`` (normalised, wire) replaces the job's
        conversation (debate rounds append to it)."""
        member = candidate.partition("#")[0]
        answer = Answer(candidate, round=round_)
        streamed = member in self.ceilings
        body = self._body(candidate, job, turns)
        timeout = self.manifest.fusion.member_timeout_s
        start = time.perf_counter()
        try:
            data = await self._send(member, self.endpoints[member], body)
            if streamed:
                data["usage"]["prompt_tokens"] = await self._prompt_tokens(member, job, body, turns)
            if job.schema is None:
                read_answer(answer, data, self.manifest.tool_call_format, job)
            else:  # a schema check is off the event loop, like any work whose cost the client chooses
                await asyncio.to_thread(read_answer, answer, data, self.manifest.tool_call_format, job)
        except (TimeoutError, httpx.TimeoutException):
            answer.status, answer.error = "timeout", f"no answer within {timeout:g} s"
        except asyncio.CancelledError:
            answer.status, answer.error = "cancelled", "the quorum had answered and the grace period passed, " \
                                                       "or the client went away"
        except httpx.HTTPStatusError as exc:
            answer.status, answer.error = "error", f"HTTP {exc.response.status_code}: {exc.response.text[:200]}"
        except (httpx.HTTPError, OSError) as exc:
            answer.status, answer.error = "error", f"{type(exc).__name__}: {exc}"
        except ValueError as exc:  # the body is not JSON
            answer.status, answer.error = "garbage", f"not JSON ({exc})"
        answer.latency_s = round(time.perf_counter() - start, 4)
        return answer

    async def _round(self, job: Job, asks: dict[str, tuple[tuple[list[dict], list[dict]] | None, int]]
                     ) -> list[Answer]:
        """Ask members in parallel; stop waiting once the quorum plus grace is reached. Cancelled
        from outside (the client went away), every member call is cancelled too."""
        f = self.manifest.fusion
        tasks = {asyncio.create_task(self.ask(name, job, turns, r)): name for name, (turns, r) in asks.items()}
        done_answers: list[Answer] = []
        pending = set(tasks)
        deadline = None
        try:
            while pending:
                timeout = None if deadline is None else max(0.0, deadline - time.perf_counter())
                done, pending = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                done_answers += [t.result() for t in done]
                if not done:  # grace period over
                    break
                valid = sum(a.status == "ok" for a in done_answers)
                if deadline is None and f.early_finish_grace_s and valid >= f.quorum:
                    deadline = time.perf_counter() + f.early_finish_grace_s
        finally:
            for t in pending:
                t.cancel()
        for t in pending:
            try:
                done_answers.append(await t)  # ask() turns the cancellation into a "cancelled" answer
            except asyncio.CancelledError:  # cancelled before it ever ran
                done_answers.append(Answer(tasks[t], "cancelled", error="cancelled before it started"))
        order = list(asks)
        return sorted(done_answers, key=lambda a: order.index(a.member))

    # -- the judge --------------------------------------------------------------------------------

    async def _execute(self, job: Job, valid: list[Answer], record: dict) -> list[Answer]:
        """The answers the judge chooses among: when the request carries doctests or asserts and
        some (not all) candidates' code passes them in the sandbox, only those."""
        if not self.manifest.fusion.execute_checks or len(valid) < 2 or any(a.tool_calls for a in valid):
            return valid
        checks = request_checks(job.messages)
        if not checks:
            return valid
        if self.box is None:
            record["execution"] = {"skipped": self.no_box}
            return valid
        outcomes = await asyncio.gather(*(asyncio.to_thread(run_checks, self.box, a.content, checks)
                                          for a in valid))
        record["execution"] = {a.member: o.reason for a, o in zip(valid, outcomes, strict=True)}
        passing = [a for a, o in zip(valid, outcomes, strict=True) if o.passed]
        return passing if passing else valid

    async def _pick(self, messages, tools, candidates: list[Answer]) -> tuple[int, dict]:
        """Index of the winning candidate and what the judge said."""
        start = time.perf_counter()
        if self.reward is not None:
            prompt = judge_prompt(tools or [], messages)
            scores = await asyncio.to_thread(self.reward.score, [prompt] * len(candidates),
                                             [as_judged(a) for a in candidates])
            t = self.manifest.judge.temperature
            best, probs, votes = hybrid_pick(scores, t, candidates)
            record = {"kind": "reward_model", "scores": {a.member: round(s, 4) for a, s in
                                                         zip(candidates, scores, strict=True)},
                      "confidence": round(probs[best], 4), "calibrated": t is not None}
            if any(votes):
                record["agreement"] = {a.member: round(v, 4) for a, v in zip(candidates, votes, strict=True)}
            return best, {**record, "latency_s": round(time.perf_counter() - start, 4)}

        record = {"kind": "generative"}
        text = await self._generate(self._judge_messages("system", messages, tools, candidates), record)
        winner = parse_verdict(text, len(candidates)) if text is not None else None
        if winner is None:  # an unusable verdict: the cheapest valid answer, and the record says so
            winner = min(range(len(candidates)), key=lambda i: self._cost(candidates[i].member))
            record["fallback"] = "no usable verdict; the cheapest valid answer was taken"
        record.update(verdict=text, latency_s=round(time.perf_counter() - start, 4))
        return winner, record

    def _cost(self, candidate: str) -> float:
        return next(x.cost for x in self.manifest.members if x.name == candidate.partition("#")[0])

    async def _generate(self, messages: list[dict], record: dict, max_tokens: int = 256, on_text=None) -> str | None:
        """The generative judge's text; a local judge is bounded and streamed like a local member.
        With ``on_text`` it is streamed and each piece passed on as it comes; a judge that fails
        after it has begun gives the text it wrote (``record["partial"]`` says so), since the
        client has it already."""
        said: list[str] = []

        def heard(piece: str) -> None:
            said.append(piece)
            on_text(piece)
        try:
            data = await self._send("judge", self.judge_endpoint,
                                    {"messages": messages, "temperature": 0.0, "max_tokens": max_tokens},
                                    on_text=heard if on_text is not None else None)
            return data["choices"][0]["message"]["content"] or ""
        except (TimeoutError, httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            if said:
                record["partial"] = "the judge stopped after it had begun to stream the answer; sent as far as it got"
                return "".join(said)
            return None

    def _judge_messages(self, instruction: str, messages, tools, candidates: list[Answer]) -> list[dict]:
        """The generative judge's conversation from the manifest's templates: the ``system``
        (verdict) or ``merge`` instruction, then the task and the candidates."""
        return verdict_prompt(judge_prompt(tools or [], messages), [as_judged(a) for a in candidates],
                              self.manifest.judge.templates, instruction)

    async def _merge(self, messages, tools, candidates: list[Answer], on_text=None) -> tuple[str | None, dict]:
        start = time.perf_counter()
        record = {"kind": "generative"}
        text = await self._generate(self._judge_messages("merge", messages, tools, candidates), record,
                                    max_tokens=1024, on_text=on_text)
        record["latency_s"] = round(time.perf_counter() - start, 4)
        return (text if text and text.strip() else None), record

    # -- one request ------------------------------------------------------------------------------

    async def complete(self, job: Job, on_text=None) -> dict:
        """The fused answer as an OpenAI chat.completion with a ``fusion`` record (see the module
        docstring); raises :class:`QuorumError` when too few members gave a usable answer. A merged
        answer's text is passed to ``on_text`` piece by piece as the judge writes it (streaming)."""
        m, f = self.manifest, self.manifest.fusion
        if job.tools and m.tool_call_format == "none":
            raise FinetuneError(f"pool {m.name} was built with `tools: false`; it answers without tools")
        start = time.perf_counter()
        answers = await self._round(job, {c: (None, 0) for c in self.candidates()})
        history = list(answers)
        if f.mode == "debate":
            for r in range(1, f.debate_rounds + 1):
                latest = {a.member: a for a in answers if a.status == "ok"}
                if len(latest) < 2:
                    break
                asks = {}
                for n, a in latest.items():
                    more = [{"role": "assistant", "content": a.content or json.dumps(a.tool_calls)},
                            {"role": "user", "content": _debate_prompt(n, latest)}]
                    asks[n] = ((job.messages + more, job.wire + more), r)
                revised = await self._round(job, asks)
                history += revised
                answers = [next((x for x in revised if x.member == a.member and x.status == "ok"), a)
                           for a in answers]
        valid = [a for a in answers if a.status == "ok"]
        record = {"mode": f.mode, "quorum": f.quorum, "members": [_public(a) for a in history]}
        if len(valid) < f.quorum and (f.below_quorum == "fail" or not valid):
            record["total_latency_s"] = round(time.perf_counter() - start, 4)
            raise QuorumError(f"{len(valid)} usable answer(s), quorum {f.quorum}: " + "; ".join(
                f"{a.member}: {a.status}" + (f" ({a.error})" if a.error else "") for a in answers
                if a.status != "ok"), record)
        record["below_quorum"] = len(valid) < f.quorum
        judged = await self._execute(job, valid, record)
        free_text = not any(a.tool_calls for a in valid) and job.schema is None
        if f.mode == "merge" and free_text and len(judged) > 1:
            text, record["judge"] = await self._merge(job.messages, job.tools, judged, on_text)
            if text is not None:
                finish = "length" if "partial" in record["judge"] else "stop"
                message, winner = {"role": "assistant", "content": text}, "merged"
            else:
                record["judge"]["fallback"] = "the merge failed; the cheapest valid answer was taken"
                best = min(judged, key=lambda a: self._cost(a.member))
                message, winner, finish = message_of(best), best.member, best.finish_reason
        else:
            if f.mode == "merge" and len(valid) > 1 and not free_text:
                record["merge_skipped"] = ("tool-call answers are chosen, never merged" if job.schema is None
                                           else "answers in a response_format are chosen, never merged")
            if len(judged) == 1:
                index, record["judge"] = 0, {"kind": m.judge.kind, "skipped": "one valid answer" if len(valid) == 1
                                             else "one answer passed the request's doctests and asserts"}
            else:
                index, record["judge"] = await self._pick(job.messages, job.tools, judged)
            message, winner, finish = message_of(judged[index]), judged[index].member, judged[index].finish_reason
        record["winner"] = winner
        record["total_latency_s"] = round(time.perf_counter() - start, 4)
        usage = {k: sum(int(a.usage.get(k) or 0) for a in history) for k in ("prompt_tokens", "completion_tokens")}
        chosen = next((a for a in history if a.member == winner and a.status == "ok"), None)
        record["usage"] = {"scope": f"usage is the sum of all {len(history)} member calls of this request "
                                    "(every member, sample and debate round); the judge's tokens are not in it",
                           "calls": len(history),
                           "winner": {k: int(chosen.usage.get(k) or 0) for k in ("prompt_tokens", "completion_tokens")}
                           if chosen is not None else None}
        return {**completion(m.name, message, usage, finish), "fusion": record}


def completion(model: str, message: dict, usage: dict, finish_reason: str = "stop") -> dict:
    """An OpenAI chat.completion around one assistant message; ``finish_reason`` is ``tool_calls``
    whenever the message calls tools, and usage always has its three counts."""
    usage = {"prompt_tokens": int(usage.get("prompt_tokens") or 0),
             "completion_tokens": int(usage.get("completion_tokens") or 0)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": message, "logprobs": None,
                                         "finish_reason": "tool_calls" if message.get("tool_calls") else finish_reason}],
            "usage": usage}


def message_of(a: Answer) -> dict:
    """A usable answer as the assistant message of a chat.completion."""
    out = {"role": "assistant", "content": a.content if a.content or not a.tool_calls else None}
    if a.tool_calls:
        out["tool_calls"] = a.tool_calls
    return out


def _public(a: Answer) -> dict:
    d = asdict(a)
    d["answer"] = {"content": d.pop("content"), "tool_calls": d.pop("tool_calls")}
    return d


def _debate_prompt(me: str, latest: dict[str, Answer]) -> str:
    others = "\n\n".join(f"Answer from {n}:\n{a.content or json.dumps(a.tool_calls)}"
                         for n, a in latest.items() if n != me)
    return (f"Other assistants answered the same request:\n\n{others}\n\nIf they show a mistake in your answer, "
            "give a corrected answer; otherwise give your answer again. Reply with the answer only.")
