"""Tool calls rendered by each named template parse back to the same calls."""

from __future__ import annotations

import pytest

from finetune.contracts.chat import TEMPLATES
from finetune.data.traces.render import Renderer
from finetune.data.traces.validate import validate_trace

CALLS = [
    {"name": "read_file", "arguments": {"path": "src/a.py", "lines": [1, 20], "opts": {"raw": True, "enc": None}}},
    {"name": "ns.search", "arguments": {"q": "quote \" and \\ and\nnewline, ünïcode"}},
]


@pytest.mark.parametrize("template,model", [("llama3", "bpe-llama3"), ("llama4", "bpe-llama4"), ("hermes", "spm-hermes")])
@pytest.mark.parametrize("content", ["", "I will read two files."])
def test_rendered_calls_parse_back(template, model, content, tokenizers):
    tok = tokenizers[model]
    assert tok.chat_template == TEMPLATES[template].jinja
    trace = validate_trace({"messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": content, "tool_calls": [dict(c, id=f"c{i}") for i, c in enumerate(CALLS)]},
    ]})
    renderer = Renderer(tok)
    full = renderer._render(trace["messages"], [], False)
    _, [(start, end)] = renderer.spans(trace["messages"], [], full)
    region = full[start:end].removesuffix(TEMPLATES[template].end_of_turn)
    parsed_content, parsed_calls = TEMPLATES[template].parse(region)
    assert parsed_calls == CALLS
    assert parsed_content == content


def test_plain_answers_have_no_calls():
    for spec in TEMPLATES.values():
        assert spec.parse("Just text.\nOn two lines.") == ("Just text.\nOn two lines.", [])


@pytest.mark.parametrize("template,model", [("llama3", "bpe-llama3"), ("llama4", "bpe-llama4"), ("hermes", "spm-hermes")])
def test_wire_form_arguments_render_like_parsed_ones(template, model, tokenizers):
    """OpenAI clients send arguments as a JSON string (what a server's chat template receives in an
    agent loop); rendered verbatim, not quoted a second time, they give the text the model was trained on."""
    import json

    tok = tokenizers[model]

    def rendered(arguments):
        calls = [{"id": "c0", "type": "function", "function": {"name": "read_file", "arguments": arguments}}]
        return tok.apply_chat_template([{"role": "user", "content": "go"},
                                        {"role": "assistant", "content": "", "tool_calls": calls}], tokenize=False)
    args = CALLS[0]["arguments"]
    assert rendered(json.dumps(args, ensure_ascii=False)) == rendered(args)
