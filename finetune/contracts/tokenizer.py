"""The tokenizer every stage shares: loading it, and fitting it to a chat template and to padding.

Loading takes a tokenizer folder or a ``.gguf`` file (a vocabulary-only one, or a whole model);
GGUF control tokens get their real text and ids back (see ``_restore_gguf_tokens``).

Fitting (:func:`fit_tokenizer`) is what used to be hand work before training:

* **Template tokens.** A named template whose special tokens the vocabulary lacks (Code Llama's
  SentencePiece vocabulary with the ChatML ``hermes`` template needs ``<|im_start|>`` and
  ``<|im_end|>``) gets them added as special tokens. Training then grows the embedding to match and
  trains the new rows, adapters included (``train/model.py``).
* **EOS and BOS.** With a named template, EOS becomes the template's end-of-turn token, which is
  what every assistant turn ends with and what a server must stop on; a BOS that is one of the
  template's turn tokens (SmolLM2's BOS is ``<|im_start|>``) is dropped, since the template
  would otherwise open with that token twice.
* **Pad.** A pad token equal to EOS (SmolLM2 ships ``pad = eos = <|im_end|>``) or to BOS is
  replaced. It matters because collators and losses that find padding by its id (``labels[ids ==
  pad] = -100``, attention masks built from ``ids != pad``) would then also erase every real
  end-of-turn token: the model would never learn to stop. The pad is an existing unused special
  token when the vocabulary has one (``<|finetune_right_pad_id|>``, ``<pad>``, a reserved token,
  ``<unk>``, ``<|endoftext|>`` when it is neither BOS nor EOS), else a new ``<pad>``; its row is
  never trained, because no label is ever a pad.

What was done comes back as a plain dict that ``stats.json``, ``run.json`` and model cards record.

Example::

    tok = load_tokenizer("runs/smollm2")
    record = fit_tokenizer(tok, "hermes")   # {"template": "hermes", "added_tokens": [], "pad": {...}}
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune import FinetuneError
from finetune.contracts.chat import TEMPLATES

# Pad candidates in order of preference: dedicated pad tokens, then unused special tokens.
PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<|finetune_right_pad|>", "<pad>", "<|pad|>", "[PAD]",
                  "<|reserved_special_token_0|>", "<unk>", "<|endoftext|>")
NEW_PAD = "<pad>"


def load_tokenizer(path: str | Path):
    """A tokenizer from a folder, or from a ``.gguf`` file (vocabulary-only or a whole model)."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.exists():
        raise FinetuneError(f"tokenizer {path} does not exist")
    if path.suffix == ".gguf":
        return _restore_gguf_tokens(AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name), path)
    return AutoTokenizer.from_pretrained(str(path))


def _restore_gguf_tokens(tok, path: Path):
    """Give control and user-defined tokens back their GGUF text and ids.

    transformers' GGUF reader byte-encodes the text of a byte-level BPE vocabulary's control and
    user-defined tokens (DeepSeek-Coder's ``<｜fim▁begin｜>`` becomes ``<ï½ľfimâĸģbeginï½ľ>``, so the
    real text no longer encodes to it) and appends BOS/EOS as new ids (32257/32258 instead of the
    GGUF's 32013/32014). Both would break fill-in-the-middle and the GGUF round trip, so the
    tokenizer is rewritten with the GGUF's own text and ids for those tokens.
    """
    import tempfile

    import gguf
    from transformers import AutoTokenizer

    data = json.loads(tok.backend_tokenizer.to_str())
    if data["model"]["type"] != "BPE":
        return tok
    fields = gguf.GGUFReader(path).fields
    texts = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    special = {i: t == gguf.TokenType.CONTROL for i, t in enumerate(types)
               if t in (gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED)}
    vocab = data["model"]["vocab"]
    key_of = {v: k for k, v in vocab.items()}
    for i in special:
        if key_of.get(i, texts[i]) != texts[i]:
            del vocab[key_of[i]]
            vocab[texts[i]] = i
    gguf_id = {texts[i]: i for i in special}
    moved = {a["id"]: gguf_id[a["content"]] for a in data["added_tokens"]
             if a["content"] in gguf_id and a["id"] != gguf_id[a["content"]]}
    if not moved and all(key_of.get(i) == texts[i] for i in special):
        return tok
    added = {a["id"]: a for a in data["added_tokens"] if a["id"] not in moved}
    for i, is_control in special.items():
        added[i] = {**added.get(i, {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False}),
                    "id": i, "content": texts[i], "special": is_control}
    data["added_tokens"] = [added[i] for i in sorted(added)]

    def renumber(node):
        if isinstance(node, dict):
            return {k: ([moved.get(i, i) for i in v] if k == "ids" else renumber(v)) for k, v in node.items()}
        return [renumber(v) for v in node] if isinstance(node, list) else node

    data["post_processor"] = renumber(data["post_processor"])
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
        cfg = json.loads((Path(tmp) / "tokenizer_config.json").read_text())
        cfg.pop("added_tokens_decoder", None)  # the old ids; tokenizer.json holds the new ones
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(cfg))
        return AutoTokenizer.from_pretrained(tmp)


def matching_template(tokenizer) -> str | None:
    """The toolkit template whose special tokens the vocabulary already has (Llama 4 headers,
    Llama 3 headers, ChatML), or None."""
    vocab = tokenizer.get_vocab()
    return next((name for name in ("llama4", "llama3", "hermes")
                 if all(t in vocab for t in TEMPLATES[name].special_tokens)), None)


def _pad_choice(tok, avoid: set[int]) -> tuple[str, bool]:
    """(pad token, whether it is new): an existing unused special token, else a new ``<pad>``."""
    vocab = tok.get_vocab()
    for candidate in PAD_CANDIDATES:
        if candidate in vocab and vocab[candidate] not in avoid:
            return candidate, False
    return NEW_PAD, True


def fit_tokenizer(tok, template: str | None) -> dict:
    """Fit ``tok`` in place to ``template`` (a toolkit template name; None keeps the tokenizer's
    own) and to padding, as the module docstring describes; return what was done."""
    from transformers import AddedToken

    record: dict = {"chat_template": template or "model", "added_tokens": []}
    if template is not None:
        if template not in TEMPLATES:
            raise FinetuneError(f"chat template {template!r}: choose one of {', '.join(TEMPLATES)}")
        spec = TEMPLATES[template]
        vocab = tok.get_vocab()
        missing = [t for t in spec.special_tokens if t not in vocab]
        if missing:
            tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
            record["added_tokens"] += missing
        tok.chat_template = spec.jinja
        if tok.bos_token in spec.special_tokens:
            # SmolLM2 names <|im_start|> its BOS: a turn token, not a sequence start. The template
            # opens with bos_token, so keeping it would double every first turn's <|im_start|>.
            record["bos"] = {"was": tok.bos_token, "now": None}
            tok.bos_token = None
        if tok.eos_token != spec.end_of_turn:
            record["eos"] = {"was": tok.eos_token, "now": spec.end_of_turn}
            tok.eos_token = spec.end_of_turn
    avoid = {i for i in (tok.eos_token_id, tok.bos_token_id) if i is not None}
    if template is not None:
        avoid |= {tok.convert_tokens_to_ids(t) for t in TEMPLATES[template].special_tokens}
    if tok.pad_token is None or tok.pad_token_id in avoid:
        pad, new = _pad_choice(tok, avoid)
        if new:
            tok.add_tokens([AddedToken(pad, special=True, normalized=False)], special_tokens=True)
            record["added_tokens"].append(pad)
        why = "none set" if tok.pad_token is None else f"{tok.pad_token!r} is also {'EOS' if tok.pad_token_id == tok.eos_token_id else 'BOS or a template token'}"
        record["pad"] = {"token": pad, "id": tok.convert_tokens_to_ids(pad), "was": tok.pad_token, "why": why,
                         "added": new}
        tok.pad_token = pad
    else:
        record["pad"] = {"token": tok.pad_token, "id": tok.pad_token_id, "was": tok.pad_token, "added": False}
    return record


def describe(record: dict) -> str:
    """One line for the terminal: what fitting the tokenizer changed."""
    template = record["chat_template"]
    parts = [f"chat template {'of the model' if template == 'model' else template}"]
    if record["added_tokens"]:
        parts.append(f"added tokens {record['added_tokens']} (new embedding rows)")
    for key in ("bos", "eos"):
        if key in record:
            parts.append(f"{key.upper()} {record[key]['was']!r} -> {record[key]['now']!r}")
    pad = record["pad"]
    changed = f"; was {pad['was']!r}: {pad['why']}" if pad["was"] != pad["token"] else ""
    parts.append(f"pad {pad['token']!r} (id {pad['id']}{changed})")
    return "; ".join(parts)
