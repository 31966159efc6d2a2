"""The gateway's orchestration overhead: what fusing costs on top of waiting for the slowest member
and the judge.

Members are local OpenAI-compatible stub servers (Starlette on uvicorn, one process each) that
answer after a set latency; the judge is a stub too (a generative judge naming candidate A after
its own set latency). The gateway runs as ``finetune pool serve`` in its own process. Clients
send requests from this process, 50 at a time, in two phases of the same run:

1. baseline: every request straight to the slowest member (the least a fused answer can take);
2. the pool: every request to the gateway (all members in parallel, then the judge).

Overhead per request = gateway latency - slowest member's latency - the judge's own time (from
the request's fusion record). The script reports p50/p95 of it, as milliseconds and as a share of
the slowest member's latency, and requests/s for both phases.

    .venv/bin/python benchmarks/fusion_overhead.py --requests 500 --concurrency 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _stub(port: int, delay: float, content: str) -> None:
    """Run one stub member until killed."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request):
        body = await request.json()
        await asyncio.sleep(delay)
        return JSONResponse({"id": "x", "object": "chat.completion", "model": body.get("model"),
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

    async def models(_request):
        return JSONResponse({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=2048)


def _wait(url: str) -> None:
    import httpx

    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


async def _load(url: str, body: dict, n: int, concurrency: int) -> tuple[list[float], list[dict], float]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    latencies, records = [], []
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one(i):
            async with sem:
                start = time.perf_counter()
                r = await client.post(url, json={**body, "messages": [{"role": "user", "content": f"question {i}"}]})
                latencies.append(time.perf_counter() - start)
                if r.status_code != 200:
                    raise SystemExit(f"{url}: HTTP {r.status_code}: {r.text[:600]}")
                records.append(r.json().get("fusion"))
        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return latencies, records, time.perf_counter() - start


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--latencies", default="0.1,0.2,0.3", help="members' latencies in seconds")
    ap.add_argument("--judge-latency", type=float, default=0.02)
    ap.add_argument("--stub", nargs=3, metavar=("PORT", "DELAY", "CONTENT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stub:
        return _stub(int(args.stub[0]), float(args.stub[1]), args.stub[2])

    from finetune.contracts.judging import SYSTEM
    from finetune.pool.local import free_port

    delays = [float(x) for x in args.latencies.split(",")]
    procs = []
    try:
        ports = []
        for i, delay in enumerate(delays + [args.judge_latency]):
            ports.append(free_port())
            content = '{"winner": "A"}' if i == len(delays) else f"answer from member {i}"
            procs.append(subprocess.Popen([sys.executable, __file__, "--stub", str(ports[-1]), str(delay), content]))
        for p in ports:
            _wait(f"http://127.0.0.1:{p}/v1/models")
        tmp = Path(tempfile.mkdtemp())
        fake = {"format": "gguf-q8_0", "uri": "https://example.invalid/judge.gguf", "path": "judge.gguf",
                "files": [{"path": "judge.gguf", "bytes": 1, "sha256": "0" * 64}]}
        (tmp / "manifest.json").write_text(json.dumps({
            "schema_version": 1, "name": "bench", "created": "2026-11-28T00:00:00Z", "toolkit_version": "bench",
            "tool_call_format": "none",
            "members": [{"name": f"m{i}", "tool_call_format": "hermes", "context_length": 4096,
                         "endpoint": {"url": f"http://127.0.0.1:{p}/v1", "model": f"m{i}"}}
                        for i, p in enumerate(ports[:-1])],
            "judge": {"kind": "generative", "max_length": 2048, "artifacts": [fake],
                      "endpoint": {"url": f"http://127.0.0.1:{ports[-1]}/v1", "model": "judge"},
                      "templates": {"system": SYSTEM, "task": "Task:\n{task}", "candidate": "Candidate {letter}:\n{answer}",
                                    "merge": "Merge."}},
            "fusion": {"mode": "best_of", "quorum": len(delays), "member_timeout_s": 30}}))
        gw_port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "finetune", "pool", "serve", str(tmp / "manifest.json"),
                                       "--port", str(gw_port)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(f"http://127.0.0.1:{gw_port}/healthz")
        slowest = ports[delays.index(max(delays))]
        body = {"max_tokens": 16}
        asyncio.run(_load(f"http://127.0.0.1:{gw_port}/v1/chat/completions", {**body, "model": "bench"}, 50, 50))
        base_lat, _, base_wall = asyncio.run(_load(f"http://127.0.0.1:{slowest}/v1/chat/completions",
                                                   {**body, "model": "m"}, args.requests, args.concurrency))
        cpu = _cpu_s(procs[-1].pid)
        pool_lat, records, pool_wall = asyncio.run(_load(f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                                                         {**body, "model": "bench"}, args.requests, args.concurrency))
        gateway_cpu_ms = 1000 * (_cpu_s(procs[-1].pid) - cpu) / args.requests
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    judge = [r["judge"]["latency_s"] for r in records]
    slow = max(delays)
    overhead = [lat - slow - j for lat, j in zip(pool_lat, judge, strict=False)]
    direct_overhead = [lat - slow for lat in base_lat]
    print(json.dumps({
        "members_latency_s": delays, "judge_latency_s": args.judge_latency, "requests": args.requests,
        "concurrency": args.concurrency,
        "baseline_slowest_member_direct": {"p50_ms": round(1000 * _pct(base_lat, 0.5), 1),
                                           "p95_ms": round(1000 * _pct(base_lat, 0.95), 1),
                                           "http_overhead_p50_ms": round(1000 * _pct(direct_overhead, 0.5), 1),
                                           "requests_per_s": round(args.requests / base_wall, 1)},
        "pool_gateway": {"p50_ms": round(1000 * _pct(pool_lat, 0.5), 1), "p95_ms": round(1000 * _pct(pool_lat, 0.95), 1),
                         "judge_p50_ms": round(1000 * statistics.median(judge), 1),
                         "requests_per_s": round(args.requests / pool_wall, 1),
                         "gateway_cpu_ms_per_request": round(gateway_cpu_ms, 2)},
        "orchestration_overhead": {"p50_ms": round(1000 * _pct(overhead, 0.5), 1),
                                   "p95_ms": round(1000 * _pct(overhead, 0.95), 1),
                                   "p50_share_of_slowest_member": round(_pct(overhead, 0.5) / slow, 4),
                                   "p95_share_of_slowest_member": round(_pct(overhead, 0.95) / slow, 4)},
        "ratio_pool_p50_over_slowest_plus_judge_p50": round(
            _pct(pool_lat, 0.5) / (_pct(base_lat, 0.5) + statistics.median(judge)), 3),
    }, indent=2))


if __name__ == "__main__":
    main()
