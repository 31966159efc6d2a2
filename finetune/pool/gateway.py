"""``finetune pool serve manifest.json``: the pool behind an OpenAI-compatible HTTP API.

Routes:

* ``POST /v1/chat/completions``: ``model`` is the pool's name (fused) or a member's name (that
  member alone, for direct use). The body is checked against the OpenAI chat-completions schema
  before any member is called (:mod:`finetune.pool.request`): a request that can never succeed is
  a 400 naming each bad field, not a 503 that clients would retry into more fan-outs. Tools,
  ``tool_calls`` and tool results use the OpenAI wire form; ``stream: true`` sends the fused answer
  as server-sent events (``chat.completion.chunk``; usage and the ``fusion`` record on the last
  chunk, or on a chunk of their own after it with ``stream_options.include_usage``; then ``[DONE]``).
* ``GET /v1/models`` and ``GET /v1/models/{id}``: the pool and each member.
* ``GET /healthz``: each member's state: a local llama.cpp member's process and port, an endpoint
  member's ``/v1/models`` within 2 s.
* ``GET /metrics``: Prometheus text (requests by status, member latency and failures, judge time).
* ``POST /v1/responses``: not served; the 404 says how to point a Responses-API client (the OpenAI
  Agents SDK) at chat completions.

Requests and failures:

* **Key.** With ``--api-key-env VAR``, every request needs ``Authorization: Bearer <$VAR>``;
  otherwise the answer is 401. The key is never logged: the access log is the gateway's own and
  writes paths without their query string.
* **Limits.** A body over ``max_body_bytes`` gets 413. ``max_tokens`` above what every member can
  generate within ``member_timeout_s`` (local members are measured at start) gets 400. A pool
  below its quorum answers 503, with a body naming each member's fault.
* **Giving up.** A member call the gateway gives up on (timeout, the quorum's grace period, the
  client going away) is cancelled, and a local llama.cpp member stops generating.
* **Outbound calls.** The gateway only ever calls endpoints named in the manifest.
* **Errors.** An unexpected error in one request becomes a 500 for that request alone.

Example::

    app = create_app(Pool(Path("runs/pool/llamacpp/manifest.json")), api_key="secret")
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from finetune.pool.request import BadRequest, Job, parse_request
from finetune.pool.runtime import Pool, QuorumError, completion, message_of

log = logging.getLogger("finetune.pool.gateway")
access = logging.getLogger("finetune.pool.access")


def _error(status: int, message: str, kind: str, **extra) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, **extra}}, status_code=status)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("finetune_pool_requests", "Chat completion requests by outcome",
                                ["model", "status"], registry=self.registry)
        self.member_latency = Histogram("finetune_pool_member_latency_seconds", "Member answer latency",
                                        ["member"], registry=self.registry)
        self.member_failures = Counter("finetune_pool_member_failures", "Member answers dropped, by reason",
                                       ["member", "reason"], registry=self.registry)
        self.judge_seconds = Histogram("finetune_pool_judge_seconds", "Time the judge took", registry=self.registry)
        self.request_seconds = Histogram("finetune_pool_request_seconds", "Whole fused request",
                                         registry=self.registry)

    def record(self, fusion: dict) -> None:
        for a in fusion.get("members", []):
            if a["status"] == "ok":
                self.member_latency.labels(a["member"]).observe(a["latency_s"])
            else:
                self.member_failures.labels(a["member"], a["status"]).inc()
        if "latency_s" in fusion.get("judge", {}):
            self.judge_seconds.observe(fusion["judge"]["latency_s"])


def _chunks(done: dict, include_usage: bool, piece: int = 64):
    """The finished completion as SSE chat.completion.chunk events: role, text pieces, the tool
    calls, the finish reason; usage (and the fusion record) on the last chunk, or, as OpenAI does
    with ``stream_options.include_usage``, on a chunk of their own with no choices."""
    base = {"id": done["id"], "object": "chat.completion.chunk", "created": done["created"],
            "model": done["model"]}
    choice = done["choices"][0]
    message = choice["message"]
    yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    text = message.get("content") or ""
    for i in range(0, len(text), piece):
        yield {**base, "choices": [{"index": 0, "delta": {"content": text[i:i + piece]}, "finish_reason": None}]}
    if message.get("tool_calls"):
        calls = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
        yield {**base, "choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": None}]}
    tail = {"usage": done["usage"], **({"fusion": done["fusion"]} if "fusion" in done else {})}
    last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]}
    if include_usage:
        yield last
        yield {**base, "choices": [], **tail}
    else:
        yield {**last, **tail}


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


async def _unless_client_leaves(request: Request, work):
    """Await ``work``; if the client goes away first, cancel it (and with it every member call)."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # nobody is waiting for the answer
                pass
            raise ClientGone


class Guard:
    """API key, body size, the access log and a last-resort 500, as plain ASGI (FastAPI's
    @middleware("http") wraps every response in extra streams: measured 9% of the gateway's CPU).
    The access log names the path without its query string, so a key put there is never written."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes
        self.expected = f"Bearer {api_key}".encode() if api_key is not None else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [0]

        async def tracked(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            await self._handle(scope, receive, tracked)
        except Exception:  # one bad request must not take the gateway down
            log.exception("request %s failed", scope["path"])
            if not status[0]:
                await _error(500, "internal error in the gateway; see its log", "server_error")(scope, receive,
                                                                                                 tracked)
        finally:
            client = scope.get("client") or ("-", 0)
            access.info('%s:%s "%s %s" %s %.3fs', client[0], client[1], scope["method"], scope["path"],
                        status[0] or 499, time.perf_counter() - start)

    async def _handle(self, scope, receive, send):
        headers = dict(scope["headers"])
        if self.expected is not None and scope["path"] != "/healthz" and \
                not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            response = _error(401, "missing or wrong API key (Authorization: Bearer ...)", "authentication_error")
            return await response(scope, receive, send)
        size = headers.get(b"content-length", b"0")
        if not size.isdigit() or int(size) > self.max_body_bytes:
            response = _error(413, f"request body over {self.max_body_bytes} bytes", "invalid_request_error")
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


def create_app(pool: Pool, api_key: str | None = None, max_body_bytes: int = 1 << 20,
               max_tokens_limit: int = 4096) -> FastAPI:
    """The gateway app; it starts the pool (local llama.cpp servers, the judge) and stops it."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_app):
        await pool.start()
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(title=f"finetune pool {pool.manifest.name}", lifespan=lifespan, docs_url=None, redoc_url=None)
    m = pool.manifest
    created = int(time.time())

    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes)

    def unknown(model: str) -> JSONResponse:
        return _error(404, f"no model {model!r}; this gateway serves {m.name!r} and its members "
                           f"{sorted(pool.endpoints)}", "invalid_request_error", code="model_not_found")

    def card(name: str, owner: str) -> dict:
        return {"id": name, "object": "model", "created": created, "owned_by": owner}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [card(m.name, "finetune-pool")]
                + [card(x.name, "finetune-pool-member") for x in m.members]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str):
        if model_id == m.name:
            return card(m.name, "finetune-pool")
        if model_id in pool.endpoints:
            return card(model_id, "finetune-pool-member")
        return unknown(model_id)

    @app.post("/v1/responses")
    async def responses():
        return _error(404, "this gateway serves the Chat Completions API (POST /v1/chat/completions), not the "
                           "Responses API; point the client at chat completions (OpenAI Agents SDK: "
                           "set_default_openai_api('chat_completions'))", "invalid_request_error",
                      code="unknown_url")

    @app.get("/healthz")
    async def healthz():
        async def probe(name, ep):
            if pool.local is not None and name in pool.local.serving:
                return name, await pool.local.state(name)
            try:
                r = await pool.http(ep.url).get(f"{ep.url.rstrip('/')}/models", timeout=2.0)
                return name, "up" if r.status_code == 200 else f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                return name, f"down ({type(exc).__name__})"
        states = dict(await asyncio.gather(*(probe(n, ep) for n, ep in pool.endpoints.items())))
        up = sum(s == "up" for s in states.values())
        ok = up >= m.fusion.quorum
        restarts = pool.local.restarts if pool.local is not None else {}
        return JSONResponse({"status": "ok" if ok else "degraded", "quorum": m.fusion.quorum, "members": states,
                             "restarts": restarts}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def bad(model: str, problems: list[str]) -> JSONResponse:
        metrics.requests.labels(model, "400").inc()
        return _error(400, "bad request: " + "; ".join(problems), "invalid_request_error",
                      param=problems[0].split(":")[0])

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        raw = await request.body()
        if len(raw) > max_body_bytes:
            return _error(413, f"request body over {max_body_bytes} bytes", "invalid_request_error")
        try:
            job = parse_request(raw)
        except BadRequest as exc:
            return bad("-", exc.problems)
        model = job.model
        if model != m.name and model not in pool.endpoints:
            return unknown(model)
        limit = min(max_tokens_limit, pool.max_tokens_limit or max_tokens_limit)
        if job.max_tokens is not None and job.max_tokens > limit:
            why = "" if limit == max_tokens_limit else (
                f": what the slowest local member generates within member_timeout_s "
                f"({m.fusion.member_timeout_s:g} s), measured at start")
            return bad(model, [f"max_tokens: must be at most {limit}{why}"])
        if job.tools and m.tool_call_format == "none":
            return bad(model, [f"tools: pool {m.name} was built with `tools: false`; it answers without tools"])
        start = time.perf_counter()
        try:
            result = await _unless_client_leaves(request, answer(model, job))
        except ClientGone:
            metrics.requests.labels(model, "499").inc()
            return Response(status_code=499)
        if isinstance(result, JSONResponse):
            return result
        metrics.requests.labels(model, "200").inc()
        metrics.request_seconds.observe(time.perf_counter() - start)
        if job.stream:
            async def events():
                for chunk in _chunks(result, job.include_usage):
                    yield f"data: {json.dumps(chunk)}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse(result)

    async def answer(model: str, job: Job) -> dict | JSONResponse:
        """The completion, or the error response (upstream failure, quorum not met)."""
        if model != m.name:  # direct use of one member
            got = await pool.ask(model, job)
            metrics.record({"members": [{"member": model, "status": got.status, "latency_s": got.latency_s}]})
            if got.status != "ok":
                metrics.requests.labels(model, "502").inc()
                return _error(502, f"{model}: {got.status} ({got.error})", "upstream_error")
            return completion(model, message_of(got), got.usage, got.finish_reason)
        try:
            result = await pool.complete(job)
        except QuorumError as exc:
            metrics.record(exc.record)
            metrics.requests.labels(model, "503").inc()
            return _error(503, f"pool {m.name}: {exc}", "quorum_not_met", fusion=exc.record)
        metrics.record(result["fusion"])
        return result

    return app


def serve(manifest, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None) -> None:
    """Run the gateway until interrupted (local llama.cpp members start first and stop with it)."""
    import uvicorn

    app = create_app(Pool(manifest), api_key=api_key)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("finetune.pool.access", "finetune.pool.gateway"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    # uvicorn's own access log would write the query string (where a client may have put its key)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
