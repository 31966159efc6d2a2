"""The things being compared, behind one interface: a batch of tasks in, one reply per task out.

* :class:`HFModel` — a model folder (or a training run: its base plus adapter, or an adapter
  folder) with transformers; a batch is one left-padded ``generate`` call. Prompts are the model's
  own chat template with the task's tools, so it sees exactly what it was trained on.
* :class:`GGUFModel` — a GGUF file through llama.cpp (llama-cpp-python, in process), with the
  chat template stored in the GGUF, as ``pool serve`` runs GGUF members.
* :class:`EndpointModel` — any OpenAI-compatible server.
* :class:`PoolModel` — a fusion manifest run in process by the pool runtime, in a chosen mode, on a
  subset of its members, or with a member sampled N ways (self-fusion).

Tool calls are read from the wire ``tool_calls`` or parsed from the text in the model's format
(its chat template says which); a call that cannot be read makes the reply *unparseable*, with
the reason. Every reply carries its latency, tokens in and out and its relative cost.

Example::

    m = HFModel("base", Path("runs/smollm2"))
    m.start()
    [reply] = await m.answer([task], {"max_tokens": 64, "temperature": 0.0, "top_p": 1.0, "seed": 0})
    reply.calls, reply.latency_s
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from finetune import FinetuneError
from finetune.contracts.chat import TEMPLATES, recognise
from finetune.contracts.tokenizer import load_tokenizer
from finetune.pool.manifest import load_manifest
from finetune.pool.request import BadRequest, parse_request
from finetune.pool.runtime import Pool, QuorumError


@dataclass
class Reply:
    text: str = ""
    calls: list[dict] | None = field(default_factory=list)  # [{"name", "arguments": dict}]; None: unparseable
    problem: str | None = None  # why the calls could not be read, or why the request failed
    failed: bool = False  # no answer at all (error, timeout, the pool below its quorum)
    latency_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    fusion: dict | None = None  # a pool's winner and each member's status


def read_text_calls(text: str, fmt: str | None) -> tuple[str, list[dict] | None, str | None]:
    """(content, calls, problem) from an answer written as text in tool-call format ``fmt``."""
    if fmt not in TEMPLATES:
        return text, [], None
    try:
        content, calls = TEMPLATES[fmt].parse(text)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        return text, None, f"unparseable: {type(exc).__name__}: {exc}"
    for marker in ("<tool_call>", "<|python_start|>"):
        if marker in content:
            return text, None, f"unparseable: {marker} left open (cut off by max_tokens?)"
    return _checked(content, calls)


def read_wire_calls(message: dict, fmt: str | None) -> tuple[str, list[dict] | None, str | None]:
    """(content, calls, problem) from an OpenAI assistant message."""
    content = message.get("content") or ""
    wire = message.get("tool_calls") or []
    if not wire:
        return read_text_calls(content, fmt)
    calls = []
    for c in wire:
        f = c.get("function") or {}
        calls.append({"name": f.get("name"), "arguments": f.get("arguments")})
    return _checked(content, calls)


def _checked(content: str, calls: list[dict]) -> tuple[str, list[dict] | None, str | None]:
    out = []
    for c in calls:
        args = c["arguments"]
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError as exc:
                return content, None, f"unparseable: arguments of {c['name']!r} are not JSON ({exc.msg})"
        if not isinstance(c["name"], str) or not isinstance(args, dict):
            return content, None, "unparseable: a call needs a name and an object of arguments"
        out.append({"name": c["name"], "arguments": args})
    return content, out, None


def plain_messages(messages: list[dict]) -> list[dict]:
    """Wire messages with text content everywhere (chat templates concatenate it; a tool-call turn's
    ``content`` is null on the wire)."""
    return [{**m, "content": m.get("content") or ""} for m in messages]


class Contender:
    """What every contender has; ``answer`` takes a batch of tasks and one generation setting."""

    kind = "model"

    def __init__(self, name: str, description: str, cost: float = 1.0):
        self.name, self.description, self.cost = name, description, cost

    async def start(self) -> None:
        """Load or connect; raises when the contender cannot run (it is then reported as failed)."""

    async def answer(self, tasks: list[dict], gen: dict) -> list[Reply]:
        raise NotImplementedError

    async def close(self) -> None:
        """Release what ``start`` took."""


class HFModel(Contender):
    def __init__(self, name: str, path: Path, adapter: Path | None = None, cost: float = 1.0):
        super().__init__(name, f"transformers: {path}" + (f" + adapter {adapter}" if adapter else ""), cost)
        self.path, self.adapter = Path(path), adapter

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from finetune.export.source import open_source

        src = open_source(self.path, self.adapter)
        tok_dir = next((p for p in (src.run and src.run / "tokenizer", src.adapter, src.model)
                        if p and (p / "tokenizer_config.json").is_file()), src.model)
        self.tok = load_tokenizer(tok_dir)
        self.tok.padding_side = "left"
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(str(src.model), dtype=dtype)
        if src.adapter is not None:
            from peft import PeftModel

            if len(self.tok) > model.get_input_embeddings().weight.shape[0]:
                model.resize_token_embeddings(len(self.tok))
            model = PeftModel.from_pretrained(model, str(src.adapter)).merge_and_unload()
        self.model = model.to(self.device).eval()
        self.format = recognise(self.tok.chat_template)
        ends = {self.tok.eos_token_id, *(self.tok.convert_tokens_to_ids(t.end_of_turn) for t in TEMPLATES.values()
                                         if t.end_of_turn in self.tok.get_vocab())}
        self.stop_ids = sorted(i for i in ends if i is not None)

    def _generate(self, tasks: list[dict], gen: dict) -> list[Reply]:
        import torch

        prompts = [self.tok.apply_chat_template(plain_messages(t["messages"]),
                                                tools=t["tools"] or None, add_generation_prompt=True, tokenize=False)
                   for t in tasks]
        batch = self.tok(prompts, add_special_tokens=False, padding=True, return_tensors="pt").to(self.device)
        sample = gen["temperature"] > 0
        torch.manual_seed(gen["seed"])
        start = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(**batch, max_new_tokens=gen["max_tokens"], do_sample=sample,
                                      temperature=gen["temperature"] if sample else None,
                                      top_p=gen["top_p"] if sample else None, top_k=None,
                                      pad_token_id=self.tok.pad_token_id, eos_token_id=self.stop_ids)
        latency = time.perf_counter() - start
        replies = []
        for i, t in enumerate(tasks):
            new = out[i, batch["input_ids"].shape[1]:].tolist()
            cut = next((j for j, x in enumerate(new) if x in self.stop_ids), len(new))
            text = self.tok.decode(new[:cut], skip_special_tokens=False)
            content, calls, problem = read_text_calls(text, self.format) if t["tools"] else (text, [], None)
            replies.append(Reply(text, calls, problem, latency_s=round(latency, 4),
                                 tokens_in=int(batch["attention_mask"][i].sum()), tokens_out=min(cut + 1, len(new)),
                                 cost=self.cost))
        return replies

    async def answer(self, tasks: list[dict], gen: dict) -> list[Reply]:
        return await asyncio.to_thread(self._generate, tasks, gen)


class GGUFModel(Contender):
    kind = "gguf"

    def __init__(self, name: str, path: Path, context_length: int | None = None, cost: float = 1.0):
        super().__init__(name, f"llama.cpp: {path}", cost)
        self.path, self.context_length = Path(path), context_length
        self.lock = threading.Lock()

    async def start(self) -> None:
        import llama_cpp

        if not self.path.is_file():
            raise FinetuneError(f"{self.path}: no such GGUF file")
        self.llm = await asyncio.to_thread(llama_cpp.Llama, str(self.path), n_ctx=self.context_length or 0,
                                           verbose=False)
        self.format = recognise(self.llm.metadata.get("tokenizer.chat_template"))

    def _one(self, task: dict, gen: dict) -> Reply:
        with self.lock:  # one llama.cpp context: requests take turns, as on a llama.cpp server
            start = time.perf_counter()
            try:
                out = self.llm.create_chat_completion(
                    messages=plain_messages(task["messages"]), tools=task["tools"] or None, max_tokens=gen["max_tokens"],
                    temperature=gen["temperature"], top_p=gen["top_p"], seed=gen["seed"])
            except ValueError as exc:  # the prompt does not fit the context
                return Reply(failed=True, problem=f"error: {exc}", cost=self.cost)
            latency = time.perf_counter() - start
        message = out["choices"][0]["message"]
        text = message.get("content") or ""
        content, calls, problem = read_wire_calls(message, self.format) if task["tools"] else (text, [], None)
        usage = out.get("usage") or {}
        return Reply(text, calls, problem, latency_s=round(latency, 4), tokens_in=usage.get("prompt_tokens", 0),
                     tokens_out=usage.get("completion_tokens", 0), cost=self.cost)

    async def answer(self, tasks: list[dict], gen: dict) -> list[Reply]:
        return list(await asyncio.gather(*(asyncio.to_thread(self._one, t, gen) for t in tasks)))

    async def close(self) -> None:
        self.llm = None


def _request(task: dict, gen: dict) -> dict:
    body = {"messages": task["messages"], "max_tokens": gen["max_tokens"], "temperature": gen["temperature"],
            "top_p": gen["top_p"], "seed": gen["seed"]}
    if task["tools"]:
        body["tools"] = task["tools"]
    return body


class EndpointModel(Contender):
    kind = "endpoint"

    def __init__(self, name: str, endpoint, tool_call_format: str | None, cost: float = 1.0, timeout_s: float = 300):
        super().__init__(name, f"endpoint: {endpoint.url} ({endpoint.model})", cost)
        self.endpoint, self.format, self.timeout_s = endpoint, tool_call_format, timeout_s

    async def start(self) -> None:
        import os

        import httpx

        key = os.environ.get(self.endpoint.api_key_env or "", "")
        self.client = httpx.AsyncClient(base_url=self.endpoint.url.rstrip("/"), timeout=self.timeout_s,
                                        headers={"Authorization": f"Bearer {key}"} if key else {})
        try:
            (await self.client.get("/models", timeout=10)).raise_for_status()
        except httpx.HTTPError as exc:
            raise FinetuneError(f"{self.endpoint.url} does not answer ({type(exc).__name__}: {exc})") from None

    async def _one(self, task: dict, gen: dict) -> Reply:
        import httpx

        start = time.perf_counter()
        try:
            r = await self.client.post("/chat/completions", json={**_request(task, gen), "model": self.endpoint.model})
            r.raise_for_status()
            data = r.json()
            message = data["choices"][0]["message"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            return Reply(failed=True, problem=f"error: {type(exc).__name__}: {str(exc)[:200]}", cost=self.cost,
                         latency_s=round(time.perf_counter() - start, 4))
        text = message.get("content") or ""
        content, calls, problem = read_wire_calls(message, self.format) if task["tools"] else (text, [], None)
        usage = data.get("usage") or {}
        return Reply(text, calls, problem, latency_s=round(time.perf_counter() - start, 4),
                     tokens_in=usage.get("prompt_tokens") or 0, tokens_out=usage.get("completion_tokens") or 0,
                     cost=self.cost)

    async def answer(self, tasks: list[dict], gen: dict) -> list[Reply]:
        return list(await asyncio.gather(*(self._one(t, gen) for t in tasks)))

    async def close(self) -> None:
        await self.client.aclose()


class PoolModel(Contender):
    kind = "pool"

    def __init__(self, name: str, manifest_path: Path, mode: str | None, members: list[str] | None,
                 samples: int | None):
        self.manifest_path = Path(manifest_path)
        m = load_manifest(self.manifest_path)
        if members:
            unknown = sorted(set(members) - {x.name for x in m.members})
            if unknown:
                raise FinetuneError(f"contender {name}: no member(s) {unknown} in {manifest_path} "
                                    f"(members: {[x.name for x in m.members]})")
        data = m.model_dump()
        data["members"] = [x for x in data["members"] if not members or x["name"] in members]
        for x in data["members"]:
            x["samples"] = samples or x["samples"]
        data["fusion"]["mode"] = mode or m.fusion.mode
        data["fusion"]["quorum"] = min(data["fusion"]["quorum"], sum(x["samples"] for x in data["members"]))
        try:  # the manifest's own rules hold for the variant too (merge needs a generative judge ...)
            self.manifest = type(m).model_validate(data)
        except ValidationError as exc:
            raise FinetuneError(f"contender {name}: {exc.errors()[0]['msg']}") from None
        one = len(data["members"]) == 1 and data["members"][0]["samples"] > 1
        self.kind = "self_fusion" if one else "pool"
        what = ", ".join(f"{x['name']}" + (f" x{x['samples']}" if x["samples"] > 1 else "") for x in data["members"])
        super().__init__(name, f"pool {m.name} ({what}; {data['fusion']['mode']}, {m.judge.kind} judge)", 0.0)

    async def start(self) -> None:
        self.pool = Pool(self.manifest_path, manifest=self.manifest)
        await self.pool.start()

    async def _one(self, task: dict, gen: dict) -> Reply:
        body = {**_request(task, gen), "model": self.manifest.name}
        start = time.perf_counter()
        try:
            out = await self.pool.complete(parse_request(json.dumps(body).encode()))
        except QuorumError as exc:
            record = exc.record
            return Reply(failed=True, problem=f"no usable answer: {exc}", latency_s=round(time.perf_counter() - start, 4),
                         cost=self._cost(record), fusion={"winner": None, "members": {a["member"]: a["status"] for a in record["members"]}})
        except BadRequest as exc:
            return Reply(failed=True, problem=f"error: the pool refused the request: {exc}")
        except FinetuneError as exc:
            return Reply(failed=True, problem=f"error: {exc}")
        record = out["fusion"]
        last = {a["member"]: a for a in record["members"]}  # each candidate's final (latest round) answer
        candidates = [{"member": n, **a["answer"]} for n, a in last.items() if a["status"] == "ok"]
        message = out["choices"][0]["message"]
        text = message.get("content") or ""
        content, calls, problem = read_wire_calls(message, None) if task["tools"] else (text, [], None)
        return Reply(text, calls, problem, latency_s=round(time.perf_counter() - start, 4),
                     tokens_in=out["usage"]["prompt_tokens"], tokens_out=out["usage"]["completion_tokens"],
                     cost=self._cost(record), fusion={"winner": record["winner"], "members": {n: a["status"] for n, a in last.items()},
                             "candidates": candidates})

    def _cost(self, record: dict) -> float:
        """The manifest cost of every member call a request made (samples and debate rounds each count;
        a call cancelled before it started costs nothing)."""
        costs = {x.name: x.cost for x in self.manifest.members}
        return sum(costs[a["member"].partition("#")[0]] for a in record["members"]
                   if a["status"] != "cancelled" or a["latency_s"] > 0)

    async def answer(self, tasks: list[dict], gen: dict) -> list[Reply]:
        return list(await asyncio.gather(*(self._one(t, gen) for t in tasks)))

    async def close(self) -> None:
        await self.pool.close()
