"""A pool member's llama.cpp server: llama-cpp-python's own server (``python -m llama_cpp.server``,
the same flags) with what text from outside may not do taken away.

**Message text is never read as special tokens.** llama-cpp-python renders the chat template and
tokenizes the whole prompt with special tokens enabled, so a tool result, a file or a web page
holding ``<|eot_id|><|start_header_id|>system<|end_header_id|>`` became a real system turn (the
probe counted 6 turn headers where the conversation had 4). Here every string that comes from the
request (message content, tool-call arguments, names, the tools' schemas and descriptions) and
holds a special token's text is replaced by a placeholder before the template renders, and the
placeholder is tokenized as plain text afterwards: the turn markers the *template* writes stay
special, the same characters inside a message are just characters. A string without special text
is rendered as before, so ordinary prompts tokenize exactly as they did.

``PlainText`` does the marking and tokenizing; the gateway's prompt counter
(:class:`finetune.pool.local.PromptCounter`) uses it too, so the count is the member's.

**Freed memory goes back to the system.** Each request allocates prompt, grammar and sampler
buffers through the C library; glibc keeps freed arenas, so a member's RSS only grew (0.3 to 3 GB
over ~300 probe requests). ``malloc_trim(0)`` after each request returns them.

Run as ``python -m finetune.pool.member --model m.gguf --port 8080 ...`` (any llama_cpp.server flag).
"""

from __future__ import annotations

import ctypes
import re

# Placeholders are two characters from the Unicode private-use planes 15 and 16, which no chat
# template writes; text from the request that holds such characters is itself marked, so it can
# never pose as a placeholder.
_HIGH, _LOW, _SPAN = 0xF0000, 0x100000, 0xFFFE
_PLACEHOLDER = re.compile("[\U000F0000-\U000FFFFD][\U00100000-\U0010FFFD]")
_PRIVATE = "[\U000F0000-\U000FFFFD\U00100000-\U0010FFFD]"
# Token kinds llama.cpp matches as one special token when it tokenizes with special=True.
_SPECIAL_ATTRS = 1 << 0 | 1 << 3 | 1 << 4  # LLAMA_TOKEN_ATTR_UNKNOWN | CONTROL | USER_DEFINED


class PlainText:
    """The special tokens of one vocabulary, and a prompt tokenizer that reads request text as text.

    Example::

        plain = PlainText(llm._model)                     # a llama_cpp.Llama's model
        spans = []
        messages = plain.mark(messages, spans)             # before the template renders
        tokens = plain.tokenize(llm.tokenize, formatter(messages=messages).prompt, spans, add_bos=True)
    """

    def __init__(self, model):
        texts = {model.token_get_text(i) for i in range(model.n_vocab())
                 if model.token_get_attr(i) & _SPECIAL_ATTRS}
        alternatives = [re.escape(t) for t in sorted(filter(None, texts), key=len, reverse=True)]
        self.special = re.compile("|".join([*alternatives, _PRIVATE]))

    def mark(self, value, spans: list[str]):
        """``value`` (messages or tools: nested dicts, lists and strings) with every string that
        holds special text replaced by a placeholder; the string is appended to ``spans``. Its
        leading and trailing whitespace stay outside the placeholder, where a template's ``trim``
        still sees them."""
        if isinstance(value, str):
            if not self.special.search(value):
                return value
            core = value.strip()
            i = len(spans)
            spans.append(core)
            start = value.index(core)
            return value[:start] + chr(_HIGH + i // _SPAN) + chr(_LOW + i % _SPAN) + value[start + len(core):]
        if isinstance(value, dict):
            return {self.mark(k, spans): self.mark(v, spans) for k, v in value.items()}
        if isinstance(value, list):
            return [self.mark(v, spans) for v in value]
        return value

    @staticmethod
    def tokenize(encode, prompt: str, spans: list[str], add_bos: bool) -> list[int]:
        """The rendered ``prompt``'s tokens: the template's text with special tokens, each
        placeholder's string as plain text. ``encode(data, add_bos, special)`` is llama.cpp's
        tokenizer (``Llama.tokenize``)."""
        tokens, pos = [], 0
        for m in _PLACEHOLDER.finditer(prompt):
            tokens += encode(prompt[pos:m.start()].encode(), add_bos and pos == 0, True)
            i = (ord(m.group()[0]) - _HIGH) * _SPAN + ord(m.group()[1]) - _LOW
            tokens += encode(spans[i].encode(), False, False)
            pos = m.end()
        return tokens + encode(prompt[pos:].encode(), add_bos and pos == 0, True)


class _Prompt(str):
    """A rendered prompt that remembers its placeholders' strings through ``.encode()``."""

    spans: list[str]

    def encode(self, *args, **kwargs):
        out = _Encoded(super().encode(*args, **kwargs))
        out.spans = self.spans
        return out


class _Encoded(bytes):
    spans: list[str]


def install() -> None:
    """Make llama-cpp-python's chat handler render request text marked and tokenize it with
    :class:`PlainText` (one server holds one model: its specials are read when it loads), and trim
    the C heap after every chat completion, streamed or not."""
    import llama_cpp
    from llama_cpp import llama_chat_format

    build, render, tokenize, complete = (llama_cpp.Llama.__init__, llama_chat_format.Jinja2ChatFormatter.__call__,
                                         llama_cpp.Llama.tokenize, llama_cpp.Llama.create_chat_completion)
    vocab: list[PlainText] = []
    libc = ctypes.CDLL("libc.so.6")

    def built(self, *args, **kwargs):
        build(self, *args, **kwargs)
        vocab[:] = [PlainText(self._model)]

    def marked_render(self, *, messages, tools=None, **kwargs):
        spans: list[str] = []
        result = render(self, messages=vocab[0].mark(messages, spans), tools=vocab[0].mark(tools, spans), **kwargs)
        if spans:
            result.prompt = _Prompt(result.prompt)
            result.prompt.spans = spans
        return result

    def plain_tokenize(self, text, add_bos=True, special=False):
        if isinstance(text, _Encoded) and special:
            return PlainText.tokenize(lambda *a: tokenize(self, *a), text.decode(), text.spans, add_bos)
        return tokenize(self, text, add_bos, special)

    def trimmed(self, *args, **kwargs):
        out = complete(self, *args, **kwargs)
        if isinstance(out, dict):
            libc.malloc_trim(0)
            return out

        def stream():
            try:
                yield from out
            finally:
                libc.malloc_trim(0)
        return stream()

    llama_cpp.Llama.__init__ = built
    llama_chat_format.Jinja2ChatFormatter.__call__ = marked_render
    llama_cpp.Llama.tokenize = plain_tokenize
    llama_cpp.Llama.create_chat_completion = trimmed


if __name__ == "__main__":
    install()
    from llama_cpp.server.__main__ import main

    main()
