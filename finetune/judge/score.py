"""Turning (prompt, answer) into model input, and scoring answers with a trained reward judge.

One encoding serves training, evaluation and the pool, so a judge is always scored on inputs laid
out as it was trained on:

* a tokenizer with a chat template (a Llama judge): the conversation ``prompt + answer`` through
  the template; when too long, the *start* is dropped (the answer and the last turns matter);
* an encoder without one (MiniLM/BERT): a sentence pair ``[CLS] prompt [SEP] answer [SEP]``
  with the prompt as ``role: text`` lines, cut from the left so that its end (the question, the
  function signature, the last tool result) survives, and the answer kept whole up to 3/4 of
  the budget.

Example::

    judge = RewardJudge.from_run(Path("runs/judge"))
    judge.score([prompt, prompt], [answer_a, answer_b])   # [1.7, -0.4]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from finetune import FinetuneError
from finetune.contracts.judging import as_text


def encode(tokenizer, prompt: list[dict], answer: list[dict], max_length: int) -> list[int]:
    """Token ids of one scored input (see the module docstring for the layout)."""
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template(prompt + answer, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        return list(ids[-max_length:])
    answer_ids = tokenizer(as_text(answer).removeprefix("assistant: "), add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer(as_text(prompt), add_special_tokens=False)["input_ids"]
    budget = max_length - 3  # [CLS] ... [SEP] ... [SEP]
    answer_ids = answer_ids[: max(budget * 3 // 4, budget - len(prompt_ids))]
    prompt_ids = prompt_ids[max(0, len(prompt_ids) - (budget - len(answer_ids))):]
    return [tokenizer.cls_token_id, *prompt_ids, tokenizer.sep_token_id, *answer_ids, tokenizer.sep_token_id]


class RewardJudge:
    """A trained reward-model judge: its ``model/`` folder and the input length it was trained with."""

    def __init__(self, model_dir: Path, max_length: int, device: str | None = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.max_length = max_length
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).to(self.device).eval()

    @classmethod
    def from_run(cls, run: Path, device: str | None = None) -> RewardJudge:
        """The judge of a `finetune judge train` run folder (``model/`` + ``judge.json``)."""
        info = Path(run) / "judge.json"
        if not info.exists():
            raise FinetuneError(f"{run} is not a judge run folder (no judge.json); train one with `finetune judge train`")
        meta = json.loads(info.read_text())
        if meta["kind"] != "reward_model":
            raise FinetuneError(f"{run} holds a {meta['kind']} judge, not a reward model")
        return cls(Path(run) / "model", meta["max_length"], device)

    @torch.no_grad()
    def score(self, prompts: list[list[dict]], answers: list[list[dict]], batch_size: int = 16) -> list[float]:
        """One scalar per (prompt, answer); higher is better."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out = []
        for start in range(0, len(prompts), batch_size):
            rows = [encode(self.tokenizer, p, a, self.max_length)
                    for p, a in zip(prompts[start:start + batch_size], answers[start:start + batch_size], strict=True)]
            width = max(map(len, rows))
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device)
            out += self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float().tolist()
        return out
