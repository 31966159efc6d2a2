"""llama.cpp servers for a pool's local GGUF members (and a local generative judge): started with
the commands ``pool render --backend llamacpp`` writes (through :mod:`finetune.pool.member`, which
reads request text as text), on free ports, started again when one dies or is still busy with work
the gateway gave up on, and stopped together. They die with the gateway: each is started with
``PR_SET_PDEATHSIG`` (SIGKILL), so a ``kill -9`` or an OOM kill of ``pool serve`` takes them too
instead of leaving gigabytes and ports behind.

They are the gateway's private back ends, so nothing reaches them around it: each listens on
127.0.0.1 only and requires a key made for this run (``secrets.token_urlsafe``), which the gateway
alone holds, so another local process cannot skip the gateway's key and limits. They start with a
clean environment (:data:`PASSED_ENV` and nothing else): the gateway's API key, cloud credentials
or a stray ``HOST``/``PORT`` (which llama-cpp-python's server reads) never reach them; the run key
goes in the environment, never on the command line that ``ps`` shows.

Example::

    servers = LocalServers(manifest, Path("runs/pool/manifest.json"))
    endpoints = servers.start()   # {"coder": Endpoint(url="http://127.0.0.1:41234/v1", model="coder"), ...}
    servers.stop()
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from finetune import FinetuneError
from finetune.pool.backends import Paths, plan_llamacpp
from finetune.pool.manifest import Endpoint, Manifest
from finetune.pool.member import PlainText

START_TIMEOUT_S = 180
# A server whose memory grew past 4x what it held after its warm-up, or that plus 1 GiB if more, is
# started again once it is idle: a member that only grows (the probe saw 0.3 -> 3 GB over ~300
# requests; malloc_trim keeps a tiny pool flat, +15 MB over 1,200) cannot take the host down.
RSS_FACTOR, RSS_HEADROOM = 4, 1 << 30
# What a server needs from the gateway's environment: the executable search path, locale, temp and
# home folders, and which accelerator and threads to use. Everything else (keys, tokens) stays out.
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES",
              "HIP_VISIBLE_DEVICES", "OMP_NUM_THREADS")


PR_SET_PDEATHSIG = 1


def _die_with(parent: int):
    """A child's pre-exec step: the kernel sends it SIGKILL when the thread that started it exits
    (every spawn happens on the gateway's event-loop thread, which lives as long as the gateway);
    if the gateway died before this ran, exit at once."""
    def prepare():
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
    return prepare


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PromptCounter:
    """Prompt tokens of a chat request as a llama-cpp-python server counts them (its stream does not
    say): the GGUF's own chat template through the same formatter the server uses, and the GGUF's
    tokenizer (vocabulary only, no weights)."""

    def __init__(self, gguf: Path):
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.llm = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
        self.plain = PlainText(self.llm._model)
        text = self.llm._model.token_get_text
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        template = self.llm.metadata.get("tokenizer.chat_template")
        self.format = Jinja2ChatFormatter(template, eos_token=text(eos) if eos != -1 else "",
                                          bos_token=text(bos) if bos != -1 else "") if template else None

    def __call__(self, body: dict) -> int | None:
        if self.format is None:
            return None
        spans: list[str] = []
        out = self.format(messages=self.plain.mark(body["messages"], spans), tools=self.plain.mark(body.get("tools"), spans),
                          tool_choice=body.get("tool_choice"))
        return len(self.plain.tokenize(lambda text, bos, special: self.llm.tokenize(text, add_bos=bos, special=special),
                                       out.prompt, spans, not out.added_special))


class LocalServers:
    """The llama.cpp servers of a pool; a server that dies is started again by :meth:`revive`."""

    def __init__(self, manifest: Manifest, manifest_path: Path):
        self.manifest, self.manifest_path = manifest, Path(manifest_path)
        self.here = self.manifest_path.resolve().parent
        self.procs: list[subprocess.Popen] = []
        self.commands: list[tuple[str, list[str]]] = []  # (server name, argv), as procs
        self.counters: dict[str, PromptCounter] = {}  # member (or "judge") -> its prompt counter
        self.restarts: dict[str, int] = {}  # server name -> times started again
        self.next_try: dict[str, float] = {}  # server name -> earliest time for the next restart
        self.serving: dict[str, int] = {}  # member (or "judge") -> index of its server in procs
        self.key = secrets.token_urlsafe(32)  # every server's key for this run; only the gateway has it
        self.urls: set[str] = set()  # the servers' base URLs, which the key is sent to
        self.contexts: dict[str, int] = {}  # member (or "judge") -> its server's context length (--n_ctx)
        self.starting: set[int] = set()  # servers started again and not yet answering
        self.generation: dict[str, int] = {}  # member (or "judge") -> times the gateway restarted its server
        self.rss_limit: dict[int, int] = {}  # server -> bytes past which it is started again when idle

    def _spawn(self, argv: list[str]) -> subprocess.Popen:
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
        return subprocess.Popen(argv, cwd=self.here, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env={**env, "API_KEY": self.key},
                                preexec_fn=_die_with(os.getpid()))

    def start(self) -> dict[str, Endpoint]:
        """Start one server per local member (and the judge), wait until each answers; returns
        member (or "judge") -> its endpoint. On any failure every started server is stopped."""
        plan = plan_llamacpp(self.manifest, Paths(self.manifest_path, self.here), port=0)
        endpoints = {}
        try:
            for server in plan.servers:
                port = free_port()
                argv = [sys.executable if a.startswith("$") else a for a in server.argv]
                argv[argv.index("--port") + 1] = str(port)
                argv[argv.index("llama_cpp.server")] = "finetune.pool.member"  # request text read as text
                proc = self._spawn(argv)
                self.procs.append(proc)
                self.commands.append((server.name, argv))
                counter = PromptCounter(self.here / argv[argv.index("--model") + 1])
                self.urls.add(f"http://127.0.0.1:{port}/v1")
                for who, model in server.serves.items():
                    endpoints[who] = Endpoint(url=f"http://127.0.0.1:{port}/v1", model=model)
                    self.counters[who] = counter
                    self.serving[who] = len(self.procs) - 1
                    self.contexts[who] = int(argv[argv.index("--n_ctx") + 1])
                    self.generation[who] = 0
                deadline = time.time() + START_TIMEOUT_S
                while True:
                    if proc.poll() is not None:
                        raise FinetuneError(f"the llama.cpp server for {server.name} exited ({proc.returncode}); "
                                            f"run `{' '.join(argv)}` in {self.here} to see why")
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2,
                                     headers={"Authorization": f"Bearer {self.key}"}).status_code == 200:
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

    def revive(self) -> list[str]:
        """Start again, with the same command and port, every server whose process has exited; a
        server that keeps dying is retried after 2, 4, 8 ... 64 s. Returns the names started."""
        started, now = [], time.time()
        for i, (name, _) in enumerate(self.commands):
            if self.procs[i].poll() is None or now < self.next_try.get(name, 0.0):
                continue
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self.next_try[name] = now + 2.0 ** min(self.restarts[name], 6)
            self._respawn(i)
            started.append(name)
        return started

    def restart(self, who: str) -> None:
        """Stop the server of ``who`` at once and start it again with the same command and port: it
        is busy with work the gateway gave up on (llama-cpp-python stops a stream only when it next
        sends a chunk, and sends none while its text is not yet valid UTF-8, or while it reads a
        long prompt or compiles a grammar), or idle and holding more memory than its limit. Not
        counted in ``restarts``, which counts crashes."""
        i = self.serving[who]
        if self.procs[i].poll() is None:
            os.killpg(self.procs[i].pid, signal.SIGKILL)
            self.procs[i].wait()
        self._respawn(i)
        for other, j in self.serving.items():
            if j == i:
                self.generation[other] += 1

    def _respawn(self, i: int) -> None:
        self.procs[i] = self._spawn(self.commands[i][1])
        self.starting.add(i)

    async def ready(self, who: str, timeout: float) -> None:
        """Wait (at most ``timeout``) until a server started again answers; at once for the others."""
        i = self.serving[who]
        deadline = time.monotonic() + timeout
        while i in self.starting and time.monotonic() < deadline and self.procs[i].poll() is None:
            if await self._answers(i, 1.0):
                self.starting.discard(i)
                return
            await asyncio.sleep(0.1)

    async def idle(self, who: str, within_s: float) -> bool:
        """Whether the server of ``who`` is between generations: llama-cpp-python answers
        ``/v1/models`` only then (it takes the model's lock)."""
        return await self._answers(self.serving[who], within_s)

    async def _answers(self, i: int, within_s: float) -> bool:
        try:
            async with httpx.AsyncClient() as client:
                r = await client.get(f"http://127.0.0.1:{self._port(i)}/v1/models", timeout=within_s,
                                     headers={"Authorization": f"Bearer {self.key}"})
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    def rss(self, i: int) -> int:
        """Resident memory of server ``i`` in bytes (0 when it is not running)."""
        try:
            with open(f"/proc/{self.procs[i].pid}/status") as fh:
                return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            return 0

    def measure(self) -> None:
        """Note each server's memory after its warm-up: its limit is :data:`RSS_FACTOR` times that, or
        that plus :data:`RSS_HEADROOM`, whichever is more."""
        for i in range(len(self.procs)):
            held = self.rss(i)
            self.rss_limit[i] = max(RSS_FACTOR * held, held + RSS_HEADROOM)

    def grown(self) -> list[str]:
        """One member (or "judge") of each server whose memory is past its limit."""
        first = {i: who for who, i in reversed(self.serving.items())}
        return [who for i, who in first.items() if i in self.rss_limit and self.rss(i) > self.rss_limit[i]]

    def _port(self, i: int) -> int:
        argv = self.commands[i][1]
        return int(argv[argv.index("--port") + 1])

    async def state(self, who: str) -> str:
        """``up`` when the server's process runs and its port takes connections. Not its HTTP API:
        llama-cpp-python answers even ``/v1/models`` only between generations, so a busy server
        would look dead."""
        i = self.serving[who]
        if self.procs[i].poll() is not None:
            return f"down (exited {self.procs[i].returncode})"
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self._port(i)), 2.0)
        except (OSError, TimeoutError) as exc:
            return f"down ({type(exc).__name__})"
        writer.close()
        return "up"

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
        self.procs, self.commands = [], []
