"""Does each artifact compute what the trained model computes? Measured, per format.

The reference is the trained model itself: the base in float32 with the adapter applied by PEFT
(unmerged), or the saved full model. A fixed set of prompts (code and tool-use conversations,
rendered with the chat template used in training) is run through the reference once; its
next-token distribution at every position is kept, and the reference is freed before any
artifact loads, so no step holds two models. Each artifact is then loaded by the runtime that
will serve it (transformers for safetensors, the adapter and NF4; llama-cpp-python for GGUF) and
scored on the same token ids:

* ``top1``: share of positions whose most likely next token is the reference's;
* ``mean_kl``: mean KL(reference || artifact) in nats per position;
* ``logit_corr``: Pearson correlation of all logits, the measure least fooled by near-ties;
* ``greedy_same``: whether 16 greedily generated tokens after the first prompt are identical.

GGUF files are also checked as servers see them: llama.cpp must tokenize every prompt text to
the same ids as the training tokenizer, and carry the same chat template and special tokens.

Lossless formats (merged safetensors, adapter, GGUF f16/bf16) fail the export when
``logit_corr < 0.999`` or ``mean_kl > 1e-2``: rounding to 16 bits moves tiny random models'
logits by r = 0.99999 and KL ~ 1e-6, and the real SmolLM2-135M by r = 0.99994 and KL up to
1.1e-3 in bfloat16 (6e-6 in float16), while a mis-mapped tensor (a missing Q/K permutation,
swapped experts) gives r < 0.99. Top-1 agreement is reported but not gated, since random test
models have near-tied top candidates that any rounding can swap.

Example::

    ref = Reference.compute(src, tokenizer)
    report = ref.compare(gguf_logits(path, ref.ids))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from finetune import FinetuneError
from finetune.train.model import attach_adapter

MIN_CORR, MAX_KL, GREEDY_TOKENS = 0.999, 1e-2, 16
PROMPTS = [
    [{"role": "user", "content": "Write a Python function that returns the n-th Fibonacci number iteratively."},
     {"role": "assistant", "content": "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a"}],
    [{"role": "system", "content": "You are a careful coding agent with shell access."},
     {"role": "user", "content": "The test suite fails with ImportError: cannot import name 'load' from 'config'. Fix it."},
     {"role": "assistant", "content": "The module `config` no longer exports `load`; I will rename the import to `load_config`."}],
    [{"role": "user", "content": "Explain what `git rebase --onto main feature~3 feature` does, in two sentences."},
     {"role": "assistant", "content": "It replays the last three commits of feature onto main. The older commits stay behind."}],
    [{"role": "user", "content": "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 3; -- what does this return?"},
     {"role": "assistant", "content": "Each customer name with more than three orders, and how many orders each has."}],
    [{"role": "user", "content": "Translate to Rust: for i in range(3): print(i * i)"},
     {"role": "assistant", "content": "for i in 0..3 {\n    println!(\"{}\", i * i);\n}"}],
    [{"role": "user", "content": "Unicode check: naïve café, 東京, emoji 🚀, tabs\tand  double  spaces."},
     {"role": "assistant", "content": "Noted: naïve café, 東京, 🚀."}],
]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@dataclass
class Reference:
    """The trained model's logits on the verification prompts."""

    texts: list[str]
    ids: list[list[int]]
    add_bos: bool  # plain text (no chat template): the tokenizer adds BOS, as a server would
    logits: list[np.ndarray]
    greedy: list[int]

    @classmethod
    def compute(cls, model, tokenizer) -> Reference:
        texts = [render(tokenizer, p) for p in PROMPTS]
        add_bos = not tokenizer.chat_template
        ids = [tokenizer(t, add_special_tokens=add_bos)["input_ids"] for t in texts]
        logits = hf_logits(model, ids)
        greedy = hf_greedy(model, generation_prompt(tokenizer))
        return cls(texts, ids, add_bos, logits, greedy)

    def compare(self, logits: list[np.ndarray], greedy: list[int] | None = None) -> dict:
        top1, kl, n = 0, 0.0, 0
        xs, ys = [], []
        for ref, got in zip(self.logits, logits, strict=True):
            if got.shape != ref.shape:
                raise FinetuneError(f"artifact logits have shape {got.shape}, the trained model's {ref.shape}")
            p, q = _log_softmax(ref), _log_softmax(got)
            top1 += int((ref.argmax(-1) == got.argmax(-1)).sum())
            kl += float((np.exp(p) * (p - q)).sum())
            n += ref.shape[0]
            xs.append(ref.ravel())
            ys.append(got.ravel())
        out = {"positions": n, "top1": round(top1 / n, 4), "mean_kl": float(f"{kl / n:.3g}"),
               "logit_corr": round(float(np.corrcoef(np.concatenate(xs), np.concatenate(ys))[0, 1]), 6)}
        if greedy is not None:
            out["greedy_same"] = greedy == self.greedy
        return out


def render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    """A conversation as the served model sees it: through the chat template used in training, or
    (a base model without one) as plain text."""
    if not tokenizer.chat_template:
        return "\n\n".join(m["content"] for m in messages)
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # jinja raises its own types for templates that refuse a role
        raise FinetuneError(f"the chat template cannot render the verification prompts ({exc}); "
                            "pass --no-verify, or fix the template") from None


def generation_prompt(tokenizer) -> list[int]:
    text = render(tokenizer, PROMPTS[0][:1], generation_prompt=True)
    return tokenizer(text, add_special_tokens=not tokenizer.chat_template)["input_ids"]


@torch.no_grad()
def hf_logits(model, ids: list[list[int]]) -> list[np.ndarray]:
    device = next(model.parameters()).device
    return [model(torch.tensor([row], device=device)).logits[0].float().cpu().numpy() for row in ids]


@torch.no_grad()
def hf_greedy(model, prompt: list[int]) -> list[int]:
    ids = list(prompt)
    for _ in range(GREEDY_TOKENS):  # full recompute each step: no cache, no sampling code paths
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def load_hf(folder: Path, adapter: Path | None = None):
    """A model folder (NF4 included: its config carries the quantization) in float32 compute."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    if adapter is not None:
        model = attach_adapter(model, adapter)
    return model.eval()


class GGUFRunner:
    """A GGUF (optionally with a GGUF LoRA) in llama-cpp-python, all-position logits."""

    def __init__(self, path: Path, lora: Path | None = None, n_ctx: int = 1024):
        import llama_cpp

        kwargs = {"lora_path": str(lora)} if lora else {}
        self.llm = llama_cpp.Llama(str(path), n_ctx=n_ctx, logits_all=True, verbose=False,
                                   n_threads=max(1, min(4, __import__("os").cpu_count() or 1)), **kwargs)

    def logits(self, ids: list[list[int]]) -> list[np.ndarray]:
        out = []
        for row in ids:
            self.llm.reset()
            self.llm.eval(row)
            out.append(np.array(self.llm.scores[:len(row)], dtype=np.float32))
        return out

    def greedy(self, prompt: list[int]) -> list[int]:
        self.llm.reset()
        self.llm.eval(prompt)
        new = []
        for _ in range(GREEDY_TOKENS):
            new.append(int(np.argmax(self.llm.scores[self.llm.n_tokens - 1])))
            self.llm.eval([new[-1]])
        return new

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def close(self) -> None:
        self.llm.close()


def gguf_checks(path: Path, runner: GGUFRunner, ref: Reference, tokenizer) -> dict:
    """What a llama.cpp server would see: tokenization, chat template and special token ids."""
    import gguf

    fields = gguf.GGUFReader(str(path)).fields

    def value(key):
        return fields[key].contents() if key in fields else None

    mismatched = [i for i, (t, ids) in enumerate(zip(ref.texts, ref.ids, strict=True)) if runner.tokenize(t, ref.add_bos) != ids]
    specials = {k: (value(f"tokenizer.ggml.{key}_token_id"), getattr(tokenizer, f"{k}_token_id"))
                for k, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown"))}
    return {"tokenizer_same": not mismatched, "tokenizer_mismatched_prompts": mismatched,
            "chat_template_same": value("tokenizer.chat_template") == tokenizer.chat_template,
            "special_tokens_same": all(a == b for a, b in specials.values())}


def gate(fmt: str, result: dict) -> str | None:
    """Why a lossless artifact fails verification, or None."""
    if result.get("tokenizer_same") is False or result.get("chat_template_same") is False \
            or result.get("special_tokens_same") is False:
        return (f"{fmt}: llama.cpp would not tokenize or template prompts as in training "
                f"(tokenizer {result.get('tokenizer_same')}, chat template {result.get('chat_template_same')}, "
                f"special tokens {result.get('special_tokens_same')})")
    if result["logit_corr"] < MIN_CORR or result["mean_kl"] > MAX_KL:
        return (f"{fmt}: logits disagree with the trained model beyond 16-bit rounding (correlation "
                f"{result['logit_corr']} < {MIN_CORR} or mean KL {result['mean_kl']} > {MAX_KL}); "
                "this is a conversion bug, not quantization")
    return None
