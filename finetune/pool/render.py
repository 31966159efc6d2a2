"""``finetune pool render manifest.json --backend B --out DIR``: runnable serving configuration.

DIR gets:

* ``artifacts/<name>/``: every local artifact's listed files, hard-linked from the pool folder (or
  copied, across filesystems), so DIR is self-contained and can move as one
  (:mod:`finetune.pool.place`); each file must lie inside the pool folder and have its listed
  size (``pool verify`` is the check that hashes them);
* ``servers/<name>.sh``: one foreground command per server (``cd`` to DIR first, so the artifact
  paths in it are relative to DIR);
* ``start.sh`` / ``stop.sh``: start every server in the background (logs in ``logs/``, pids in
  ``run/``), wait until each answers ``/v1/models``; stop them;
* backend files: ``templates/*.jinja`` (vLLM, SGLang), ``ollama/<member>/Modelfile``,
  ``litellm.yaml``;
* ``manifest.json``: the pool's manifest with its roots in DIR's ``artifacts/`` and every member's
  ``endpoint`` set to the server that serves it here, so ``finetune pool serve DIR/manifest.json`` runs the pool on these servers (and
  ``--backend litellm`` can front them);
* ``README.md``: how to start it, the port of each server and what the gateway expects.

Example::

    render(Path("runs/pool/manifest.json"), "llamacpp", Path("runs/pool/llamacpp"))
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from finetune import FinetuneError
from finetune.pool import backends as b
from finetune.pool.manifest import Endpoint, Manifest, artifact_root, artifacts_of, load_manifest
from finetune.pool.place import Placement, file_problems

_START = """#!/usr/bin/env bash
# Starts every server of this pool in the background and waits until each answers /v1/models.
# Logs: logs/<server>.log; stop with ./stop.sh. WAIT_S (default 900) bounds the wait.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p logs run
{setup}for s in {servers}; do
  nohup bash "servers/$s.sh" > "logs/$s.log" 2>&1 &
  echo $! > "run/$s.pid"
done
deadline=$((SECONDS + ${{WAIT_S:-900}}))
for port in {ports}; do
  until curl -sf "http://127.0.0.1:$port/v1/models" > /dev/null; do
    if (( SECONDS > deadline )); then echo "port $port did not come up; see logs/" >&2; exit 1; fi
    sleep 2
  done
  echo "port $port is up"
done
"""
_STOP = """#!/usr/bin/env bash
# Stops the servers that start.sh started.
cd "$(dirname "$0")"
for f in run/*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null; rm -f "$f"; done
"""


def _shell(argv: list[str]) -> str:
    """One command line, a flag and its values per line. Arguments that start with "$" (the Python
    to use, TGI's absolute mount paths) are left to the shell inside double quotes."""
    words = [f'"{a}"' if a.startswith("$") else shlex.quote(a) for a in argv]
    lines = [[words[0]]]
    for raw, word in zip(argv[1:], words[1:], strict=True):
        if raw.startswith("-"):
            lines.append([word])
        else:
            lines[-1].append(word)
    return " \\\n  ".join(" ".join(line) for line in lines)


def _plan(m: Manifest, backend: str, paths: b.Paths, port: int) -> b.Plan:
    if backend in ("vllm", "sglang"):
        return b.plan_hf(m, paths, backend, port)
    if backend == "llamacpp":
        return b.plan_llamacpp(m, paths, port)
    if backend == "tgi":
        return b.plan_tgi(m, paths, port)
    if backend == "ollama":
        return b.plan_ollama(m, paths)
    return b.plan_litellm(m)


def _placed(m: Manifest, manifest_path: Path) -> tuple[Manifest, Placement]:
    """The manifest with every local artifact's root in the render folder's ``artifacts/``, and
    where each comes from."""
    placement, data = Placement(), m.model_copy(deep=True)
    for _, a in artifacts_of(data):
        if a.root is not None:
            a.root = placement.root(artifact_root(manifest_path, a))
    return data, placement


def _served(data: Manifest, plan: b.Plan) -> Manifest:
    """The (placed) manifest with endpoints for what this render serves."""
    for x in data.members:
        if x.name in plan.endpoints:
            url, model = plan.endpoints[x.name]
            x.endpoint = Endpoint(url=url, model=model, api_key_env=x.endpoint.api_key_env if x.endpoint else None)
    if "judge" in plan.endpoints:
        url, model = plan.endpoints["judge"]
        data.judge.endpoint = Endpoint(url=url, model=model)
    return data


def _readme(m: Manifest, backend: str, plan: b.Plan) -> str:
    lines = [f"# Pool `{m.name}` on {backend}", "",
             f"Rendered by `finetune pool render --backend {backend}` from the pool's manifest "
             f"({len(m.members)} members, {m.judge.kind} judge, fusion mode `{m.fusion.mode}`, tool calls: "
             f"`{m.tool_call_format}`).", ""]
    if backend == "litellm":
        lines += ["Start the proxy over the running member servers:", "", "```bash",
                  "litellm --config litellm.yaml --host 127.0.0.1 --port 4000", "```", ""]
    else:
        lines += ["Start every server in the background and wait until each answers; stop them again:", "",
                  "```bash", "./start.sh", "./stop.sh", "```", ""]
        if backend == "ollama":
            lines += ["`start.sh` runs `ollama create` for each Modelfile; the Ollama daemon (`ollama serve`) must "
                      "be running and serves every member at " + b.OLLAMA_URL + ".", ""]
        if backend == "tgi":
            lines += ["Each server is a Docker container; a GPU host adds `--gpus all` to servers/*.sh.", ""]
    if plan.servers:
        lines += ["| server | port | serves (member: model name) |", "| --- | ---: | --- |"]
        lines += [f"| `servers/{s.name}.sh` | {s.port} | "
                  + ", ".join(f"{k}: `{v}`" for k, v in s.serves.items()) + " |" for s in plan.servers]
        lines.append("")
    if backend == "llamacpp":
        lines += ["The servers are llama-cpp-python's (`pip install 'llama-cpp-python[server]'`, which finetune "
                  "installs). With llama.cpp's own `llama-server` the same server is `llama-server -m MODEL.gguf "
                  "[--lora ADAPTER.gguf] --alias NAME --host 127.0.0.1 --port PORT -c N_CTX --jinja`.", ""]
    external = [x.name for x in m.members if x.endpoint]
    if external:
        lines += [f"Members served elsewhere (their manifest endpoint is used as is): {', '.join(external)}.", ""]
    judge = ("the reward-model judge runs inside the gateway (it loads the judge's safetensors)"
             if m.judge.kind == "reward_model" else
             "the generative judge is served above (`judge`)" if "judge" in plan.endpoints else
             "the generative judge uses its manifest endpoint")
    lines += ["## The gateway", "",
              "`manifest.json` here is the pool's manifest with each member's `endpoint` set to the server above "
              "that serves it. Run the pool's OpenAI-compatible gateway on it (port 8000 is left free for it):", "",
              "```bash", "finetune pool serve manifest.json --port 8000", "```", "",
              f"The gateway expects each member at its endpoint in `manifest.json`; {judge}.", ""]
    return "\n".join(lines)


def render(manifest_path: Path, backend: str, out: Path, port: int = 8101) -> list[Path]:
    """Write the ``backend`` configuration for the pool into ``out`` (new or empty); returns the files."""
    if backend not in b.BACKENDS:
        raise FinetuneError(f"unknown backend {backend!r}; choose one of {', '.join(b.BACKENDS)}")
    manifest_path, out = Path(manifest_path), Path(out)
    if out.exists() and any(out.iterdir()):
        raise FinetuneError(f"{out} is not empty; render into a new folder")
    m = load_manifest(manifest_path)
    problems, _ = file_problems(manifest_path, artifacts_of(m), None)
    if problems:
        raise FinetuneError(f"{manifest_path}: {len(problems)} problem(s) with the pool's files:\n  "
                            + "\n  ".join(problems) + f"\nRun `finetune pool verify {manifest_path}` for the full check")
    placed, placement = _placed(m, manifest_path)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        placement.bring_in((a for _, a in artifacts_of(placed)), out)
        return _write(placed, backend, out, port)
    except BaseException:  # leave no half-rendered folder
        for child in [out] if made else list(out.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        raise


def _write(m: Manifest, backend: str, out: Path, port: int) -> list[Path]:
    """The scripts, backend files, manifest and README for ``m``, whose artifacts are in ``out``."""
    plan = _plan(m, backend, b.Paths(out / "manifest.json", out), port)
    files = dict(plan.files)
    for s in plan.servers:
        files[f"servers/{s.name}.sh"] = ("#!/usr/bin/env bash\n# " + ", ".join(s.serves) + f" on port {s.port}\n"
                                         'cd "$(dirname "$0")/.."\nexec ' + _shell(s.argv) + "\n")
        if s.template:
            owner = next((x for x in [*m.bases, *m.members] if x.name == s.name), None)
            files[s.template] = owner.chat_template
    if backend != "litellm":
        setup = "".join(_shell(c) + "\n" for c in plan.setup)
        files["start.sh"] = _START.format(setup=setup, servers=" ".join(s.name for s in plan.servers) or "",
                                          ports=" ".join(str(s.port) for s in plan.servers))
        files["stop.sh"] = _STOP
    readme = _readme(m, backend, plan)  # before the endpoints are filled in: it names members served elsewhere
    files["manifest.json"] = _served(m, plan).model_dump_json(indent=2) + "\n"
    files["README.md"] = readme
    written = []
    for rel, text in sorted(files.items()):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if rel.endswith(".sh"):
            path.chmod(0o755)
        written.append(path)
    return written
