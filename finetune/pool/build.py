"""``finetune pool build POOL.yaml --out manifest.json``: resolve exported artifacts, judge runs and
endpoints into a fusion manifest.

POOL.yaml (paths relative to the working directory, like recipes)::

    name: code-pool
    members:
      - name: coder                      # a merged model exported by `finetune export`
        export: runs/coder-export
        sampling: {temperature: 0.2, max_tokens: 256}
      - name: coder-lora                 # an adapter on a base shared with other members
        base: runs/base-export           # `finetune export BASE_MODEL_FOLDER --format gguf-f16 ...`
        adapter: runs/lora-export        # `--format adapter` and/or `--format gguf-lora`
      - name: remote                     # an OpenAI-compatible server that is already running
        endpoint: {url: "http://10.0.0.5:8000/v1", model: qwen-coder, api_key_env: REMOTE_KEY}
        tool_call_format: hermes
        context_length: 32768
    judge: {run: runs/judge}             # a `finetune judge train` run; `export:` adds its GGUFs
    fusion: {mode: best_of, quorum: 2, member_timeout_s: 30}

Each export folder's ``artifacts.json`` gives formats, files, sizes and hashes (sizes are checked
here; ``pool verify`` re-hashes). A judge run's ``model/`` is hashed here, since no export lists it.
The pool folder (the manifest's) is made self-contained: every listed file is brought into
``artifacts/<export folder name>/`` beside the manifest, hard-linked (copied across filesystems),
so the folder can move and the exports can go (:mod:`finetune.pool.place`).
Chat template, context length and tool-call format are read from the artifacts (template file,
``config.json``, GGUF metadata); the format is recognised by matching the template against the
toolkit's named templates. Members must all write tool calls the same way (one parser, one
validation path, candidates the judge can compare): a pool that mixes formats, or has a member
that cannot call tools, is refused with each member's format, unless ``tools: false``.

Example::

    manifest = build_pool(load_recipe("pool.yaml", [], PoolSpec), Path("runs/pool/manifest.json"))
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from pydantic import ValidationError

import finetune
from finetune import FinetuneError
from finetune.contracts.artifacts import sha256_file
from finetune.contracts.chat import recognise
from finetune.contracts.judging import VERDICT_TEMPLATES
from finetune.contracts.schema import format_errors
from finetune.pool.config import JudgeSpec, MemberSpec, PoolSpec
from finetune.pool.manifest import (
    SCHEMA_VERSION,
    Artifact,
    Base,
    FileRef,
    Judge,
    Manifest,
    Member,
    artifacts_of,
)
from finetune.pool.place import Placement


def _export_artifacts(folder: Path, placement: Placement, where: str) -> list[Artifact]:
    listing = folder / "artifacts.json"
    if not listing.is_file():
        raise FinetuneError(f"{where}: {folder} has no artifacts.json; point it at a folder written by "
                            "`finetune export` (an interrupted export leaves none)")
    out = []
    for a in json.loads(listing.read_text())["artifacts"]:
        for f in a["files"]:
            size = (folder / f["path"]).stat().st_size if (folder / f["path"]).is_file() else None
            if size != f["bytes"]:
                raise FinetuneError(f"{where}: {folder / f['path']} is {'missing' if size is None else f'{size} bytes'}"
                                    f", artifacts.json says {f['bytes']}; re-export or run "
                                    f"`finetune verify-artifacts {folder}`")
        try:
            out.append(Artifact(format=a["format"], root=placement.root(folder), path=a["path"],
                                files=[FileRef(**f) for f in a["files"]]))
        except ValidationError as err:
            raise FinetuneError(f"{where}: {listing}: " + "; ".join(format_errors(err, Artifact))
                                + "; re-export the model with `finetune export`") from None
    return out


def folder_artifact(fmt: str, root: Path, sub: str, placement: Placement) -> Artifact:
    """Every file under ``root/sub`` (a run's model folder, which no export lists), hashed."""
    files = sorted(p for p in (root / sub).rglob("*") if p.is_file())
    return Artifact(format=fmt, root=placement.root(root), path=sub, files=[
        FileRef(path=p.relative_to(root).as_posix(), bytes=p.stat().st_size, sha256=sha256_file(p)) for p in files])


def _gguf_fields(path: Path) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    out = {}
    for key, fld in reader.fields.items():
        if key == "tokenizer.chat_template" or key.endswith(".context_length"):
            out["chat_template" if key == "tokenizer.chat_template" else "context_length"] = fld.contents()
    return out


def describe(artifacts: list[Artifact], folder: Path) -> tuple[str | None, int | None]:
    """(chat template, context length) from the first of an export folder's artifacts that has them."""
    for a in artifacts:
        path = folder / a.path
        if a.format.startswith("gguf-") and a.format != "gguf-lora":
            fields = _gguf_fields(path)
            return fields.get("chat_template"), fields.get("context_length")
        if a.format in ("safetensors", "adapter", "bnb-nf4"):
            text = length = None
            if (path / "chat_template.jinja").is_file():  # where transformers 5 saves it
                text = (path / "chat_template.jinja").read_text()
            elif (path / "tokenizer_config.json").is_file():
                text = json.loads((path / "tokenizer_config.json").read_text()).get("chat_template")
            if (path / "config.json").is_file():
                length = json.loads((path / "config.json").read_text()).get("max_position_embeddings")
            if text or length:
                return text, length
    return None, None


def _member(spec: MemberSpec, placement: Placement, bases: dict[str, Base]) -> Member:
    where = f"members[{spec.name}]"
    artifacts, adapters, base_name = [], [], None
    if spec.export:
        artifacts = _export_artifacts(Path(spec.export), placement, where)
        template, length = describe(artifacts, Path(spec.export))
    elif spec.base:
        key = str(Path(spec.base).resolve())
        if key not in bases:
            base_artifacts = [a for a in _export_artifacts(Path(spec.base), placement, where)
                              if a.format not in ("adapter", "gguf-lora")]
            if not base_artifacts:
                raise FinetuneError(f"{where}: {spec.base} holds no full model to put the adapter on")
            t, n = describe(base_artifacts, Path(spec.base))
            if n is None:
                raise FinetuneError(f"{where}: context length of {spec.base} unknown (no config.json or GGUF "
                                    "context length); re-export the base with `--format safetensors`")
            name = re.sub(r"[^A-Za-z0-9._-]", "-", Path(spec.base).resolve().name)[:48] or "base"
            while any(b.name == name for b in bases.values()):
                name += "-2"
            bases[key] = Base(name=name, artifacts=base_artifacts, chat_template=t, context_length=n)
        base = bases[key]
        base_name = base.name
        adapters = [a for a in _export_artifacts(Path(spec.adapter), placement, where)
                    if a.format in ("adapter", "gguf-lora")]
        if not adapters:
            raise FinetuneError(f"{where}: {spec.adapter} holds no adapter; export the run with "
                                "`--format adapter` and/or `--format gguf-lora`")
        for a in adapters:
            cfg = Path(spec.adapter) / a.path / "adapter_config.json"
            if cfg.is_file() and json.loads(cfg.read_text()).get("trainable_token_indices"):
                raise FinetuneError(f"{where}: the adapter in {spec.adapter} trains embedding rows for tokens the base "
                                    "lacks (the chat template's); servers put LoRA adapters on the base's own "
                                    "vocabulary, so serve the merged export instead (`export:`)")
        template, _ = describe(adapters, Path(spec.adapter))
        template, length = template or base.chat_template, base.context_length
    else:
        template, length = None, None
    fmt = spec.tool_call_format or recognise(template) or "none"
    length = spec.context_length or length
    if length is None:
        raise FinetuneError(f"{where}: context length unknown; set `context_length:` for this member")
    return Member(name=spec.name, artifacts=artifacts, base=base_name, adapters=adapters, endpoint=spec.endpoint,
                  chat_template=template, tool_call_format=fmt, context_length=int(length), sampling=spec.sampling,
                  cost=spec.cost, samples=spec.samples, source={"export": spec.export, "base": spec.base, "adapter": spec.adapter})


def _judge(spec: JudgeSpec, placement: Placement) -> Judge:
    run = Path(spec.run)
    info_path = run / "judge.json"
    if not info_path.is_file() or not (run / "model").is_dir():
        raise FinetuneError(f"judge.run: {run} is not a judge run folder (judge.json and model/); train one with "
                            "`finetune judge train RECIPE`")
    info = json.loads(info_path.read_text())
    artifacts = [folder_artifact("safetensors", run, "model", placement)]
    if spec.export:
        artifacts += _export_artifacts(Path(spec.export), placement, "judge.export")
    if info["kind"] == "reward_model":
        layout = ("chat_template: the model's chat template over prompt + answer, cut from the left"
                  if describe(artifacts[:1], run)[0] else
                  "sentence_pair: [CLS] prompt as 'role: text' lines, cut from the left [SEP] answer [SEP]")
        templates = {"input": layout}
    else:
        templates = dict(VERDICT_TEMPLATES)
    return Judge(kind=info["kind"], artifacts=artifacts, base_model=info.get("base_model"),
                 max_length=info["max_length"], templates=templates, temperature=info.get("temperature"))


def build_pool(spec: PoolSpec, out: Path) -> Manifest:
    """Resolve ``spec`` into a manifest, bring its artifacts' files into ``out``'s folder and write
    the manifest to ``out`` (atomically, last); returns it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    bases: dict[str, Base] = {}
    placement = Placement()
    members = [_member(m, placement, bases) for m in spec.members]
    formats = {m.name: m.tool_call_format for m in members}
    if spec.tools:
        if set(formats.values()) == {"none"} or len(set(formats.values())) != 1:
            listing = ", ".join(f"{k}: {v}" for k, v in formats.items())
            raise FinetuneError(
                f"pool {spec.name}: the members cannot serve one tool-call format ({listing}). Pool members trained "
                "with the same chat template, give endpoints their `tool_call_format`, or set `tools: false` to "
                "serve the pool without tool calls")
        pool_format = next(iter(formats.values()))
    else:
        pool_format = "none"
    try:
        manifest = Manifest(schema_version=SCHEMA_VERSION, name=spec.name,
                            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            toolkit_version=finetune.__version__, tool_call_format=pool_format,
                            bases=list(bases.values()), members=members, judge=_judge(spec.judge, placement),
                            fusion=spec.fusion)
    except ValidationError as err:
        raise FinetuneError(f"pool {spec.name}: " + "; ".join(format_errors(err, Manifest))) from None
    placement.bring_in((a for _, a in artifacts_of(manifest)), out.parent)
    tmp = out.with_name(out.name + ".incomplete")
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n")
    tmp.replace(out)
    return manifest
