"""Probe a running pool gateway as a hostile client would, and print what held.

    finetune pool serve runs/pool/manifest.json --port 8765 --api-key-env POOL_KEY &
    .venv/bin/python benchmarks/gateway_probe.py http://127.0.0.1:8765 --key-env POOL_KEY --pid $!

Each probe prints one line: a chunked body of --body-mb MB (bytes the gateway took before it
answered, and its RSS growth with --pid), a silent socket and a request head sent one byte every
0.5 s (seconds until the gateway closed them), a body that stops halfway (the answer), the key
with a lowercase scheme, /openapi.json, and whether /metrics counted the refusals. Nothing here
needs a model to answer: every probe is refused before a member is called.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx


def _rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def connect(url: str) -> socket.socket:
    u = urlparse(url)
    return socket.create_connection((u.hostname, u.port), timeout=10)


def closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes ``sock`` (reading whatever it sends); inf after ``limit``."""
    start = time.perf_counter()
    sock.settimeout(limit)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return float("inf")
    except OSError:
        pass
    return time.perf_counter() - start


def chunked_body(url: str, auth: str, megabytes: int) -> tuple[int, bytes]:
    """Send a chunked body of ``megabytes`` unless the server answers first: (bytes sent, its
    status line). ``auth`` is an Authorization header line, or empty."""
    sock = connect(url)
    sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n".encode())
    chunk, sent, reply = b"x" * 65536, 0, b""
    sock.settimeout(0.05)
    while sent < megabytes << 20 and not reply:
        try:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
            reply = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            sock.settimeout(5)
            try:
                reply = sock.recv(4096)
            except OSError:
                reply = b"(connection closed without an answer)"
    sock.close()
    return sent, reply.split(b"\r\n")[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="the gateway, e.g. http://127.0.0.1:8765")
    p.add_argument("--key-env", help="environment variable holding the gateway's key")
    p.add_argument("--pid", type=int, help="the gateway's process id, to report its RSS")
    p.add_argument("--body-mb", type=int, default=300)
    args = p.parse_args()
    key = os.environ[args.key_env] if args.key_env else None
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    before = _rss_mb(args.pid)
    start = time.perf_counter()
    sent, status = chunked_body(args.url, auth, args.body_mb)
    after = _rss_mb(args.pid)
    rss = f", gateway RSS {before:.0f} -> {after:.0f} MB" if before is not None else ""
    print(f"chunked {args.body_mb} MB body: {status.decode(errors='replace')} after {sent / 2**20:.1f} MiB sent "
          f"in {time.perf_counter() - start:.2f} s{rss}")

    print(f"silent socket: closed after {closed_after(connect(args.url), 120):.1f} s")
    slow = connect(args.url)
    start = time.perf_counter()
    try:
        for byte in b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" * 10:
            slow.sendall(bytes([byte]))
            time.sleep(0.5)
    except OSError:
        pass
    print(f"request head at one byte per 0.5 s: closed after {time.perf_counter() - start:.1f} s")

    half = connect(args.url)
    start = time.perf_counter()
    half.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100\r\n\r\n0123456789".encode())
    half.settimeout(120)
    answer = half.recv(4096).split(b"\r\n")[0].decode(errors="replace")
    print(f"body stopped after 10 of 100 bytes: {answer} after {time.perf_counter() - start:.1f} s")

    if key:
        r = httpx.get(f"{args.url}/v1/models", headers={"Authorization": f"bearer {key}"})
        print(f"lowercase 'bearer' scheme: {r.status_code}")
    print(f"/openapi.json: {httpx.get(f'{args.url}/openapi.json', headers=headers).status_code}")
    counted = [line for line in httpx.get(f"{args.url}/metrics", headers=headers).text.splitlines()
               if line.startswith("finetune_pool_http_responses_total") and 'status="2' not in line]
    print("metrics, refusals counted:\n  " + "\n  ".join(counted))


if __name__ == "__main__":
    main()
