"""The generative judge: a causal LM that reads a task and candidates and answers with a verdict.

The verdict is JSON: ``{"winner": "B", "scores": {"A": 2, "B": 9}, "rationale": "..."}``. Each
preference pair becomes two training conversations, the chosen answer once as candidate A and
once as B, so that the judge cannot learn a favourite position. The rationale names the checked
reason the loser lost (``test_failed``, ``missing_required_argument``...), which is what the
execution or the call checker found. Training is ordinary SFT through the toolkit's own pipeline
(``data prepare`` masks: only the verdict is trained; ``train`` with the recipe's ``train``
section); a LoRA adapter is merged so the run folder holds one plain ``model/``.

The prompt and verdict layout is the judge's contract with the pool: :mod:`finetune.contracts.judging`.

Example::

    judge = GenerativeJudge(Path("runs/judge"))
    judge.pick(prompt, [answer_a, answer_b])   # 0, 1 or None
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from finetune.contracts.judging import parse_verdict, verdict, verdict_prompt
from finetune.data.config import Data, Prepare, Source
from finetune.data.prepare import prepare
from finetune.judge.data import load_pairs
from finetune.train.config import PreparedSet, Recipe
from finetune.train.model import attach_adapter
from finetune.train.run import train


def _records(pairs) -> list[dict]:
    out = []
    for row in pairs:
        for chosen_first in (True, False):
            answers = [row["chosen"], row["rejected"]] if chosen_first else [row["rejected"], row["chosen"]]
            messages = verdict_prompt(row["prompt"], answers)
            messages.append({"role": "assistant", "content": verdict(0 if chosen_first else 1, 2, row["reason"])})
            out.append({"messages": messages})
    return out


def train_generative(recipe, run: Path, show_progress: bool) -> None:
    from accelerate import PartialState

    state = PartialState()
    verdicts = run / "verdicts.jsonl"
    if state.is_main_process:  # under `accelerate launch` one process prepares, the others wait
        pairs = load_pairs(recipe.judge.datasets)
        verdicts.write_text("".join(json.dumps(r) + "\n" for r in _records(pairs["train"])))
        prepare(Prepare.of(model=recipe.model.path, sources=[(str(verdicts), "openai")], out=str(run / "data"),
                               max_seq_length=recipe.judge.max_length, validation_fraction=0.0,
                               max_reject_fraction=0.5, chat_template=recipe.model.chat_template))
    state.wait_for_everyone()
    sft = Recipe(model=recipe.model, data=Data(sources=[Source(path=str(verdicts), format="openai")]),
                 train=recipe.train.model_copy(update={"datasets": [PreparedSet(path=str(run / "data"))],
                                                       "output_dir": str(run / "sft")}))
    sft_run = train(sft, show_progress=show_progress)
    if state.is_main_process:
        _save_plain(recipe, sft_run, run / "model")
    state.wait_for_everyone()


def _save_plain(recipe, sft_run: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (sft_run / "model").exists():
        model = AutoModelForCausalLM.from_pretrained(str(sft_run / "model"))
    else:
        base = AutoModelForCausalLM.from_pretrained(recipe.model.path, dtype=torch.float32)
        model = attach_adapter(base, sft_run / "adapter").merge_and_unload()
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(sft_run / "tokenizer")).save_pretrained(str(out))


class GenerativeJudge:
    """A trained generative judge: ``pick(prompt, answers)`` -> index of the winner (or None)."""

    def __init__(self, run: Path, max_new_tokens: int = 64):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(run / "model"))
        self.model = AutoModelForCausalLM.from_pretrained(str(run / "model")).eval()
        self.max_new_tokens = max_new_tokens

    @torch.no_grad()
    def pick(self, prompt: list[dict], answers: list[list[dict]]) -> int | None:
        text = self.tokenizer.apply_chat_template(verdict_prompt(prompt, answers), tokenize=False,
                                                  add_generation_prompt=True)
        ids = torch.tensor([self.tokenizer(text, add_special_tokens=False)["input_ids"]])
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens,
                                  do_sample=False, pad_token_id=self.tokenizer.pad_token_id)
        return parse_verdict(self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True), len(answers))


def generative_metrics(run: Path, pairs, out: Path) -> dict:
    """Accuracy over both candidate orders, swap agreement and parse rate on held-out pairs."""
    judge = GenerativeJudge(run)
    start = time.perf_counter()
    by_source, correct, agree, parsed = defaultdict(list), [], 0, 0
    for row in pairs:
        first = judge.pick(row["prompt"], [row["chosen"], row["rejected"]])   # chosen is A
        second = judge.pick(row["prompt"], [row["rejected"], row["chosen"]])  # chosen is B
        parsed += (first is not None) + (second is not None)
        agree += first is not None and second is not None and first == 1 - second
        score = ((first == 0) + (second == 1)) / 2
        correct.append(score)
        by_source[row["source"]].append(score)
    seconds = time.perf_counter() - start
    n = len(correct)
    return {"pairs": n, "accuracy": round(sum(correct) / n, 4),
            "by_source": {k: {"pairs": len(v), "accuracy": round(sum(v) / len(v), 4)} for k, v in sorted(by_source.items())},
            "swap_agreement": round(agree / n, 4), "parsed": round(parsed / (2 * n), 4),
            "candidates_per_second": round(4 * n / seconds, 2)}
