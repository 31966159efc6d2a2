"""Small OpenAI-compatible servers for gateway tests: each answers /v1/chat/completions the way
it is told (an answer, tool calls, a delay, an HTTP error, a malformed body) and records what it
was sent. Real HTTP on a local port, one thread per connection."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the default listen backlog (5) resets connections under 200 concurrent requests


class Stub:
    def __init__(self, content: str = "ok", tool_calls: list | None = None, delay: float = 0.0,
                 status: int = 200, raw: bytes | None = None, reply=None, finish: str = "stop", pace: float = 0.0):
        self.content, self.tool_calls, self.delay, self.status, self.raw = content, tool_calls, delay, status, raw
        self.finish, self.pace = finish, pace  # the finish reason; seconds between streamed words
        self.reply = reply  # optional function(request body) -> content
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, kind: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, content: str, body: dict):
                """Server-sent events, a word per chunk, ``pace`` seconds apart; usage when asked."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                words = content.split(" ")
                for i, word in enumerate(words):
                    time.sleep(stub.pace)
                    delta = {"content": word + (" " if i < len(words) - 1 else "")}
                    self.wfile.write(f"data: {json.dumps({'choices': [{'index': 0, 'delta': delta}]})}\n\n".encode())
                    self.wfile.flush()
                end = {"choices": [{"index": 0, "delta": {}, "finish_reason": stub.finish}]}
                self.wfile.write(f"data: {json.dumps(end)}\n\n".encode())
                if (body.get("stream_options") or {}).get("include_usage"):
                    usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": len(words),
                                                      "total_tokens": 5 + len(words)}}
                    self.wfile.write(f"data: {json.dumps(usage)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.close_connection = True

            def do_GET(self):
                self._send(200, json.dumps({"object": "list", "data": [{"id": "stub", "object": "model"}]}).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"body": body, "authorization": self.headers.get("Authorization")})
                time.sleep(stub.delay)
                if stub.raw is not None:
                    return self._send(stub.status, stub.raw, "text/plain")
                if stub.status != 200:
                    return self._send(stub.status, b'{"error": "boom"}')
                content = stub.reply(body) if stub.reply else stub.content
                if body.get("stream"):
                    return self._stream(content, body)
                message = {"role": "assistant", "content": content}
                if stub.tool_calls:
                    message["tool_calls"] = stub.tool_calls
                self._send(200, json.dumps({"id": "x", "object": "chat.completion", "model": body.get("model"),
                                            "choices": [{"index": 0, "message": message,
                                                         "finish_reason": stub.finish}],
                                            "usage": {"prompt_tokens": 5, "completion_tokens": 3,
                                                      "total_tokens": 8}}).encode())

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def call(name: str, **arguments) -> dict:
    return {"id": f"call_{name}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
