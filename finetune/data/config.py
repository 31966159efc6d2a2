"""The ``model`` and ``data`` sections: what `finetune data prepare` reads (and `finetune train`,
whose recipe adds a ``train`` section: ``train/config.py``).

Example::

    prepare(Prepare.of("runs/tiny", [("data/sample/openai.jsonl", "auto")], "runs/data", max_seq_length=1024))
    prepare(load_recipe("recipes/tiny/traces.yaml", [], Recipe))   # a training recipe is a Prepare too
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from finetune.contracts.chat import TemplateName
from finetune.contracts.schema import Strict, recipe_from_tree

SourceFormat = Literal["auto", "openai", "sharegpt", "hermes", "glaive", "xlam", "swe_agent", "codebase"]


class Model(Strict):
    path: str = Field(description="Model folder (or hub id on a machine that can reach the hub).")
    chat_template: TemplateName | None = Field(
        default=None,
        description="Render with one of the toolkit's named templates instead of the model's own.",
    )


class Fim(Strict):
    rate: float = Field(default=0.5, ge=0.0, le=1.0, description="Share of code samples turned into fill-in-the-middle.")
    spm_rate: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="Share of FIM samples in suffix-prefix-middle order (the rest prefix-suffix-middle).",
    )
    split: Literal["line", "character"] = Field(
        default="line", description="Cut the middle at line boundaries or at any character.",
    )
    loss: Literal["all", "middle"] = Field(
        default="all", description="Train every token of a FIM sample, or only the middle and its end token.",
    )


class Codebase(Strict):
    include: list[str] = Field(default_factory=list, description="gitignore-style patterns to keep (none: all).")
    exclude: list[str] = Field(default_factory=list, description="gitignore-style patterns to skip, on top of .gitignore.")
    max_file_bytes: int = Field(default=1_000_000, ge=1, description="Larger files are skipped (too_large).")
    max_line_length: int = Field(default=1000, ge=1, description="A file with a longer line is skipped (minified).")
    min_alnum_fraction: float = Field(
        default=0.25, ge=0.0, le=1.0, description="Files with a smaller share of letters and digits are skipped.",
    )
    licenses: list[str] | None = Field(
        default=None,
        description="SPDX ids allowed (e.g. [MIT, Apache-2.0]); the repository's LICENSE file must match one "
                    "(none: no check).",
    )
    redact_secrets: bool = Field(default=True, description="Replace secrets with typed placeholders.")
    redact_pii: bool = Field(default=False, description="Also replace e-mail addresses and public IP addresses.")
    near_duplicate_threshold: float | None = Field(
        default=0.85, gt=0.0, le=1.0,
        description="MinHash Jaccard similarity above which a file is a near duplicate (null: exact dedup only).",
    )
    decontaminate: list[str] = Field(
        default_factory=list, description="Evaluation sets (JSONL/JSON/text files); files sharing a long n-gram are dropped.",
    )
    decontaminate_ngram: int = Field(default=20, ge=5, description="Words in the n-grams that decontamination matches.")
    shape: Literal["file", "repo"] = Field(
        default="file",
        description="One sample per file, or files packed into long contexts in dependency order (Python imports).",
    )
    fim: Fim | None = Field(default=None, description="Fill-in-the-middle with the tokenizer's own FIM tokens.")


class Source(Strict):
    path: str = Field(description="JSONL, JSON, Parquet file, a folder saved by `datasets`, or a code folder.")
    format: SourceFormat = Field(
        default="auto",
        description="Trace layout (`auto` detects per file; `hermes` is `sharegpt`), or `codebase` for a folder of code.",
    )
    weight: float = Field(
        default=1.0, gt=0.0,
        description="Mixture weight of the source's training samples: 0.5 keeps half (seeded), 2.0 repeats them twice.",
    )
    max_tokens: int | None = Field(
        default=None, ge=1, description="Cap on the source's training tokens after weighting (seeded whole samples).",
    )
    codebase: Codebase | None = Field(default=None, description="Code ingestion settings (format `codebase` only).")

    @model_validator(mode="after")
    def _check_codebase(self) -> Source:
        if self.format == "codebase" and self.codebase is None:
            self.codebase = Codebase()
        elif self.format != "codebase" and self.codebase is not None:
            raise ValueError(f"a `codebase` block only applies to format `codebase`, not `{self.format}`")
        return self


class Data(Strict):
    sources: list[Source] = Field(min_length=1, description="Where the traces and the code come from.")
    max_seq_length: int = Field(
        default=2048, ge=16, description="Longer traces are split at turn boundaries, files at lines; never cut."
    )
    validation_fraction: float = Field(
        default=0.05, ge=0.0, lt=1.0, description="Share of records (not pieces) held out."
    )
    seed: int = Field(default=42, description="Seed of the train/validation split.")
    max_reject_fraction: float = Field(
        default=0.25, ge=0.0, le=1.0,
        description="Fail the run when more than this share of records is rejected.",
    )
    dedup: bool = Field(default=True, description="Drop exact duplicate traces and code files (counted).")
    num_proc: int = Field(
        default=1, ge=1,
        description="Processes that render and tokenize traces (the cores to use on a large corpus; output is "
                    "byte-identical to one process). Each starts in a few seconds: 1 suits small sets.",
    )
    output_dir: str = Field(default="runs/data", description="Where the prepared dataset goes.")


class Prepare(Strict):
    """What `finetune data prepare` needs: the model (tokenizer, chat template) and the data."""

    model: Model
    data: Data

    @classmethod
    def of(cls, model: str, sources: list, out: str, chat_template: str | None = None, *, where: str = "prepare",
           **data) -> Prepare:
        """The spec from Python values, checked by the same rules as a recipe (every problem at once,
        named after ``where``). ``sources``: ``Source`` objects, ``(path, format)`` pairs or
        ``{"path": ...}`` mappings; ``data``: any other key of the data section (``max_seq_length=512``)."""
        trees = [s.model_dump() if isinstance(s, Source) else dict(zip(("path", "format"), s, strict=True))
                 if isinstance(s, tuple) else s for s in sources]
        return recipe_from_tree({"model": {"path": model, "chat_template": chat_template},
                                 "data": {"sources": trees, "output_dir": out, **data}}, where, cls)
