"""llama.cpp servers for a pool's local GGUF members (and a local generative judge): started with
the commands ``pool render --backend llamacpp`` writes, on free ports, and stopped together.

Example::

    servers = LocalServers(manifest, Path("runs/pool/manifest.json"))
    endpoints = servers.start()   # {"coder": Endpoint(url="http://127.0.0.1:41234/v1", model="coder"), ...}
    servers.stop()
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from finetune import FinetuneError
from finetune.pool.backends import Paths, plan_llamacpp
from finetune.pool.manifest import Endpoint, Manifest

START_TIMEOUT_S = 180


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServers:
    def __init__(self, manifest: Manifest, manifest_path: Path):
        self.manifest, self.manifest_path = manifest, Path(manifest_path)
        self.procs: list[subprocess.Popen] = []

    def start(self) -> dict[str, Endpoint]:
        """Start one server per local member (and the judge), wait until each answers; returns
        member (or "judge") -> its endpoint. On any failure every started server is stopped."""
        here = self.manifest_path.resolve().parent
        plan = plan_llamacpp(self.manifest, Paths(self.manifest_path, here), port=0)
        endpoints = {}
        try:
            for server in plan.servers:
                port = free_port()
                argv = [sys.executable if a.startswith("$") else a for a in server.argv]
                argv[argv.index("--port") + 1] = str(port)
                proc = subprocess.Popen(argv, cwd=here, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
                self.procs.append(proc)
                for who, model in server.serves.items():
                    endpoints[who] = Endpoint(url=f"http://127.0.0.1:{port}/v1", model=model)
                deadline = time.time() + START_TIMEOUT_S
                while True:
                    if proc.poll() is not None:
                        raise FinetuneError(f"the llama.cpp server for {server.name} exited ({proc.returncode}); "
                                            f"run `{' '.join(argv)}` in {here} to see why")
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.time() > deadline:
                        raise FinetuneError(f"the llama.cpp server for {server.name} did not answer in "
                                            f"{START_TIMEOUT_S} s")
                    time.sleep(0.3)
        except BaseException:
            self.stop()
            raise
        return endpoints

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, 15)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                p.wait()
        self.procs = []
