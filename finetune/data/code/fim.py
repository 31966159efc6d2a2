"""Fill-in-the-middle with the tokenizer's own FIM tokens.

A document is cut into prefix, middle and suffix, and laid out so that the model learns to write
the middle given both sides (Bavarian et al. 2022, as Code Llama, StarCoder and DeepSeek-Coder
train it):

    PSM:  <PRE> prefix <SUF> suffix <MID> middle <EOT>
    SPM:  <PRE> <SUF> suffix <MID> prefix middle <EOT>

The sentinel tokens are looked up in the vocabulary, never invented: a tokenizer without a known
set is a clear error. Each part is tokenized on its own (as at inference, where the editor sends
prefix and suffix separately), and sentinels are inserted by id.

Example::

    fim = FimTokens.of(tokenizer)           # FinetuneError if the vocabulary has no FIM tokens
    ids, labels = fim.sample(prefix, middle, suffix, spm=False, loss="middle")
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass

from finetune import FinetuneError

IGNORE = -100

# (prefix, suffix, middle, end-of-middle); None: the tokenizer's EOS ends the middle.
FIM_SETS = {
    "codellama": ("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"),  # Code Llama's SentencePiece pieces
    "codellama-plain": ("<PRE>", "<SUF>", "<MID>", "<EOT>"),  # the same tokens written without ▁
    "deepseek-coder": ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", None),
    "starcoder": ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<|endoftext|>"),
}


@dataclass
class FimTokens:
    name: str
    pre: int
    suf: int
    mid: int
    eot: int
    tokenizer: object

    @classmethod
    def of(cls, tokenizer) -> FimTokens:
        """The first FIM set whose every token is in ``tokenizer``'s vocabulary."""
        vocab = tokenizer.get_vocab()
        for name, tokens in FIM_SETS.items():
            texts = [t if t is not None else tokenizer.eos_token for t in tokens]
            if all(t in vocab for t in texts):
                return cls(name, *(vocab[t] for t in texts), tokenizer)
        known = "; ".join(f"{k}: {' '.join(t for t in v if t)}" for k, v in FIM_SETS.items())
        raise FinetuneError(f"fill-in-the-middle needs FIM tokens, and the tokenizer "
                            f"{getattr(tokenizer, 'name_or_path', '')} has none of the known sets ({known}); "
                            "remove `fim` from the codebase source or use a code model's tokenizer")

    @functools.cached_property
    def _newline(self) -> list[int]:
        return self.tokenizer.encode("\n", add_special_tokens=False)

    def encode(self, text: str) -> list[int]:
        """``text`` as a stand-alone part: no BOS, and no SentencePiece dummy space in front (Code Llama
        strips it the same way), found by encoding after a newline and removing the newline's tokens."""
        if not text:
            return []
        enc = self.tokenizer.encode
        nl = self._newline
        ids = enc("\n" + text, add_special_tokens=False)
        return ids[len(nl):] if ids[: len(nl)] == nl else enc(text, add_special_tokens=False)

    def sample(self, prefix: str, middle: str, suffix: str, spm: bool, loss: str,
               bos: int | None) -> tuple[list[int], list[int]]:
        """(input ids, labels) of one FIM sample; ``loss="middle"`` trains only the middle and the
        end-of-middle token, ``"all"`` every token but the first."""
        p, m, s = self.encode(prefix), self.encode(middle), self.encode(suffix)
        head = [bos] if bos is not None else []
        if spm:
            given = [*head, self.pre, self.suf, *s, self.mid, *p]
        else:
            given = [*head, self.pre, *p, self.suf, *s, self.mid]
        ids = given + m + [self.eot]
        if loss == "middle":
            labels = [IGNORE] * len(given) + m + [self.eot]
        else:
            labels = [IGNORE, *ids[1:]]
        return ids, labels


def cut(text: str, rng: random.Random, split: str) -> tuple[str, str, str]:
    """Two seeded cut points, uniform over characters or over line starts: (prefix, middle, suffix)."""
    if split == "line":
        starts = [0, *(m.end() for m in re.finditer("\n", text) if m.end() < len(text)), len(text)]
        a, b = sorted(rng.sample(starts, 2)) if len(starts) >= 2 else (0, len(text))
    else:
        a, b = sorted(rng.randint(0, len(text)) for _ in range(2))
    return text[:a], text[a:b], text[b:]
