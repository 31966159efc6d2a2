"""Token-level loss masks with the real SentencePiece and byte-level BPE tokenizers.

The expected trained text of each template is written out by hand here (not derived from the
template), so a template or mask bug shows as a difference.
"""

from __future__ import annotations

import json

import pytest

from finetune import RecordError
from finetune.data.traces.render import IGNORE, Renderer
from finetune.data.traces.validate import validate_trace

TOOLS = [{"name": "run_tests", "description": "Run tests.",
          "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "k": {"type": "integer"}},
                         "required": ["path"]}},
         {"name": "read_file", "description": "Read a file.",
          "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}]

CALL_A = {"path": "tests/test_x.py", "k": 3}
CALL_B = {"path": "src/x.py"}
CALL_C = {"path": "naïve/straße/日本.py"}  # DeepSeek-Coder cannot round-trip "ü" (a real quirk of its vocabulary)

TRACE = validate_trace({"tools": TOOLS, "messages": [
    {"role": "system", "content": "You are a coding agent."},
    {"role": "user", "content": "Why do the tests fail?"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "a", "name": "run_tests", "arguments": CALL_A}]},
    {"role": "tool", "tool_call_id": "a", "content": "1 failed: ZeroDivisionError"},
    {"role": "assistant", "content": "Reading the code.",
     "tool_calls": [{"id": "b", "name": "read_file", "arguments": CALL_B},
                    {"id": "c", "name": "read_file", "arguments": CALL_C}]},
    {"role": "tool", "tool_call_id": "b", "content": "def mean(xs): return sum(xs)/len(xs)"},
    {"role": "tool", "tool_call_id": "c", "content": "# empty"},
    {"role": "assistant", "content": "`mean` divides by zero on an empty list."},
    {"role": "user", "content": "Thanks. Say bye."},
    {"role": "assistant", "content": "NOT TRAINED bye", "train": False},
    {"role": "user", "content": "Once more?"},
    {"role": "assistant", "content": "Bye!"},
]})


def _j(name, args, key):
    return json.dumps({"name": name, key: args}, ensure_ascii=False)


EXPECTED = {
    "llama3": [
        _j("run_tests", CALL_A, "parameters") + "<|eot_id|>",
        "Reading the code.\n" + _j("read_file", CALL_B, "parameters") + "\n" + _j("read_file", CALL_C, "parameters")
        + "<|eot_id|>",
        "`mean` divides by zero on an empty list.<|eot_id|>",
        "Bye!<|eot_id|>",
    ],
    "llama4": [
        "<|python_start|>" + _j("run_tests", CALL_A, "parameters") + "<|python_end|><|eot|>",
        "Reading the code.<|python_start|>" + _j("read_file", CALL_B, "parameters") + "\n"
        + _j("read_file", CALL_C, "parameters") + "<|python_end|><|eot|>",
        "`mean` divides by zero on an empty list.<|eot|>",
        "Bye!<|eot|>",
    ],
    "hermes": [
        "<tool_call>\n" + _j("run_tests", CALL_A, "arguments") + "\n</tool_call><|im_end|>",
        "Reading the code.\n<tool_call>\n" + _j("read_file", CALL_B, "arguments") + "\n</tool_call>\n<tool_call>\n"
        + _j("read_file", CALL_C, "arguments") + "\n</tool_call><|im_end|>",
        "`mean` divides by zero on an empty list.<|im_end|>",
        "Bye!<|im_end|>",
    ],
}


def trained_runs(sample) -> list[list[int]]:
    runs, current = [], []
    for tid, lab in zip(sample.input_ids, sample.labels, strict=True):
        if lab != IGNORE:
            assert lab == tid, "a trained label is the token itself"
            current.append(tid)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


@pytest.mark.parametrize("name", ["spm-hermes", "bpe-llama3", "bpe-llama4", "deepseek-hermes"])
def test_trained_tokens_are_exactly_the_assistant_turns(name, tokenizers):
    tok = tokenizers[name]
    template = name.split("-")[1]
    [sample] = Renderer(tok).render(TRACE, max_seq_length=4096)
    runs = trained_runs(sample)
    # Decoding each run alone must give the assistant text; encoding the expected text must give
    # the very same ids (no token straddles a turn border, nothing else is trained).
    assert [tok.decode(r) for r in runs] == EXPECTED[template]
    full = tok.decode(sample.input_ids)
    assert "NOT TRAINED bye" in full and all("NOT TRAINED" not in tok.decode(r) for r in runs)
    for text in ("You are a coding agent.", "Why do the tests fail?", "1 failed: ZeroDivisionError", "run_tests"):
        assert text in full
    # One BOS, at the start.
    assert sample.input_ids[0] == tok.bos_token_id
    assert sample.input_ids.count(tok.bos_token_id) == 1
    # The end-of-turn token closes every trained run and is itself trained.
    eot = tok.convert_tokens_to_ids(tok.eos_token)
    assert all(r[-1] == eot for r in runs)
    assert sample.role_tokens["assistant"][1] == sum(map(len, runs))
    assert all(sample.role_tokens[r][1] == 0 for r in ("system", "user", "tool"))


def test_generation_prompt_is_never_trained(tokenizers):
    tok = tokenizers["bpe-llama3"]
    [sample] = Renderer(tok).render(TRACE, max_seq_length=4096)
    header = tok.convert_tokens_to_ids("<|start_header_id|>")
    for tid, lab in zip(sample.input_ids, sample.labels, strict=True):
        if tid == header:
            assert lab == IGNORE


def test_template_override_adds_the_tokens_it_needs(models):
    from finetune.data.prepare import load_model_tokenizer

    tok, record = load_model_tokenizer(str(models["spm-hermes"]), "llama3")
    assert record["added_tokens"] == ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    [sample] = Renderer(tok).render(TRACE, max_seq_length=4096)
    assert [tok.decode(r) for r in trained_runs(sample)] == EXPECTED["llama3"]
    tok, record = load_model_tokenizer(str(models["bpe-llama4"]), "llama3")  # its vocabulary has both
    assert record["added_tokens"] == []
    [sample] = Renderer(tok).render(TRACE, max_seq_length=4096)
    assert [tok.decode(r) for r in trained_runs(sample)] == EXPECTED["llama3"]


def test_reasoning_before_a_hermes_call_is_trained_with_the_call(tokenizers):
    from finetune.data.traces.formats import to_canonical

    rec = {"conversations": [
        {"from": "system", "value": "<tools> " + json.dumps(TOOLS) + " </tools>"},
        {"from": "human", "value": "Run the tests in tests/test_x.py."},
        {"from": "gpt", "value": "The user names one file, so one run is enough.\n<tool_call>\n"
                                 + json.dumps({"name": "run_tests", "arguments": {"path": "tests/test_x.py"}})
                                 + "\n</tool_call>"},
        {"from": "tool", "value": "<tool_response>\n3 passed\n</tool_response>"},
        {"from": "gpt", "value": "All 3 tests pass."}]}
    tok = tokenizers["spm-hermes"]
    [sample] = Renderer(tok).render(validate_trace(to_canonical(rec, "hermes")), max_seq_length=4096)
    first, second = [tok.decode(r) for r in trained_runs(sample)]
    assert first == ("The user names one file, so one run is enough.\n<tool_call>\n"
                     + _j("run_tests", {"path": "tests/test_x.py"}, "arguments") + "\n</tool_call><|im_end|>")
    assert second == "All 3 tests pass.<|im_end|>"


def test_template_without_tools_rejects_tool_traces(tokenizers):
    tok = tokenizers["spm-hermes"]
    plain = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    original = tok.chat_template
    tok.chat_template = plain
    try:
        renderer = Renderer(tok)
        with pytest.raises(RecordError) as err:
            renderer.render(TRACE, 4096)
        assert err.value.reason == "template_drops_tools"
        chat = validate_trace({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
        [sample] = renderer.render(chat, 4096)
        assert [tok.decode(r) for r in trained_runs(sample)] == ["yo<|im_end|>"]
    finally:
        tok.chat_template = original


def test_non_prefix_stable_template_is_refused(tokenizers):
    from finetune import FinetuneError

    tok = tokenizers["spm-hermes"]
    # Renders only the last two messages: earlier text changes as the conversation grows.
    bad = "{% for m in messages[-2:] %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    original = tok.chat_template
    tok.chat_template = bad
    try:
        with pytest.raises(FinetuneError, match="cannot be used for loss masks"):
            Renderer(tok)
    finally:
        tok.chat_template = original


@pytest.mark.parametrize("name", ["spm-hermes", "bpe-llama3", "bpe-llama4", "deepseek-hermes"])
def test_direct_rendering_is_what_apply_chat_template_gives(name, tokenizers):
    """The renderer runs the compiled template and the Rust tokenizer itself (for speed); the text,
    ids and offsets must be exactly transformers' own, for every prefix it renders."""
    from finetune.data.traces.render import to_hf

    tok = tokenizers[name]
    renderer = Renderer(tok)
    msgs = TRACE["messages"]
    for tools in (TOOLS, []):
        schemas = [{"type": "function", "function": t} for t in tools] or None
        for i in range(1, len(msgs) + 1):
            for gen in (False, True):
                text = renderer._render(msgs[:i], tools, gen)
                assert text == tok.apply_chat_template(to_hf(msgs[:i]), tools=schemas, tokenize=False,
                                                       add_generation_prompt=gen)
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = renderer.tokenize(text)
        assert ids[-len(enc["input_ids"]):] == list(enc["input_ids"])
        assert [tuple(o) for o in offsets[-len(enc["input_ids"]):]] == [tuple(o) for o in enc["offset_mapping"]]


def test_named_templates_use_the_tool_use_one_for_tools(tokenizers):
    """A tokenizer with several named templates renders a trace with tools with its ``tool_use``
    template and one without tools with ``default``, as apply_chat_template does."""
    tok = tokenizers["spm-hermes"]
    original = tok.chat_template
    plain = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
    tok.chat_template = {"default": plain, "tool_use": original}
    try:
        renderer = Renderer(tok)
        chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
        assert renderer._render(chat, [], False) == "[user] hi\n[assistant] yo\n"
        with_tools = renderer._render(TRACE["messages"], TOOLS, False)
        assert "<tool_call>" in with_tools and "[user]" not in with_tools
    finally:
        tok.chat_template = original


@pytest.mark.parametrize("name", ["spm-hermes", "bpe-llama3", "bpe-llama4", "deepseek-hermes"])
def test_message_ends_from_the_generation_header_are_the_rendered_ones(name, tokenizers):
    """`spans` takes the end of a message before an assistant turn from that turn's prompt less
    the generation header instead of rendering it; ends and spans must be those of rendering all."""
    renderer = Renderer(tokenizers[name])
    assert renderer._header
    for msgs, tools in ((TRACE["messages"], TOOLS), (TRACE["messages"][1:], [])):
        full = renderer._render(msgs, tools, False)
        fast = renderer.spans(msgs, tools, full)
        header, renderer._header = renderer._header, None
        try:
            assert fast == renderer.spans(msgs, tools, full)
        finally:
            renderer._header = header
