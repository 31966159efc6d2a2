"""``finetune pool serve manifest.json``: the pool behind an OpenAI-compatible HTTP API.

Routes:

* ``POST /v1/chat/completions``: ``model`` is the pool's name (fused) or a member's name (that
  member alone, for direct use). The body is checked against the OpenAI chat-completions schema
  before any member is called (:mod:`finetune.pool.request`): a request that can never succeed is
  a 400 naming each bad field, not a 503 that clients would retry into more fan-outs. Tools,
  ``tool_calls`` and tool results use the OpenAI wire form. ``stream: true`` sends server-sent
  events (``chat.completion.chunk``; usage and the ``fusion`` record on the last chunk, or on a
  chunk of their own after it with ``stream_options.include_usage``; then ``[DONE]``). The role
  chunk goes out at once. A merged answer (``merge``) streams as the judge writes it; a picked
  answer exists only once the judge has decided, so until then the stream carries SSE comments
  every ``heartbeat_s`` (proxies and clients see a live connection), then the answer. A member
  used directly streams its tokens as it generates them, unless the request has tools or a
  ``response_format`` (the answer is then checked whole first).
  A failure after the stream has started is an ``error`` event, as OpenAI sends it.
* ``GET /v1/models`` and ``GET /v1/models/{id}``: the pool and each member.
* ``GET /healthz``: each member's state: a local llama.cpp member's process and port (a busy
  server still takes connections: ``up``; a dead one is ``down`` and is started again), an
  endpoint member's ``/v1/models`` within 2 s.
* ``GET /metrics``: Prometheus text (every response by route and status, 4xx and 5xx included;
  fused requests by outcome, member latency and failures, judge time).
* ``POST /v1/responses``: not served; the 404 says how to point a Responses-API client (the OpenAI
  Agents SDK) at chat completions. No OpenAPI document or docs pages are served.

Requests and failures:

* **Key.** With ``--api-key-env VAR``, every request except ``/healthz`` needs
  ``Authorization: Bearer <$VAR>`` (the scheme in any case); otherwise the answer is 401. The key
  is never logged: the access log is the gateway's own and writes paths without their query string.
* **Limits.** The request head must arrive within ``header_timeout_s`` of the connection opening
  (or of its previous response), else the connection is closed (slow headers, idle sockets); the
  body within ``body_timeout_s`` (408). Body bytes are counted as they arrive, chunked or not: past
  ``max_body_bytes`` the answer is 413 and nothing more is read. ``max_tokens`` above what every
  member can generate within ``member_timeout_s`` (local members are measured at start) gets 400.
  A pool below its quorum answers 503, with a body naming each member's fault.
* **Giving up.** A member call the gateway gives up on (timeout, the quorum's grace period, the
  client going away) is cancelled, and a local llama.cpp member stops generating.
* **Outbound calls.** The gateway only ever calls endpoints named in the manifest.
* **Errors.** An unexpected error in one request becomes a 500 for that request alone.

Example::

    app = create_app(Pool(Path("runs/pool/llamacpp/manifest.json")), api_key="secret")
    uvicorn.Server(server_config(app, "127.0.0.1", 8000)).run()
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from uvicorn.protocols.http.h11_impl import H11Protocol

from finetune.pool.request import BadRequest, Job, parse_request
from finetune.pool.runtime import Pool, QuorumError, completion, message_of

log = logging.getLogger("finetune.pool.gateway")
access = logging.getLogger("finetune.pool.access")


def _error(status: int, message: str, kind: str, **extra) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, **extra}}, status_code=status)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.responses = Counter("finetune_pool_http_responses", "Every HTTP response, by route and status "
                                 "(401, 404, 413, 499 and 5xx included)", ["route", "status"], registry=self.registry)
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


def _sse(event: dict | str) -> str:
    return f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n"


def _chunk(head: dict, delta: dict, finish_reason: str | None = None) -> dict:
    return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


def _chunks(done: dict, include_usage: bool, piece: int = 64):
    """The rest of a stream once the completion ``done`` is known (its role chunk went out first):
    text pieces, the tool calls, the finish reason; usage (and the fusion record) on the last
    chunk, or, as OpenAI does with ``stream_options.include_usage``, on a chunk of their own with
    no choices."""
    head = {"id": done["id"], "object": "chat.completion.chunk", "created": done["created"], "model": done["model"]}
    choice = done["choices"][0]
    message = choice["message"]
    text = message.get("content") or ""
    for i in range(0, len(text), piece):
        yield _chunk(head, {"content": text[i:i + piece]})
    if message.get("tool_calls"):
        yield _chunk(head, {"tool_calls": [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]})
    yield from _ending(head, choice["finish_reason"], done["usage"], include_usage,
                       {"fusion": done["fusion"]} if "fusion" in done else {})


def _ending(head: dict, finish_reason: str, usage: dict, include_usage: bool, extra: dict):
    tail = {"usage": usage, **extra}
    if include_usage:
        yield _chunk(head, {}, finish_reason)
        yield {**head, "choices": [], **tail}
    else:
        yield {**_chunk(head, {}, finish_reason), **tail}


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
    """API key, body size and read time, response counts, the access log and a last-resort 500, as
    plain ASGI (FastAPI's @middleware("http") wraps every response in extra streams: measured 9% of
    the gateway's CPU). The body is read here, its bytes counted as they arrive (a chunked body has
    no Content-Length to trust), and handed to the app whole. The access log names the path without
    its query string, so a key put there is never written."""

    ROUTES = ("/v1/chat/completions", "/v1/models", "/healthz", "/metrics", "/v1/responses")

    def __init__(self, app, api_key: str | None, max_body_bytes: int, body_timeout_s: float, metrics: Metrics):
        self.app, self.max_body_bytes, self.body_timeout_s, self.metrics = app, max_body_bytes, body_timeout_s, metrics
        self.key = api_key.encode() if api_key is not None else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, complete = time.perf_counter(), [0], [False]

        async def tracked(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            complete[0] = message["type"] == "http.response.body" and not message.get("more_body")
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
            path = scope["path"]
            route = path if path in self.ROUTES else "/v1/models/{id}" if path.startswith("/v1/models/") else "other"
            code = status[0] if complete[0] else 499  # a stream the client left is not a 200
            self.metrics.responses.labels(route, str(code)).inc()
            access.info('%s:%s "%s %s" %s %.3fs', client[0], client[1], scope["method"], path, code,
                        time.perf_counter() - start)

    def _authorised(self, headers: dict) -> bool:
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)

    def _refusal(self, scope, headers: dict) -> JSONResponse | None:
        """What a request is refused before its body is read, or None. Without a key, a web page the
        user visits could post to the gateway (a ``text/plain`` body needs no CORS preflight) or,
        through DNS rebinding, read its answers: so keyless, the ``Host`` must be an IP address or
        ``localhost`` and an ``Origin``, when sent, the gateway itself. A body must be JSON, and
        framed once (``Content-Length`` and ``Transfer-Encoding`` together is how requests are
        smuggled past proxies)."""
        if self.key is None:
            host = _hostname(headers.get(b"host", b"").decode("latin-1"))
            if not _local_name(host):
                return _error(403, f"Host {host!r}: a gateway without an API key answers only to an IP address or "
                                   "localhost (a DNS name could be rebound by a web page); serve with "
                                   "--api-key-env to use a host name", "permission_error")
            origin = headers.get(b"origin")
            if origin is not None and origin.decode("latin-1") != f"http://{headers[b'host'].decode('latin-1')}":
                return _error(403, "cross-origin request refused: a gateway without an API key does not answer web "
                                   "pages of other origins; serve with --api-key-env", "permission_error")
        elif scope["path"] != "/healthz" and not self._authorised(headers):
            return _error(401, "missing or wrong API key (Authorization: Bearer ...)", "authentication_error")
        if b"content-length" in headers and b"transfer-encoding" in headers:
            return _error(400, "both Content-Length and Transfer-Encoding: send one", "invalid_request_error")
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if scope["method"] == "POST" and kind != b"application/json":
            return _error(415, f"Content-Type {kind.decode('latin-1') or '(none)'}: send application/json",
                          "invalid_request_error")
        return None

    async def _handle(self, scope, receive, send):
        headers = dict(scope["headers"])
        refused = self._refusal(scope, headers)
        if refused is not None:
            return await refused(scope, receive, send)
        size = headers.get(b"content-length")
        if size is not None and (not size.isdigit() or int(size) > self.max_body_bytes):
            return await self._too_big(scope, receive, send)
        chunks, got = [], 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while got <= self.max_body_bytes:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunks.append(message.get("body", b""))
                    got += len(chunks[-1])
                    if not message.get("more_body"):
                        break
        except TimeoutError:
            response = _error(408, f"the request body did not arrive within {self.body_timeout_s:g} s",
                              "invalid_request_error")
            return await response(scope, receive, send)
        if got > self.max_body_bytes:  # answered without reading the rest
            return await self._too_big(scope, receive, send)
        body, handed = b"".join(chunks), [False]

        async def replay():
            if not handed[0]:
                handed[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the client's disconnect
        await self.app(scope, replay, send)

    async def _too_big(self, scope, receive, send):
        await _error(413, f"request body over {self.max_body_bytes} bytes", "invalid_request_error")(scope, receive,
                                                                                                      send)


def _hostname(host: str) -> str:
    """The name in a Host header, without its port (``[::1]:8000`` -> ``::1``)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _local_name(host: str) -> bool:
    """An IP address or localhost: names no web page can rebind."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class HeadDeadline(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline on the request head: a connection that has not
    sent a whole request line and headers within ``header_timeout_s`` of opening, or of the end of
    its previous response, is closed. uvicorn alone keeps a connection that sends nothing, or one
    byte at a time, open for as long as the client likes (any byte cancels its keep-alive timer)."""

    header_timeout_s = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport):
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self):
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc):
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self):
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.header_timeout_s, self._expire)

    def _expire(self):
        waiting = self.cycle is None or self.cycle.response_complete  # no request of this connection in progress
        if waiting and not self.transport.is_closing():
            self.transport.close()


def server_config(app, host: str, port: int, header_timeout_s: float = 10.0, log_level: str = "info"):
    """The uvicorn configuration the gateway runs with: the head deadline (:class:`HeadDeadline`),
    idle keep-alive connections closed after 5 s, at most 1,024 connections at once (503 beyond),
    and uvicorn's own access log off (it would write the query string, where a client may have put
    its key)."""
    import uvicorn

    protocol = type("HeadDeadline", (HeadDeadline,), {"header_timeout_s": header_timeout_s})
    return uvicorn.Config(app, host=host, port=port, http=protocol, timeout_keep_alive=5, limit_concurrency=1024,
                          log_level=log_level, access_log=False)


def create_app(pool: Pool, api_key: str | None = None, max_body_bytes: int = 1 << 20,
               max_tokens_limit: int = 4096, body_timeout_s: float = 30.0, heartbeat_s: float = 5.0) -> FastAPI:
    """The gateway app; it starts the pool (local llama.cpp servers, the judge) and stops it."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_app):
        await pool.start()
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(title=f"finetune pool {pool.manifest.name}", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    m = pool.manifest
    created = int(time.time())

    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes, body_timeout_s=body_timeout_s,
                       metrics=metrics)

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
        try:
            # Guard has read it, within the size and time limits; checking its schemas costs up to a few
            # hundred ms for the largest allowed, so not on the event loop
            job = await asyncio.to_thread(parse_request, await request.body())
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
        too_long = await pool.context_problem(model, job)
        if too_long is not None:
            return bad(model, [too_long])
        if job.stream:
            live = model != m.name and not (job.tools and job.tool_choice != "none") and job.schema is None
            return StreamingResponse(relayed(model, job) if live else streamed(model, job),
                                     media_type="text/event-stream")
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
        return JSONResponse(result)

    def head(model: str) -> dict:
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model}

    async def streamed(model: str, job: Job):
        """The role chunk at once, then a merged answer's text as the judge writes it, SSE comments
        while nothing comes (members and judge at work), then the rest of the answer (or an error
        event). A client that leaves cancels the work (Starlette cancels this stream)."""
        first, start, pieces, sent = head(model), time.perf_counter(), asyncio.Queue(), []
        yield _sse(_chunk(first, {"role": "assistant", "content": ""}))
        task = asyncio.ensure_future(answer(model, job, pieces.put_nowait))
        try:
            while not task.done():
                piece = asyncio.ensure_future(pieces.get())
                done, _ = await asyncio.wait({task, piece}, timeout=heartbeat_s, return_when=asyncio.FIRST_COMPLETED)
                if piece in done:
                    sent.append(piece.result())
                    yield _sse(_chunk(first, {"content": sent[-1]}))
                    continue
                piece.cancel()  # a get cancelled before it took an item loses nothing
                if not done:
                    yield f": waiting for {'the members and the judge' if model == m.name else model}\n\n"
            while not pieces.empty():
                sent.append(pieces.get_nowait())
                yield _sse(_chunk(first, {"content": sent[-1]}))
            result = task.result()
        finally:
            if not task.done():
                task.cancel()
                metrics.requests.labels(model, "499").inc()
        if isinstance(result, JSONResponse):
            yield _sse(json.loads(result.body))
        else:
            metrics.requests.labels(model, "200").inc()
            metrics.request_seconds.observe(time.perf_counter() - start)
            done = {**result, "id": first["id"], "created": first["created"]}
            text, said = done["choices"][0]["message"].get("content") or "", "".join(sent)
            if said:  # what was streamed already is not sent twice
                rest = text[len(said):] if text.startswith(said) else text
                done["choices"] = [{**done["choices"][0], "message": {**done["choices"][0]["message"], "content": rest}}]
            for chunk in _chunks(done, job.include_usage):
                yield _sse(chunk)
        yield _sse("[DONE]")

    async def relayed(model: str, job: Job):
        """A member used directly, its tokens sent on as it generates them."""
        first, start = head(model), time.perf_counter()
        yield _sse(_chunk(first, {"role": "assistant", "content": ""}))
        try:
            async for delta, outcome in pool.relay(model, job):
                if delta is not None:
                    yield _sse(_chunk(first, delta))
                else:
                    end = outcome
        except (TimeoutError, httpx.HTTPError, OSError, ValueError) as exc:
            status = "timeout" if isinstance(exc, (TimeoutError, httpx.TimeoutException)) else "error"
            metrics.member_failures.labels(model, status).inc()
            metrics.requests.labels(model, "502").inc()
            yield _sse({"error": {"message": f"{model}: {status} ({type(exc).__name__}: {exc})",
                                  "type": "upstream_error"}})
            yield _sse("[DONE]")
            return
        latency = time.perf_counter() - start
        metrics.member_latency.labels(model).observe(latency)
        metrics.requests.labels(model, "200").inc()
        usage = completion(model, {}, end["usage"])["usage"]
        for chunk in _ending(first, end["finish_reason"], usage, job.include_usage, {}):
            yield _sse(chunk)
        yield _sse("[DONE]")

    async def answer(model: str, job: Job, on_text=None) -> dict | JSONResponse:
        """The completion, or the error response (upstream failure, quorum not met); a merged
        answer's text also goes to ``on_text`` as the judge writes it."""
        if model != m.name:  # direct use of one member
            got = await pool.ask(model, job)
            metrics.record({"members": [{"member": model, "status": got.status, "latency_s": got.latency_s}]})
            if got.status != "ok":
                metrics.requests.labels(model, "502").inc()
                return _error(502, f"{model}: {got.status} ({got.error})", "upstream_error")
            return completion(model, message_of(got), got.usage, got.finish_reason)
        try:
            result = await pool.complete(job, on_text)
        except QuorumError as exc:
            metrics.record(exc.record)
            metrics.requests.labels(model, "503").inc()
            return _error(503, f"pool {m.name}: {exc}", "quorum_not_met", fusion=exc.record)
        metrics.record(result["fusion"])
        return result

    return app


def serve(manifest, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None) -> None:
    """Run the gateway until interrupted (the manifest's files are verified first; local llama.cpp
    members start before it answers and stop with it)."""
    import uvicorn

    app = create_app(Pool(manifest), api_key=api_key)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("finetune.pool.access", "finetune.pool.gateway"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.INFO)
    uvicorn.Server(server_config(app, host, port)).run()
