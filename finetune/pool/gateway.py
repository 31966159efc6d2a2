"""``finetune pool serve manifest.json``: the pool behind an OpenAI-compatible HTTP API.

Routes:

* ``POST /v1/chat/completions``: ``model`` is the pool's name (fused) or a member's name (that
  member alone, for direct use). Tools and ``tool_calls`` use the OpenAI wire format;
  ``stream: true`` sends the fused answer as server-sent events (``chat.completion.chunk``, the
  last chunk carries the ``fusion`` record, then ``[DONE]``).
* ``GET /v1/models``: the pool and each member.
* ``GET /healthz``: each member's state (its server's ``/v1/models`` within 2 s).
* ``GET /metrics``: Prometheus text (requests by status, member latency and failures, judge time).

Requests and failures:

* **Key.** With ``--api-key-env VAR``, every request needs ``Authorization: Bearer <$VAR>``;
  otherwise the answer is 401. The key is never logged.
* **Limits.** A body over ``max_body_bytes`` gets 413, and ``max_tokens`` above the limit gets
  400. A pool below its quorum answers 503, with a body naming each member's fault.
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

from finetune import FinetuneError
from finetune.pool.runtime import Pool, QuorumError, check_messages, completion, message_of

log = logging.getLogger("finetune.pool.gateway")


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


def _chunks(done: dict, piece: int = 64):
    """The finished completion as SSE chat.completion.chunk events."""
    base = {"id": done["id"], "object": "chat.completion.chunk", "created": done["created"],
            "model": done["model"]}
    message = done["choices"][0]["message"]
    yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
    text = message.get("content") or ""
    for i in range(0, len(text), piece):
        yield {**base, "choices": [{"index": 0, "delta": {"content": text[i:i + piece]}, "finish_reason": None}]}
    if message.get("tool_calls"):
        calls = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
        yield {**base, "choices": [{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": None}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": done["choices"][0]["finish_reason"]}],
           "usage": done["usage"], "fusion": done.get("fusion")}


class Guard:
    """API key, body size and a last-resort 500, as plain ASGI (FastAPI's @middleware("http") wraps
    every response in extra streams: measured 9% of the gateway's CPU)."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes
        self.expected = f"Bearer {api_key}".encode() if api_key is not None else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.expected is not None and scope["path"] != "/healthz" and \
                not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
            response = _error(401, "missing or wrong API key (Authorization: Bearer ...)", "authentication_error")
            return await response(scope, receive, send)
        size = headers.get(b"content-length", b"0")
        if not size.isdigit() or int(size) > self.max_body_bytes:
            response = _error(413, f"request body over {self.max_body_bytes} bytes", "invalid_request_error")
            return await response(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)
        try:
            await self.app(scope, receive, tracked)
        except Exception:  # one bad request must not take the gateway down
            log.exception("request %s failed", scope["path"])
            if not started:
                await _error(500, "internal error in the gateway; see its log", "server_error")(scope, receive, send)


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

    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes)

    @app.get("/v1/models")
    async def models():
        now = int(time.time())
        return {"object": "list", "data": [{"id": m.name, "object": "model", "created": now, "owned_by": "finetune-pool"}]
                + [{"id": x.name, "object": "model", "created": now, "owned_by": "finetune-pool-member"}
                   for x in m.members]}

    @app.get("/healthz")
    async def healthz():
        async def probe(name, ep):
            try:
                r = await pool.http(ep.url).get(f"{ep.url.rstrip('/')}/models", timeout=2.0)
                return name, "up" if r.status_code == 200 else f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                return name, f"down ({type(exc).__name__})"
        states = dict(await asyncio.gather(*(probe(n, ep) for n, ep in pool.endpoints.items())))
        up = sum(s == "up" for s in states.values())
        ok = up >= m.fusion.quorum
        return JSONResponse({"status": "ok" if ok else "degraded", "quorum": m.fusion.quorum, "members": states},
                            status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        raw = await request.body()
        if len(raw) > max_body_bytes:
            return _error(413, f"request body over {max_body_bytes} bytes", "invalid_request_error")
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
            messages, tools = check_messages(body)
        except (ValueError, FinetuneError) as exc:
            return _error(400, f"bad request: {exc}", "invalid_request_error")
        model = body.get("model") or m.name
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or not 0 < max_tokens <= max_tokens_limit):
            return _error(400, f"max_tokens must be an integer from 1 to {max_tokens_limit}", "invalid_request_error")
        params = {k: body[k] for k in ("temperature", "top_p", "stop", "seed", "tool_choice") if k in body}
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        start = time.perf_counter()
        if model != m.name:  # direct use of one member
            if model not in pool.endpoints:
                return _error(404, f"no model {model!r}; this gateway serves {m.name!r} and its members "
                                   f"{sorted(pool.endpoints)}", "invalid_request_error")
            answer = await pool.ask(model, messages, tools, params)
            metrics.record({"members": [{"member": model, "status": answer.status, "latency_s": answer.latency_s}]})
            if answer.status != "ok":
                metrics.requests.labels(model, "502").inc()
                return _error(502, f"{model}: {answer.status} ({answer.error})", "upstream_error")
            result = completion(model, message_of(answer), answer.usage)
        else:
            try:
                result = await pool.complete(messages, tools, **params)
            except QuorumError as exc:
                metrics.record(exc.record)
                metrics.requests.labels(model, "503").inc()
                return _error(503, f"pool {m.name}: {exc}", "quorum_not_met", fusion=exc.record)
            except FinetuneError as exc:
                metrics.requests.labels(model, "400").inc()
                return _error(400, str(exc), "invalid_request_error")
            metrics.record(result["fusion"])
        metrics.requests.labels(model, "200").inc()
        metrics.request_seconds.observe(time.perf_counter() - start)
        if body.get("stream"):
            async def events():
                for chunk in _chunks(result):
                    yield f"data: {json.dumps(chunk)}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse(result)

    return app


def serve(manifest, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None) -> None:
    """Run the gateway until interrupted (local llama.cpp members start first and stop with it)."""
    import uvicorn

    app = create_app(Pool(manifest), api_key=api_key)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=True)
