"""The pool description ``finetune pool build`` reads (POOL.yaml): members, judge, fusion. See
``build.py`` for what each member kind resolves to, and ``manifest.py`` for what it becomes.

Example::

    spec = load_recipe("recipes/pool/smollm2.yaml", [], PoolSpec)
"""

from __future__ import annotations

from pydantic import Field, model_validator

from finetune.contracts.chat import ToolCallFormat
from finetune.contracts.schema import Strict
from finetune.pool.manifest import NAME, Endpoint, Fusion, Sampling


class MemberSpec(Strict):
    name: str = Field(pattern=NAME, description="Served model name of the member.")
    export: str | None = Field(default=None, description="Export folder (artifacts.json) of a merged model.")
    base: str | None = Field(default=None, description="Export folder of the base this member's adapter needs.")
    adapter: str | None = Field(default=None, description="Export folder holding the adapter (`adapter`, "
                                                          "`gguf-lora`).")
    endpoint: Endpoint | None = Field(default=None, description="A running OpenAI-compatible server.")
    tool_call_format: ToolCallFormat | None = Field(default=None, description="Override what is read from "
                                                    "the chat template (needed for endpoints).")
    context_length: int | None = Field(default=None, ge=16, description="Override (needed for endpoints).")
    sampling: Sampling = Field(default_factory=Sampling)
    cost: float = Field(default=1.0, gt=0.0, description="Relative cost of one call.")
    samples: int = Field(default=1, ge=1, le=8, description="Self-fusion: answers drawn from this member per "
                                                            "request (seeds 1..N), judged with the others.")

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = [k for k, v in (("export", self.export), ("base + adapter", self.base or self.adapter),
                                ("endpoint", self.endpoint)) if v]
        if len(kinds) != 1:
            raise ValueError(f"member {self.name!r}: give exactly one of export, base + adapter, endpoint "
                             f"(got {kinds or 'none'})")
        if bool(self.base) != bool(self.adapter):
            raise ValueError(f"member {self.name!r}: base and adapter go together")
        if self.samples > 1 and self.sampling.temperature == 0:
            raise ValueError(f"member {self.name!r}: samples {self.samples} at temperature 0 are one answer "
                             "N times; set sampling.temperature above 0")
        return self


class JudgeSpec(Strict):
    run: str = Field(description="A `finetune judge train` run folder (judge.json + model/).")
    export: str | None = Field(default=None, description="Export folder of a generative judge (GGUF for "
                                                         "llama.cpp), from `finetune export RUN ...`.")


class PoolSpec(Strict):
    name: str = Field(pattern=NAME, description="Served model name of the pool.")
    members: list[MemberSpec] = Field(min_length=1)
    judge: JudgeSpec
    fusion: Fusion = Field(default_factory=Fusion)
    tools: bool = Field(default=True, description="Serve tool calls (every member must then write them the "
                                                  "same way); false: the pool answers in text only.")
