"""Rendering traces with a chat template, and token-level loss masks.

The masks come from the template itself, not from knowledge of any one format: for assistant
message *i* the trained characters run from the end of ``render(messages[:i],
add_generation_prompt=True)`` (everything the model is *given*, header included) to the end of
``render(messages[:i+1])`` (its content, its tool calls and the end-of-turn token that closes it,
trailing whitespace aside). The whole text is tokenized once with offsets, and a token is trained
when it starts inside a trained span, so what is trained is exactly what a model sees and
produces at inference, with the real tokenizer, whatever its merges.

This needs a *prefix-stable* template; one that is not (e.g. one that drops older reasoning) is
caught per record and rejected with the reason instead of producing wrong masks.

A trace longer than ``max_seq_length`` is split at turn boundaries: groups of [user turns,
assistant turn, its tool results] are packed greedily into pieces; every piece keeps the system
prompt and the tool schemas, and a piece that starts at an assistant turn also carries the last
user turn before it as (untrained) context. A group that does not fit alone rejects the record.

Example::

    samples = Renderer(tokenizer).render(trace, max_seq_length=2048)
    samples[0].input_ids, samples[0].labels
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from finetune import FinetuneError, RecordError

IGNORE = -100
ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Sample:
    input_ids: list[int]
    labels: list[int]
    # tokens per role: {"assistant": [total, trained], ...}
    role_tokens: dict[str, list[int]] = field(default_factory=dict)


def _schemas(tools: list[dict]) -> list[dict] | None:
    """Tool schemas in the shape chat templates read (none: no ``tools`` at all, as transformers passes)."""
    return [{"type": "function", "function": t} for t in tools] or None


def to_hf(messages: list[dict]) -> list[dict]:
    """Canonical messages in the shape Hugging Face chat templates read."""
    out = []
    for m in messages:
        hm = {"role": m["role"], "content": m["content"]}
        if m.get("tool_calls"):
            hm["tool_calls"] = [{"id": c["id"], "type": "function",
                                 "function": {"name": c["name"], "arguments": c["arguments"]}} for c in m["tool_calls"]]
        if "tool_call_id" in m:
            hm["tool_call_id"] = m["tool_call_id"]
        out.append(hm)
    return out


_PROBE_TOOL = {"name": "probe_tool_7f3a", "description": "probe",
               "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}
_PROBE = [
    {"role": "system", "content": "probe-system"},
    {"role": "user", "content": "probe-user"},
    {"role": "assistant", "content": "",
     "tool_calls": [{"id": "call_0", "name": "probe_tool_7f3a", "arguments": {"q": "probe-arg"}}]},
    {"role": "tool", "content": "probe-result", "tool_call_id": "call_0"},
    {"role": "assistant", "content": "probe-answer"},
]


class Renderer:
    """Renders canonical traces with ``tokenizer``'s chat template into masked samples.

    The template is compiled once (by transformers, with its sandbox and filters) and rendered
    directly: a trace's messages are converted once and every prefix is a slice of them, where
    ``apply_chat_template`` would copy and normalise the whole conversation on each of its ~3 calls
    per message. The text is the same (``tests/data/test_masks.py`` compares them)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise FinetuneError(
                "the model's tokenizer has no chat template: pass --chat-template llama3|llama4|hermes "
                "(recipe: model.chat_template)")
        bos = tokenizer.bos_token
        self._prepend_bos = bool(getattr(tokenizer, "add_bos_token", False) and bos)
        self._context = dict(tokenizer.special_tokens_map)  # what apply_chat_template lets a template see
        self._templates: dict[bool, object] = {}  # tools given or not -> compiled template
        self._header = None
        try:
            self._header = self._generation_header()
            text = self._render(_PROBE, [_PROBE_TOOL], False)
            self.spans(_PROBE, [_PROBE_TOOL], text)
        except RecordError as exc:
            raise FinetuneError(f"the chat template cannot be used for loss masks: {exc.detail}") from None
        except Exception as exc:  # a template that raises on a plain tool conversation
            raise FinetuneError(f"the chat template fails on a tool-calling conversation: {exc}") from None
        if "probe-answer" not in text:
            raise FinetuneError("the chat template does not render assistant content")
        # Some templates silently drop tools; then traces with tools are rejected, never mangled.
        self.renders_tools = all(s in text for s in ("probe_tool_7f3a", "probe-arg", "probe-result"))

    def _generation_header(self) -> str | None:
        """What the generation prompt appends (``<|start_header_id|>assistant<|end_header_id|>\\n\\n``),
        when it is the same text before both assistant turns of the probe; else None (``spans``
        then renders every message's end)."""
        hf, schemas = to_hf(_PROBE), _schemas([_PROBE_TOOL])
        heads = set()
        for k in (i for i, m in enumerate(_PROBE) if m["role"] == "assistant"):
            given, upto = self._text(hf[:k], schemas, True), self._text(hf[:k], schemas, False)
            if not given.startswith(upto):
                return None
            heads.add(given[len(upto):])
        return heads.pop() if len(heads) == 1 and "" not in heads else None

    def _template(self, schemas: list[dict] | None):
        """The compiled template for a conversation with (or without) tools: a tokenizer with several
        named templates uses its ``tool_use`` one for tools, as ``apply_chat_template`` does."""
        key = schemas is not None
        if key not in self._templates:
            from transformers.utils.chat_template_utils import _compile_jinja_template

            self._templates[key] = _compile_jinja_template(self.tok.get_chat_template(None, schemas))
        return self._templates[key]

    def _text(self, hf: list[dict], schemas: list[dict] | None, gen: bool) -> str:
        """HF-shaped messages (``to_hf``) rendered by the chat template."""
        try:
            return self._template(schemas).render(messages=hf, tools=schemas, documents=None,
                                                  add_generation_prompt=gen, **self._context)
        except Exception as exc:  # jinja raise_exception() from the model's own template
            raise RecordError("template_error", f"chat template refused the trace: {exc}") from None

    def _render(self, messages: list[dict], tools: list[dict], gen: bool) -> str:
        """Canonical messages rendered by the chat template."""
        return self._text(to_hf(messages), _schemas(tools), gen)

    def spans(self, messages: list[dict], tools: list[dict], full: str) -> tuple[list[int], list[tuple[int, int]]]:
        """(end offset of each message in ``full``, trained character spans).

        Each assistant turn needs two renders: the prompt it is given (generation prompt on) and the
        text through its end. The end of a message just before an assistant turn is that turn's
        prompt less the template's generation header (``_header``, the same text for every
        conversation, found on the probe), so it costs no render of its own."""
        hf, schemas = to_hf(messages), _schemas(tools)
        ends, trained = [], []
        prompt = None  # the generation prompt before messages[i], when already rendered
        for i, m in enumerate(messages):
            ahead = None
            if self._header and m["role"] != "assistant" and i + 1 < len(messages) \
                    and messages[i + 1]["role"] == "assistant":
                ahead = self._text(hf[: i + 1], schemas, True)
            if ahead is not None and ahead.endswith(self._header) and full.startswith(ahead):
                upto = None
                end = len(ahead) - len(self._header)
            else:
                upto = full if i == len(messages) - 1 else self._text(hf[: i + 1], schemas, False)
                if not full.startswith(upto):
                    raise RecordError("template_not_prefix_stable", f"rendering changes earlier text at messages[{i}]")
                end = len(upto)
            if m["role"] == "assistant":
                given = prompt if prompt is not None else self._text(hf[:i], schemas, True)
                if not upto.startswith(given) or len(given) < (ends[-1] if ends else 0):
                    raise RecordError("template_not_prefix_stable", f"generation prompt is not a prefix at messages[{i}]")
                if m.get("train", True):
                    trained.append((len(given), len(upto.rstrip())))
            prompt = ahead
            ends.append(end)
        return ends, trained

    def tokenize(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and character offsets of ``text``, special tokens as written in it. A fast
        tokenizer's Rust backend is asked directly: the same ids and offsets as ``tokenizer(text)``
        (``tests/data/test_masks.py``) at half the cost of its batch-of-one wrapper."""
        backend = getattr(self.tok, "backend_tokenizer", None)
        if backend is not None:
            enc = backend.encode(text, add_special_tokens=False)
            ids, offsets = enc.ids, enc.offsets
        else:
            enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
            ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
        if self._prepend_bos and not text.startswith(self.tok.bos_token):
            ids, offsets = [self.tok.bos_token_id, *ids], [(0, 0), *offsets]
        return ids, offsets

    def _sample(self, canon: list[dict], tools: list[dict]) -> Sample:
        import numpy as np

        full = self._render(canon, tools, False)
        ends, trained = self.spans(canon, tools, full)
        ids, offsets = self.tokenize(full)
        starts = np.fromiter((s for s, _ in offsets), dtype=np.int64, count=len(offsets))
        # A token is trained when it starts inside a trained span, and belongs to the message it starts in.
        span_starts = np.array([a for a, _ in trained] + [0], dtype=np.int64)
        span_ends = np.array([b for _, b in trained], dtype=np.int64)
        k = np.searchsorted(span_ends, starts, side="right")
        is_trained = (k < len(trained)) & (span_starts[k] <= starts)
        ids_np = np.asarray(ids, dtype=np.int64)
        labels = np.where(is_trained, ids_np, IGNORE)
        msg = np.searchsorted(np.asarray(ends[:-1], dtype=np.int64), starts, side="right")
        role_tokens = {}
        for role in ROLES:
            of_role = np.isin(msg, [i for i, m in enumerate(canon) if m["role"] == role])
            if of_role.any():
                role_tokens[role] = [int(of_role.sum()), int((of_role & is_trained).sum())]
        return Sample(ids, labels.tolist(), role_tokens)

    def length(self, canon: list[dict], tools: list[dict]) -> int:
        return len(self.tokenize(self._render(canon, tools, False))[0])

    def render(self, trace: dict, max_seq_length: int) -> list[Sample]:
        """One sample per piece of ``trace``; raises ``RecordError`` when it cannot be used."""
        messages, tools = trace["messages"], trace.get("tools") or []
        if not self.renders_tools and (tools or any(m.get("tool_calls") or m["role"] == "tool" for m in messages)):
            raise RecordError("template_drops_tools", "the chat template does not render tools or tool calls; "
                                                      "use --chat-template llama3|llama4|hermes")
        whole = self._sample(messages, tools)
        if len(whole.input_ids) <= max_seq_length:
            return [whole]
        samples = [self._sample(p, tools) for p in self._split(messages, tools, max_seq_length)]
        assert all(len(s.input_ids) <= max_seq_length for s in samples), "a piece outgrew its measured length"
        return samples

    def _split(self, messages: list[dict], tools: list[dict], limit: int) -> list[list[dict]]:
        head = messages[:1] if messages[0]["role"] == "system" else []
        # Groups: [user turns..., assistant turn, tool results...]; trailing non-assistant turns
        # join the last group, so a tool call never leaves its results behind.
        groups: list[list[dict]] = []
        pending: list[dict] = []
        for m in messages[len(head):]:
            if m["role"] == "assistant":
                groups.append([*pending, m])
                pending = []
            elif m["role"] == "tool" and groups and not pending:
                groups[-1].append(m)
            else:
                pending.append(m)
        if pending:
            groups[-1].extend(pending)
        pieces: list[list[dict]] = []
        current: list[dict] = []
        for group in groups:
            if current and self.length(_piece(head, current + group, messages), tools) > limit:
                pieces.append(_piece(head, current, messages))
                current = []
            if not current:
                alone = self.length(_piece(head, group, messages), tools)
                if alone > limit:
                    first = next(i for i, m in enumerate(messages) if m is group[0])
                    raise RecordError("too_long", f"messages[{first}:{first + len(group)}] need {alone} tokens with "
                                      f"the system prompt and tools, more than max_seq_length {limit}")
            current += group
        pieces.append(_piece(head, current, messages))
        return pieces


def _piece(head: list[dict], body: list[dict], messages: list[dict]) -> list[dict]:
    """System head + body; a body that opens mid-task also gets the newest user turn before it."""
    if body[0]["role"] != "user":
        start = next(i for i, m in enumerate(messages) if m is body[0])
        context = next((m for m in reversed(messages[:start]) if m["role"] == "user"), None)
        if context is not None:
            return [*head, context, *body]
    return [*head, *body]


def canonical_key(trace: dict) -> str:
    """The exact-duplicate key: a hash of the trace as canonical JSON (the record's own id left out)."""
    text = json.dumps({"m": trace["messages"], "t": trace.get("tools") or []}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
