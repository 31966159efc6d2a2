"""Recipes and every other YAML the toolkit reads: one strict loader for all of them.

Each stage's schema lives beside its runner (``data/config.py``, ``train/config.py``,
``judge/config.py``, ``pool/config.py``, ``eval/config.py``) as pydantic models built on
:class:`Strict`. Loading is the same for each: unknown keys are errors that name the closest valid
key, every problem is reported at once with its YAML path, and dotted overrides from the command
line (``data.max_seq_length=4096``) are applied to the tree *before* validation, so they pass
exactly the same rules. Command-line flags are turned into the same tree and validated the same
way (:func:`recipe_from_tree`). No torch.

Example::

    recipe = load_recipe("recipes/tiny/traces.yaml", ["data.max_seq_length=512"], Recipe)
    recipe.data.max_seq_length  # 512
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from finetune import FinetuneError


class Strict(BaseModel):
    """A schema section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def _closest_key(model: type[BaseModel], loc: tuple[Any, ...], bad: str) -> str | None:
    """The valid key of the model at ``loc`` closest to the unknown key ``bad``."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        nested = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)]
        nested += [
            b for a in getattr(ann, "__args__", ()) for b in getattr(a, "__args__", ())
            if isinstance(b, type)
        ]
        models = [a for a in nested if issubclass(a, BaseModel)]
        if not models:
            return None
        model = models[0]
    match = difflib.get_close_matches(bad, list(model.model_fields), n=1, cutoff=0.5)
    return match[0] if match else None


def format_errors(err: ValidationError, schema: type[BaseModel]) -> list[str]:
    """One line per problem: the YAML path, what is wrong and, for unknown keys, the fix."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = ".".join(str(p) for p in loc) or "<top>"
        if e["type"] == "extra_forbidden":
            hint = _closest_key(schema, loc[:-1], str(loc[-1]))
            fix = f"; did you mean `{hint}`?" if hint else ""
            lines.append(f"{path}: unknown key{fix}")
        elif e["type"] == "missing":
            lines.append(f"{path}: required key is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: {msg}")
    return lines


def apply_override(tree: dict, override: str) -> None:
    """Set ``a.b.0.c=value`` in a YAML tree; the value is parsed as YAML (``4096`` is an int)."""
    if "=" not in override:
        raise FinetuneError(f"override `{override}` is not KEY=VALUE (e.g. data.max_seq_length=4096)")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    value = yaml.safe_load(raw) if raw.strip() else None
    node: Any = tree
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise FinetuneError(f"override `{key}`: `{part}` is not an index of a {len(node)}-item list")
            part = int(part)
        elif not isinstance(node, dict):
            raise FinetuneError(f"override `{key}`: `{'.'.join(parts[:i])}` is not a section")
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...], schema: type[BaseModel]):
    """Read, override and validate a YAML file against ``schema``; every problem is reported in one
    FinetuneError."""
    path = Path(path)
    if not path.is_file():
        raise FinetuneError(f"recipe {path} does not exist")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise FinetuneError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(tree, dict):
        raise FinetuneError(f"{path}: a recipe is a YAML mapping of sections (`model:`, `data:`, ...), not a "
                            f"{type(tree).__name__}")
    for override in overrides:
        apply_override(tree, override)
    return recipe_from_tree(tree, str(path), schema)


def recipe_from_tree(tree: dict, where: str, schema: type[BaseModel]):
    """Validate a tree (from YAML, or built from command-line flags) against ``schema``."""
    try:
        return schema.model_validate(tree)
    except ValidationError as err:
        problems = format_errors(err, schema)
        listing = "\n".join(f"  {p}" for p in problems)
        raise FinetuneError(f"{where}: {len(problems)} problem(s):\n{listing}") from None
