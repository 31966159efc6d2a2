"""BFCL's single-turn Python categories as tool tasks, and BFCL's own AST checker to judge them.

The Berkeley Function Calling Leaderboard ships its questions, function docs and possible answers in the
`bfcl-eval` package; reading them from there (instead of a copy) pins the benchmark to a package version.
Each item becomes a task dict with OpenAI chat messages, OpenAI-form tools whose parameters are JSON
Schema (BFCL's own type names translated: dict -> object, float -> number, tuple -> array, any -> no type),
and the possible answer, which `finetune.eval.score.score_calls` judges. `official_check` runs the
package's checker on the same calls, so our scorer's agreement with it can be measured.

Example::

    tasks = load("simple_python", limit=2)
    tasks[0]["tools"][0]["function"]["name"]          # 'calculate_triangle_area'
    official_check(tasks[0], [{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}])
    # (True, 'ok')
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
import types
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from pathlib import Path

from finetune import FinetuneError

CATEGORIES: tuple[str, ...] = (
    "simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance",
    "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple", "live_irrelevance",
)
PINNED = "2026.3.23"
_INSTALL = f"pip install --no-deps bfcl-eval=={PINNED}"
# BFCL appends this to every Python function description when it prompts a model; we do the same so
# our prompts are the leaderboard's.
_HINT = " Note that the provided function is in Python 3 syntax."
# BFCL's parameter type names -> JSON Schema types (None: any type, no "type" key).
_TYPES = {"dict": "object", "object": "object", "float": "number", "number": "number", "double": "number",
          "integer": "integer", "int": "integer", "long": "integer", "string": "string", "str": "string",
          "boolean": "boolean", "bool": "boolean", "array": "array", "list": "array", "tuple": "array",
          "any": None}
# BFCL's checker needs a model name; this one keeps dots in function names (underscore_to_dot=False).
_MODEL = "gorilla-openfunctions-v2"


def version() -> str:
    """The installed bfcl-eval version, e.g. "2026.3.23"; FinetuneError with the install command when the
    package is missing."""
    try:
        return _dist_version("bfcl-eval")
    except PackageNotFoundError:
        raise FinetuneError(f"BFCL tasks need the bfcl-eval package: {_INSTALL}") from None


def load(category: str, limit: int | None = None) -> list[dict]:
    """The tasks of one BFCL category, in file order (the first `limit` when given), as task dicts (see the
    module docstring). Unknown category -> FinetuneError naming the valid ones; bfcl-eval not installed ->
    FinetuneError with the install command."""
    if category not in CATEGORIES:
        raise FinetuneError(f"unknown BFCL category {category!r}; valid: {', '.join(CATEGORIES)}")
    source = f"bfcl-eval {version()}"
    data = _data_dir()
    items = _read_jsonl(data / f"BFCL_v4_{category}.json", limit)
    answers: dict[str, list] = {}
    if "irrelevance" not in category:  # irrelevance items have no possible answer: no call is due
        answers = {a["id"]: a["ground_truth"] for a in _read_jsonl(data / "possible_answer" / f"BFCL_v4_{category}.json")}
    tasks = []
    for item in items:
        if "irrelevance" not in category and item["id"] not in answers:
            raise FinetuneError(f"{source}: no possible answer for {item['id']}; reinstall: {_INSTALL}")
        tasks.append({
            "id": f"bfcl/{category}/{item['id']}",
            "kind": "tool",
            "source": source,
            "category": f"bfcl:{category}",  # apart from the trace categories of the same names
            "step": 0,
            # Single-turn categories hold exactly one turn (a list of messages, system ones included).
            "messages": copy.deepcopy(item["question"][0]),
            "tools": [to_tool(f) for f in item["function"]],
            "expected": copy.deepcopy(answers.get(item["id"], [])),
            "bfcl": {"functions": copy.deepcopy(item["function"]), "category": category},
        })
    return tasks


def to_tool(function: dict) -> dict:
    """One BFCL function doc as an OpenAI-form tool with JSON Schema parameters (the name kept, dots
    included; BFCL's Python hint appended to the description)."""
    params = _to_schema(function.get("parameters") or {"type": "dict", "properties": {}})
    params["type"] = "object"
    params.setdefault("properties", {})
    return {"type": "function", "function": {"name": function["name"],
                                             "description": function.get("description", "") + _HINT,
                                             "parameters": params}}


def official_check(task: dict, calls: list[dict]) -> tuple[bool, str]:
    """BFCL's own verdict on `calls` ([{"name", "arguments"}]) for a task from `load`: the package's AST
    checker for answer categories, its empty-output test for irrelevance ones. Returns (valid, "ok") or
    (False, "<BFCL error type>: <errors>"); a crash of the checker counts as invalid, reason
    "checker_error: ..."."""
    checker, language, is_empty = _checker()
    output = [{c["name"]: copy.deepcopy(c.get("arguments") or {})} for c in calls]
    category = task["bfcl"]["category"]
    if "irrelevance" in category:
        return (True, "ok") if is_empty(output) else (False, "irrelevance_error:decoder_success: a call was made")
    try:
        result = checker(task["bfcl"]["functions"], output, task["expected"], language, category, _MODEL)
    except Exception as exc:  # BFCL crashes on some malformed values (e.g. a string where dicts are due)
        return False, f"checker_error: {type(exc).__name__}: {exc}"
    if result["valid"]:
        return True, "ok"
    return False, f"{result.get('error_type', 'invalid')}: {result.get('error')}"


def _data_dir() -> Path:
    # find_spec locates the package without importing it (its import pulls in optional model SDKs).
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FinetuneError(f"BFCL tasks need the bfcl-eval package: {_INSTALL}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    if not path.exists():
        raise FinetuneError(f"{path}: missing from the installed bfcl-eval {version()}; {_INSTALL}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(rows) >= limit:
                break
            if line.strip():
                rows.append(json.loads(line))
    return rows


def _to_schema(spec: dict) -> dict:
    """A BFCL parameter spec as JSON Schema, recursively; the BFCL type survives as "x-bfcl-type" where the
    JSON Schema type loses it (tuple, any)."""
    out: dict = {}
    if "type" in spec:
        kind = spec["type"]
        if kind not in _TYPES:
            raise FinetuneError(f"bfcl-eval {version()}: unknown parameter type {kind!r}")
        if _TYPES[kind] is not None:
            out["type"] = _TYPES[kind]
        if kind in ("tuple", "any"):
            out["x-bfcl-type"] = kind
    out.update((k, v) for k, v in spec.items() if k not in ("type", "properties", "items"))
    if isinstance(spec.get("properties"), dict):
        out["properties"] = {name: _to_schema(sub) for name, sub in spec["properties"].items()}
    if isinstance(spec.get("items"), dict):
        out["items"] = _to_schema(spec["items"])
    return out


def _checker():
    """(ast_checker, Language.PYTHON, is_empty_output) from the package, imported on first use."""
    try:
        from bfcl_eval.constants.enums import Language
        from bfcl_eval.utils import is_empty_output
    except ImportError as exc:
        raise FinetuneError(f"BFCL's checker needs the bfcl-eval package ({exc}): {_INSTALL}") from None
    try:
        from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
    except ImportError:
        # Installed with --no-deps, the model registry the checker imports fails on the model SDKs it
        # imports (anthropic, ...); the checker only reads `underscore_to_dot` from it, False for our calls.
        sys.modules["bfcl_eval.constants.model_config"] = _model_config_stub()
        try:
            from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
        except ImportError as exc:
            raise FinetuneError(f"cannot import BFCL's AST checker ({exc}); {_INSTALL}") from None
    return ast_checker, Language.PYTHON, is_empty_output


def _model_config_stub() -> types.ModuleType:
    class _Configs(dict):
        def __missing__(self, name):
            return types.SimpleNamespace(underscore_to_dot=False)

    module = types.ModuleType("bfcl_eval.constants.model_config")
    module.MODEL_CONFIG_MAPPING = _Configs()
    return module
