"""The fusion pool manifest: one JSON file that describes a pool (members, judge, fusion settings)
well enough to serve it on any backend and to run it in the gateway.

The schema is these pydantic models; ``fusion-manifest.schema.json`` beside this module (shipped
in the wheel, and published as ``export/fusion-manifest.schema.json``) is generated from them
(``python -m finetune.pool.manifest --write-schema``; a test keeps both copies in sync) so that
tools in other languages can validate a manifest too, and ``pool verify`` checks a manifest
against the shipped file as well as against the models. Reading is strict: unknown
keys, wrong types and broken cross-field rules are errors, and a manifest written by a newer
schema version is refused before anything else is read.

Paths: a pool folder (the one holding the manifest) is self-contained. An artifact's ``root`` is
relative to it and inside it (``pool build`` brings every local artifact's files into
``artifacts/<export folder name>/``, see :mod:`finetune.pool.place`), its ``path`` and its
``files`` are relative to ``root`` as in an export folder's ``artifacts.json``, and ``path`` is one
of the checked files (a GGUF) or the folder of some of them (safetensors, adapter, bnb-nf4). Reading
refuses absolute paths and ``..`` (an older pool's outside roots too: rebuild it); the files
themselves are checked when read (``pool verify``, ``pool serve``, ``pool render``), symlinks
followed, since a link inside the folder can point anywhere.

Example::

    manifest = load_manifest(Path("runs/pool/manifest.json"))
    [m.name for m in manifest.members]
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from finetune import FinetuneError
from finetune.contracts.artifacts import FOLDER_FORMATS, FORMATS
from finetune.contracts.chat import ToolCallFormat
from finetune.contracts.schema import Strict, format_errors
from finetune.pool.place import REBUILD, Hashes, file_problems, pool_folder

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("fusion-manifest.schema.json")  # package data
PUBLISHED_SCHEMA = Path("export") / "fusion-manifest.schema.json"  # in a source checkout
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # also a served model name, a file name and a URL segment


# A path that could leave its folder: absolute, a drive, a backslash (a separator on Windows), a `..` segment.
ESCAPES = r"^/|^[A-Za-z]:|\\|(^|/)\.\.(/|$)"
INSIDE = {"not": {"type": "string", "pattern": ESCAPES}}  # the same rule in the JSON Schema


def _inside(value: str | None, what: str, itself: bool = False) -> str | None:
    """``value`` when it is a relative path that stays inside ``what`` (``.``, ``what`` itself, only
    when ``itself``); the lexical half of the check, the files' real paths are checked when read."""
    if value is None:
        return None
    if not (PurePosixPath(value).parts or (itself and value)) or re.search(ESCAPES, value) or "\x00" in value:
        raise ValueError(f"{value!r} is not a relative path inside {what} (no leading /, drive, \\ or `..`); {REBUILD}")
    return value


class FileRef(Strict):
    path: str = Field(min_length=1, description="Relative to the artifact's root, inside it (no `..`).",
                      json_schema_extra=INSIDE)
    bytes: int = Field(ge=0, description="Size in bytes.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Lower-case hex SHA-256 of the content.")

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        return _inside(value, "the artifact's root")


class Artifact(Strict):
    format: Literal[FORMATS] = Field(description="What `finetune export --format` wrote.")
    root: str | None = Field(default=None, json_schema_extra=INSIDE, description=(
        "Folder the paths are relative to: relative to the pool folder (the manifest's) and inside it, no "
        "absolute path or `..`; `pool build` puts local artifacts in artifacts/<export folder name>."))
    uri: str | None = Field(default=None, description="Where a remote copy lives (hf://, s3://, https://); "
                                                      "not checked by `pool verify`.")
    path: str = Field(min_length=1, json_schema_extra=INSIDE, description=(
        "The model itself, relative to root: a folder holding some of `files` (safetensors, adapter, bnb-nf4) or "
        "one of `files` (GGUF)."))
    files: list[FileRef] = Field(min_length=1, description="Every file of the artifact, with size and hash; "
                                                           "only these are brought into a pool folder.")

    @field_validator("root")
    @classmethod
    def _root_inside(cls, value: str | None) -> str | None:
        return _inside(value, "the pool folder", itself=True)

    @field_validator("path")
    @classmethod
    def _path_inside(cls, value: str) -> str:
        return _inside(value, "the artifact's root")

    @model_validator(mode="after")
    def _where(self):
        if (self.root is None) == (self.uri is None):
            raise ValueError("give exactly one of root (local files) and uri (remote copy)")
        path, files = PurePosixPath(self.path), [PurePosixPath(f.path) for f in self.files]
        if self.format in FOLDER_FORMATS:
            if not any(path in f.parents for f in files):
                raise ValueError(f"{self.format} path {self.path!r} is a folder, but none of the artifact's files "
                                 f"lies in it; {REBUILD}")
        elif path not in files:
            raise ValueError(f"{self.format} path {self.path!r} is not one of the artifact's files, so nothing checks "
                             f"it; {REBUILD}")
        return self


class Endpoint(Strict):
    url: str = Field(pattern=r"^https?://", description="Base URL of an OpenAI-compatible API, e.g. "
                                                       "http://10.0.0.5:8000/v1.")
    model: str = Field(description="The `model` value that server expects.")
    api_key_env: str | None = Field(default=None, description="Environment variable holding its API key "
                                                              "(the key itself never goes in the manifest).")


class Sampling(Strict):
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(default=512, ge=1)
    stop: list[str] = Field(default_factory=list, description="Extra stop strings.")


class Base(Strict):
    name: str = Field(pattern=NAME, description="Referenced by members' `base`.")
    artifacts: list[Artifact] = Field(min_length=1, description="The shared base model in one or more formats.")
    chat_template: str | None = Field(default=None, description="Jinja chat template (Hugging Face dialect).")
    context_length: int = Field(ge=16, description="Longest context the model was built for.")


class Member(Strict):
    name: str = Field(pattern=NAME, description="Served model name of this member.")
    artifacts: list[Artifact] = Field(default_factory=list, description="The member's own (merged) model, in "
                                                                         "one or more formats.")
    base: str | None = Field(default=None, description="Name of a shared base (bases[]); the member is then "
                                                       "that base plus `adapters`.")
    adapters: list[Artifact] = Field(default_factory=list, description="The member's adapter on `base`: "
                                                                        "`adapter` (PEFT) and/or `gguf-lora`.")
    endpoint: Endpoint | None = Field(default=None, description="An already running server for this member.")
    chat_template: str | None = Field(default=None, description="Jinja chat template (Hugging Face dialect).")
    tool_call_format: ToolCallFormat = Field(description="How the model writes tool calls (the toolkit's "
                                                         "template names; `none`: it cannot call tools).")
    context_length: int = Field(ge=16, description="Longest context, in tokens.")
    sampling: Sampling = Field(default_factory=Sampling, description="Defaults when a request sets none.")
    cost: float = Field(default=1.0, gt=0.0, description="Relative cost of one call (for budgets and reports).")
    samples: int = Field(default=1, ge=1, le=8, description="Self-fusion: answers drawn from this member for "
                         "each request (seeds 1..N at `sampling.temperature`, which must then be above 0; a "
                         "request's temperature and seed do not apply), each a candidate named `NAME#k`.")
    source: dict[str, str | None] = Field(default_factory=dict, description="Provenance: run, base model, method.")

    @model_validator(mode="after")
    def _served_somehow(self):
        if not (self.artifacts or self.endpoint or (self.base and self.adapters)):
            raise ValueError(f"member {self.name!r} has nothing to serve: give artifacts, base + adapters, "
                             "or an endpoint")
        if bool(self.base) != bool(self.adapters):
            raise ValueError(f"member {self.name!r}: `base` and `adapters` go together")
        if self.samples > 1 and self.sampling.temperature == 0:
            raise ValueError(f"member {self.name!r}: samples {self.samples} at temperature 0 are one answer "
                             "N times; set sampling.temperature above 0")
        bad = [a.format for a in self.adapters if a.format not in ("adapter", "gguf-lora")]
        if bad:
            raise ValueError(f"member {self.name!r}: adapters must be `adapter` or `gguf-lora`, not {bad}")
        return self


class Judge(Strict):
    kind: Literal["reward_model", "generative"] = Field(description="Scores each answer, or writes a verdict.")
    artifacts: list[Artifact] = Field(min_length=1, description="The judge model (`safetensors` from its run "
                                                                "folder; exports add GGUF).")
    endpoint: Endpoint | None = Field(default=None, description="An already running server (generative judge).")
    base_model: str | None = Field(default=None, description="What the judge was trained from.")
    max_length: int = Field(ge=16, description="Tokens of one scored input (reward model) or of the verdict "
                                               "prompt (generative).")
    templates: dict[str, str] = Field(description="Prompt templates: reward model `input` (the layout of one "
                                                  "scored input); generative `system`, `task`, `candidate` "
                                                  "and `merge`.")
    temperature: float | None = Field(default=None, gt=0.0, description="Reward model: scores are divided by it "
                                      "before the softmax that gives the fusion record's `confidence` (fitted on "
                                      "held-out pairs by `judge train`/`judge eval`; none: 1, uncalibrated).")


class Fusion(Strict):
    mode: Literal["best_of", "merge", "debate"] = Field(default="best_of", description="best_of: the judge "
                                                        "picks one answer; merge: a generative judge writes "
                                                        "one from all; debate: members revise after seeing "
                                                        "each other, then the judge picks.")
    debate_rounds: int = Field(default=1, ge=1, le=8, description="Revision rounds (debate only).")
    member_timeout_s: float = Field(default=60.0, gt=0.0, description="A member slower than this is dropped.")
    quorum: int = Field(default=1, ge=1, description="The fewest valid answers worth judging.")
    below_quorum: Literal["fail", "best_available"] = Field(
        default="fail", description="fail: HTTP 503 naming each member's fault; best_available: answer with "
                                    "what came back (if anything), flagged in the fusion record.")
    early_finish_grace_s: float | None = Field(
        default=None, gt=0.0, description="Once the quorum has answered, wait at most this long for the rest "
                                          "(none: wait for every member or its timeout).")
    execute_checks: bool = Field(
        default=True, description="Run each candidate's code against the doctests and asserts in the request, "
                                  "in the bubblewrap sandbox, and judge only those that pass when some do (where "
                                  "the gateway host has no bubblewrap, nothing runs and the record says so).")
    tool_calls: Literal["choose_valid"] = Field(
        default="choose_valid", description="Tool-call answers are validated against the request's tool "
                                            "schemas and chosen among the valid ones, never merged.")


class Manifest(Strict):
    schema_version: Literal[1] = Field(description="Version of this schema; newer ones are refused.")
    name: str = Field(pattern=NAME, description="Served model name of the whole pool.")
    created: str = Field(description="UTC time of `pool build` (ISO 8601).")
    toolkit_version: str
    tool_call_format: ToolCallFormat = Field(description="The one tool-call format every member serves "
                                                         "(`none`: the pool answers without tools).")
    bases: list[Base] = Field(default_factory=list, description="Base models shared by adapter members.")
    members: list[Member] = Field(min_length=1)
    judge: Judge
    fusion: Fusion = Field(default_factory=Fusion)

    @model_validator(mode="after")
    def _consistent(self):
        names = [m.name for m in self.members] + [self.name]
        if len(set(names)) != len(names):
            raise ValueError(f"member names must be unique and differ from the pool's name: {names}")
        bases = {b.name for b in self.bases}
        for m in self.members:
            if m.base and m.base not in bases:
                raise ValueError(f"member {m.name!r}: base {m.base!r} is not among bases {sorted(bases)}")
        formats = {m.name: m.tool_call_format for m in self.members}
        if self.tool_call_format != "none" and set(formats.values()) != {self.tool_call_format}:
            raise ValueError(f"every member must serve tool calls as {self.tool_call_format!r}: {formats}")
        candidates = sum(m.samples for m in self.members)
        if self.fusion.quorum > candidates:
            raise ValueError(f"fusion.quorum {self.fusion.quorum} exceeds the {candidates} member answer(s) a "
                             "request gets (each of a member's samples counts)")
        if self.judge.kind == "generative" and sum(m.samples for m in self.members) > 8:
            raise ValueError("a generative judge reads at most 8 candidates (A-H; a member's samples each "
                             "count); use a reward-model judge")
        if self.fusion.mode == "merge" and self.judge.kind != "generative":
            raise ValueError("fusion.mode merge needs a generative judge (a reward model can only pick)")
        return self


def schema() -> dict:
    """The JSON Schema of the manifest (what SCHEMA_FILE holds)."""
    out = Manifest.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://finetune.dev/schemas/fusion-manifest-v{SCHEMA_VERSION}.json",
            "title": "finetune fusion pool manifest", **out}


def schema_text() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


def parse_manifest(text: str, where: str) -> Manifest:
    """Strictly validate manifest JSON; ``where`` names it in errors."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FinetuneError(f"{where}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if not isinstance(version, int):
        raise FinetuneError(f"{where}: no integer schema_version; is this a fusion manifest (`finetune pool build`)?")
    if version > SCHEMA_VERSION:
        raise FinetuneError(f"{where}: written with manifest schema version {version}, but this finetune reads "
                            f"version {SCHEMA_VERSION} at most; upgrade finetune to read it")
    try:
        return Manifest.model_validate_json(text, strict=True)
    except ValidationError as err:
        problems = format_errors(err, Manifest)
        raise FinetuneError(f"{where}: {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems)) from None


def load_manifest(path: Path) -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise FinetuneError(f"{path}: no such manifest (write one with `finetune pool build POOL.yaml --out {path}`)")
    return parse_manifest(path.read_text(), str(path))


def artifact_root(manifest_path: Path, artifact: Artifact) -> Path:
    """The local folder an artifact's paths are relative to."""
    return Path(os.path.normpath(pool_folder(manifest_path) / artifact.root))


def artifacts_of(manifest: Manifest):
    """(owner, artifact) for every artifact the manifest names."""
    for b in manifest.bases:
        yield from ((f"bases[{b.name}]", a) for a in b.artifacts)
    for m in manifest.members:
        yield from ((f"members[{m.name}]", a) for a in m.artifacts)
        yield from ((f"members[{m.name}] adapter", a) for a in m.adapters)
    yield from (("judge", a) for a in manifest.judge.artifacts)


def schema_problems(raw: dict) -> list[str]:
    """What the shipped JSON Schema file finds wrong with a manifest (the models already accepted
    it: a problem here means the file and the models disagree)."""
    import jsonschema

    if not SCHEMA_FILE.is_file():
        raise FinetuneError(f"{SCHEMA_FILE} is missing: this finetune was installed without its manifest schema; "
                            "reinstall the package")
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    return [f"schema: {'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}"
            for e in validator.iter_errors(raw)]


def verify_manifest(path: Path) -> tuple[Manifest, list[str], int]:
    """Check the manifest against the models (raises on a bad manifest) and the shipped JSON Schema,
    then every local file: inside the pool folder (symlinks followed), present, its size and its
    sha256, every file hashed (the hash cache is refreshed, never trusted). Returns the manifest,
    the problems (one line each, naming owner, format and file) and the number of files checked."""
    path = Path(path)
    manifest = load_manifest(path)
    hashes = Hashes(pool_folder(path), trust=False)
    problems, checked = file_problems(path, artifacts_of(manifest), hashes)
    hashes.save()
    return manifest, schema_problems(json.loads(path.read_text())) + problems, checked


def loaded_artifacts(manifest: Manifest):
    """(owner, artifact) for what a running pool loads itself: every artifact of a member without an
    endpoint and of its base, and the judge's unless it is a generative judge with an endpoint."""
    bases = {b.name: b for b in manifest.bases}
    for m in manifest.members:
        if m.endpoint is None:
            yield from ((f"members[{m.name}]", a) for a in m.artifacts)
            yield from ((f"members[{m.name}] adapter", a) for a in m.adapters)
            if m.base in bases:  # a shared base once
                yield from ((f"bases[{m.base}]", a) for a in bases.pop(m.base).artifacts)
    if manifest.judge.kind == "reward_model" or manifest.judge.endpoint is None:
        yield from (("judge", a) for a in manifest.judge.artifacts)


def check_loaded(path: Path, manifest: Manifest) -> None:
    """Refuse to run a pool whose local files are not what its manifest says: each one inside the
    pool folder, present, with its size and sha256 (hashes cached in the pool folder; see
    :mod:`finetune.pool.place`)."""
    hashes = Hashes(pool_folder(path))
    problems, _ = file_problems(path, loaded_artifacts(manifest), hashes)
    hashes.save()
    if problems:
        raise FinetuneError(f"{path}: {len(problems)} problem(s) with the files this pool loads; nothing was "
                            "started:\n  " + "\n  ".join(problems)
                            + f"\nRun `finetune pool verify {path}` for the full check; restore the files or "
                              "rebuild the pool with `finetune pool build`")


if __name__ == "__main__":  # python -m finetune.pool.manifest --write-schema
    if sys.argv[1:] != ["--write-schema"]:
        sys.exit("usage: python -m finetune.pool.manifest --write-schema")
    for target in (SCHEMA_FILE, PUBLISHED_SCHEMA):  # run from the repository root
        target.write_text(schema_text())
        print(f"wrote {target}")
