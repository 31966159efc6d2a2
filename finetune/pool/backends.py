"""Per-backend serving commands for a fusion pool: which servers to start, on which ports, with
which flags. :mod:`finetune.pool.render` writes them out.

One server per model the backend must hold: for vLLM and SGLang a shared base is one server with
every adapter member as a LoRA module (one copy of the base weights); llama.cpp gets one server
per member (its server binds one LoRA per model); TGI one container per full model, adapters
passed with ``--lora-adapters``; Ollama one Modelfile per member behind its own daemon. Members
with an ``endpoint`` are already served and get nothing. A reward-model judge runs inside the
gateway; a generative judge is served like a member.

Tool-call parser names and Ollama's Go TEMPLATE come from the chat format's record
(:mod:`finetune.contracts.chat`); llama.cpp's server reads the GGUF's own chat template.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from finetune import FinetuneError
from finetune.contracts.chat import TEMPLATES
from finetune.pool.manifest import Artifact, Manifest, Member, artifact_root

BACKENDS = ("vllm", "llamacpp", "ollama", "sglang", "tgi", "litellm")
GGUF_PREFERENCE = ("gguf-q4_k_m", "gguf-q5_k_m", "gguf-q6_k", "gguf-q8_0", "gguf-f16", "gguf-bf16")
HF_PREFERENCE = ("safetensors", "bnb-nf4")
TGI_IMAGE = "ghcr.io/huggingface/text-generation-inference:3.3.6"
OLLAMA_URL = "http://127.0.0.1:11434/v1"


@dataclass
class Server:
    name: str                     # its script is servers/<name>.sh
    port: int
    argv: list[str]
    serves: dict[str, str] = field(default_factory=dict)  # member (or "judge") -> model name on this server
    template: str | None = None   # chat template file the command names (templates/<name>.jinja)


@dataclass
class Plan:
    servers: list[Server]
    endpoints: dict[str, tuple[str, str]]  # member or "judge" -> (base URL, model name)
    files: dict[str, str] = field(default_factory=dict)  # extra files to write (relative path -> text)
    setup: list[list[str]] = field(default_factory=list)  # run once before the servers (ollama create)


class Paths:
    """Artifact paths as seen from the render folder (the scripts cd there first)."""

    def __init__(self, manifest_path: Path, out: Path):
        self.manifest_path, self.out = Path(manifest_path), Path(out)

    def __call__(self, a: Artifact, sub: str | None = None) -> str:
        target = artifact_root(self.manifest_path, a) / (sub if sub is not None else a.path)
        return os.path.relpath(target.resolve(), self.out.resolve())

    def root(self, a: Artifact) -> Path:
        return artifact_root(self.manifest_path, a)


def pick(artifacts: list[Artifact], preference: tuple[str, ...]) -> Artifact | None:
    by = {a.format: a for a in artifacts}
    return next((by[f] for f in preference if f in by), None)


def _need(art: Artifact | None, who: str, backend: str, what: str) -> Artifact:
    if art is None:
        raise FinetuneError(f"{who}: {backend} needs {what}; export it with that format and build the pool again "
                            "(or give the member an endpoint)")
    return art


def _lora_rank(paths: Paths, a: Artifact) -> int | None:
    cfg = paths.root(a) / a.path / "adapter_config.json"
    return json.loads(cfg.read_text()).get("r") if cfg.is_file() else None


def _local_members(m: Manifest) -> list[Member]:
    return [x for x in m.members if x.endpoint is None]


def _generative_judge(m: Manifest) -> bool:
    return m.judge.kind == "generative" and m.judge.endpoint is None


def plan_hf(m: Manifest, paths: Paths, backend: str, port: int) -> Plan:
    """vLLM and SGLang: one server per distinct base (adapters as LoRA modules), one per full model."""
    servers, tools = [], m.tool_call_format != "none"
    chat = TEMPLATES.get(m.tool_call_format)
    parser = chat and (chat.vllm_parser if backend == "vllm" else chat.sglang_parser)

    vllm = backend == "vllm"

    def command(model: str, name: str, length: int, template: str | None, loras: dict[str, str], rank):
        # The same server for both; only the flag names differ.
        argv = ["vllm", "serve", model] if vllm else ["${PYTHON:-python}", "-m", "sglang.launch_server", "--model-path",
                                                      model]
        argv += ["--host", "127.0.0.1", "--port", str(port + len(servers)), "--served-model-name", name,
                 "--max-model-len" if vllm else "--context-length", str(length)]
        if template:
            argv += ["--chat-template", template]
        if tools:
            argv += [*(["--enable-auto-tool-choice"] if vllm else []), "--tool-call-parser", parser]
        if loras:
            argv += ["--enable-lora", "--max-loras" if vllm else "--max-loras-per-batch", str(len(loras)),
                     "--lora-modules" if vllm else "--lora-paths", *[f"{k}={v}" for k, v in loras.items()]]
            argv += ["--max-lora-rank", str(rank)] if rank else []
        return argv

    def add(name: str, model: str, length: int, template_text: str | None, loras: dict[str, str], rank, serves):
        template = f"templates/{name}.jinja" if template_text else None
        servers.append(Server(name, port + len(servers), command(model, name, length, template, loras, rank),
                              serves, template))

    for base in m.bases:
        members = [x for x in _local_members(m) if x.base == base.name]
        if not members:
            continue
        model = _need(pick(base.artifacts, ("safetensors",)), f"bases[{base.name}]", backend, "safetensors")
        adapters = {x.name: _need(pick(x.adapters, ("adapter",)), f"members[{x.name}]", backend,
                                  "its PEFT adapter (`--format adapter`)") for x in members}
        ranks = [r for r in (_lora_rank(paths, a) for a in adapters.values()) if r]
        add(base.name, paths(model), base.context_length, base.chat_template,
            {k: paths(a) for k, a in adapters.items()}, max(ranks, default=None),
            # SGLang picks an adapter by "base:adapter" as the model name, vLLM by the module name.
            {x.name: x.name if vllm else f"{base.name}:{x.name}" for x in members})
    for x in _local_members(m):
        if x.base is None:
            art = _need(pick(x.artifacts, HF_PREFERENCE), f"members[{x.name}]", backend,
                        "a Hugging Face format (`--format safetensors` or `bnb-nf4`)")
            add(x.name, paths(art), x.context_length, x.chat_template, {}, None, {x.name: x.name})
    if _generative_judge(m):
        art = pick(m.judge.artifacts, HF_PREFERENCE)
        add("judge", paths(art), m.judge.max_length, None, {}, None, {"judge": "judge"})
    return Plan(servers, _endpoints(servers))


def plan_llamacpp(m: Manifest, paths: Paths, port: int) -> Plan:
    """One llama-cpp-python server per member: its GGUF, or the base GGUF plus its GGUF LoRA."""
    servers = []
    bases = {b.name: b for b in m.bases}

    def add(name: str, model: str, lora: str | None, length: int, serves: dict[str, str]):
        argv = ["${PYTHON:-python}", "-m", "llama_cpp.server", "--model", model]
        argv += ["--lora_path", lora] if lora else []
        # --interrupt_requests false: by default a waiting request cuts the streamed one short
        argv += ["--model_alias", name, "--host", "127.0.0.1", "--port", str(port + len(servers)),
                 "--n_ctx", str(length), "--interrupt_requests", "false"]
        servers.append(Server(name, port + len(servers), argv, serves))

    for x in _local_members(m):
        if x.base:
            base = _need(pick(bases[x.base].artifacts, GGUF_PREFERENCE), f"bases[{x.base}]", "llama.cpp",
                         "a GGUF (`--format gguf-f16` or a quantization)")
            lora = _need(pick(x.adapters, ("gguf-lora",)), f"members[{x.name}]", "llama.cpp",
                         "its GGUF LoRA (`--format gguf-lora`)")
            add(x.name, paths(base), paths(lora), x.context_length, {x.name: x.name})
        else:
            art = _need(pick(x.artifacts, GGUF_PREFERENCE), f"members[{x.name}]", "llama.cpp",
                        "a GGUF (`--format gguf-q4_k_m` or another GGUF format)")
            add(x.name, paths(art), None, x.context_length, {x.name: x.name})
    if _generative_judge(m):
        art = _need(pick(m.judge.artifacts, GGUF_PREFERENCE), "judge", "llama.cpp",
                    "a GGUF of the judge (`finetune export JUDGE_RUN --format gguf-q8_0`, then judge.export)")
        add("judge", paths(art), None, m.judge.max_length, {"judge": "judge"})
    return Plan(servers, _endpoints(servers))


def plan_tgi(m: Manifest, paths: Paths, port: int) -> Plan:
    """One TGI container per full model; a base container loads its members' adapters."""
    servers = []

    def add(name: str, model: Artifact, length: int, adapters: dict[str, Artifact], serves: dict[str, str]):
        mounts, argv_tail = [], []
        for i, a in enumerate([model, *adapters.values()]):
            mounts += ["-v", f"$(cd {paths(a, '')} && pwd):/models/{i}:ro"]
        argv_tail = ["--model-id", f"/models/0/{model.path}", "--max-input-tokens", str(length - 1),
                     "--max-total-tokens", str(length)]
        if adapters:
            argv_tail += ["--lora-adapters", ",".join(f"{k}=/models/{i + 1}/{a.path}"
                                                      for i, (k, a) in enumerate(adapters.items()))]
        argv = ["docker", "run", "--rm", "--shm-size", "1g", "-p", f"127.0.0.1:{port + len(servers)}:80",
                *mounts, TGI_IMAGE, *argv_tail]
        servers.append(Server(name, port + len(servers), argv, serves))

    for base in m.bases:
        members = [x for x in _local_members(m) if x.base == base.name]
        if members:
            model = _need(pick(base.artifacts, ("safetensors",)), f"bases[{base.name}]", "TGI", "safetensors")
            adapters = {x.name: _need(pick(x.adapters, ("adapter",)), f"members[{x.name}]", "TGI",
                                      "its PEFT adapter (`--format adapter`)") for x in members}
            add(base.name, model, base.context_length, adapters, {x.name: x.name for x in members})
    for x in _local_members(m):
        if x.base is None:
            add(x.name, _need(pick(x.artifacts, ("safetensors",)), f"members[{x.name}]", "TGI", "safetensors"),
                x.context_length, {}, {x.name: "tgi"})
    if _generative_judge(m):
        add("judge", pick(m.judge.artifacts, ("safetensors",)), m.judge.max_length, {}, {"judge": "tgi"})
    return Plan(servers, _endpoints(servers))


def _endpoints(servers: list[Server]) -> dict[str, tuple[str, str]]:
    return {who: (f"http://127.0.0.1:{s.port}/v1", model) for s in servers for who, model in s.serves.items()}


def plan_ollama(m: Manifest, paths: Paths) -> Plan:
    """One Modelfile per member (FROM, ADAPTER, TEMPLATE, PARAMETER) and one `ollama create` each."""

    def rel(a: Artifact) -> str:  # the Modelfile sits in ollama/<name>/, two levels below the render folder
        return os.path.normpath(os.path.join("..", "..", paths(a)))

    bases = {b.name: b for b in m.bases}
    files, creates, endpoints = {}, [], {}
    targets = [(x.name, x) for x in _local_members(m)]
    if _generative_judge(m):
        targets.append(("judge", None))
    for name, x in targets:
        folder = f"ollama/{name}"
        if x is None:
            art = _need(pick(m.judge.artifacts, GGUF_PREFERENCE), "judge", "Ollama", "a GGUF of the judge")
            lines, fmt, sampling, length = [f"FROM {rel(art)}"], None, None, m.judge.max_length
        elif x.base:
            base = _need(pick(bases[x.base].artifacts, GGUF_PREFERENCE), f"bases[{x.base}]", "Ollama", "a GGUF")
            lora = _need(pick(x.adapters, ("gguf-lora",)), f"members[{name}]", "Ollama",
                         "its GGUF LoRA (`--format gguf-lora`)")
            lines, fmt, sampling, length = [f"FROM {rel(base)}", f"ADAPTER {rel(lora)}"], x.tool_call_format, \
                x.sampling, x.context_length
        else:
            art = _need(pick(x.artifacts, GGUF_PREFERENCE), f"members[{name}]", "Ollama", "a GGUF")
            lines, fmt, sampling, length = [f"FROM {rel(art)}"], x.tool_call_format, x.sampling, x.context_length
        if fmt in TEMPLATES:
            lines.append(f'TEMPLATE """{TEMPLATES[fmt].ollama}"""')
            lines.append(f'PARAMETER stop "{TEMPLATES[fmt].end_of_turn}"')
        lines.append(f"PARAMETER num_ctx {length}")
        if sampling:
            lines += [f"PARAMETER temperature {sampling.temperature}", f"PARAMETER top_p {sampling.top_p}",
                      f"PARAMETER num_predict {sampling.max_tokens}"]
            lines += [f"PARAMETER stop {json.dumps(s)}" for s in sampling.stop]
        files[f"{folder}/Modelfile"] = "\n".join(lines) + "\n"
        model = f"{m.name}-{name}"
        creates.append(["ollama", "create", model, "-f", f"{folder}/Modelfile"])
        endpoints[name] = (OLLAMA_URL, model)
    return Plan([], endpoints, files, creates)


def plan_litellm(m: Manifest) -> Plan:
    """A LiteLLM proxy config over every member's (and a generative judge's) endpoint."""
    entries, missing = [], []
    for name, ep in [(x.name, x.endpoint) for x in m.members] + [("judge", m.judge.endpoint)]:
        if ep is None:
            if name != "judge" or m.judge.kind == "generative":
                missing.append(name)
            continue
        params = {"model": f"openai/{ep.model}", "api_base": ep.url,
                  "api_key": f"os.environ/{ep.api_key_env}" if ep.api_key_env else "none"}
        entries.append({"model_name": name, "litellm_params": params})
    if missing:
        raise FinetuneError(f"litellm fronts running servers, and {', '.join(missing)} ha{'s' if len(missing) == 1 else 've'}"
                            " no endpoint: render a serving backend first and render its DIR/manifest.json "
                            "(which has the endpoints) with --backend litellm")
    import yaml

    config = {"model_list": entries,
              "litellm_settings": {"request_timeout": m.fusion.member_timeout_s, "drop_params": True}}
    return Plan([], {e["model_name"]: ("http://127.0.0.1:4000/v1", e["model_name"]) for e in entries},
                {"litellm.yaml": yaml.safe_dump(config, sort_keys=False)})
