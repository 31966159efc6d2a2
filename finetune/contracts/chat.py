"""Chat formats: everything the toolkit knows about one tool-calling chat format, in one record.

A record holds the Jinja template (training, export, llama.cpp), its special tokens and end-of-turn
token, the parser that reads calls back out of generated text (gateway, eval), the tool-call parser
names vLLM and SGLang use for it, and Ollama's Go-template twin. Adding a format is adding one
record here. No torch.

Three formats, each a Jinja template in the Hugging Face ``chat_template`` dialect (so
``tokenizer.apply_chat_template`` renders it and every serving backend can use it):

- ``llama3``: Llama 3.x headers (``<|start_header_id|>``, ``<|eot_id|>``), tool schemas in the
  system turn, each call a ``{"name": ..., "parameters": ...}`` line, results in ``ipython`` turns.
- ``llama4``: Llama 4 headers (``<|header_start|>``, ``<|eot|>``), calls inside
  ``<|python_start|> ... <|python_end|>``, results in ``ipython`` turns.
- ``hermes``: ChatML (``<|im_start|>``, ``<|im_end|>``) with ``<tools>``, ``<tool_call>`` and
  ``<tool_response>`` tags, as in Hermes / Qwen function calling.

All three are *prefix-stable* (rendering the first k messages gives a prefix of rendering k+1),
which is what the loss masks in ``data/traces/render.py`` rely on, and all start with ``bos_token`` so the
tokenizer never has to add one (no doubled BOS).

Example::

    tok.chat_template = TEMPLATES["hermes"].jinja
    content, calls = TEMPLATES["hermes"].parse(assistant_text)
    recognise(some_models_jinja_template)   # "hermes", "llama3", "llama4" or None
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

_TOOL_ARGS = "{%- set f = c.function if c.function is defined else c %}"

_SYSTEM_SPLIT = """
{%- if messages and messages[0].role == 'system' %}
{%- set system = messages[0].content %}{%- set rest = messages[1:] %}
{%- else %}{%- set system = '' %}{%- set rest = messages %}{%- endif %}"""

_LLAMA = """{{- bos_token }}""" + _SYSTEM_SPLIT + """
{%- if system or tools %}
{{- '<|H_START|>system<|H_END|>\\n\\n' + system }}
{%- if tools %}
{%- if system %}{{- '\\n\\n' }}{%- endif %}
{{- 'You can call the functions below. To call one, answer with a JSON object '
    + '{\"name\": function name, \"parameters\": arguments}, one call per line.\\n\\n' }}
{%- for t in tools %}{{- (t.function if t.function is defined else t) | tojson }}{{- '\\n' }}{%- endfor %}
{%- endif %}
{{- '<|EOT|>' }}
{%- endif %}
{%- for m in rest %}
{%- if m.role == 'tool' %}
{{- '<|H_START|>ipython<|H_END|>\\n\\n' + m.content + '<|EOT|>' }}
{%- else %}
{{- '<|H_START|>' + m.role + '<|H_END|>\\n\\n' + m.content }}
{%- if m.tool_calls %}
{{- CALLS_OPEN }}
{%- for c in m.tool_calls %}""" + _TOOL_ARGS + """
{%- if (m.content and not CALLS_OPEN) or not loop.first %}{{- '\\n' }}{%- endif %}
{{- '{\"name\": ' + f.name | tojson + ', \"parameters\": ' + (f.arguments if f.arguments is string else f.arguments | tojson) + '}' }}
{%- endfor %}
{{- CALLS_CLOSE }}
{%- endif %}
{{- '<|EOT|>' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|H_START|>assistant<|H_END|>\\n\\n' }}{%- endif %}"""


def _llama(h_start: str, h_end: str, eot: str, calls_open: str, calls_close: str) -> str:
    return (_LLAMA.replace("<|H_START|>", h_start).replace("<|H_END|>", h_end).replace("<|EOT|>", eot)
            .replace("CALLS_OPEN", repr(calls_open)).replace("CALLS_CLOSE", repr(calls_close)))


_HERMES = """{{- bos_token }}""" + _SYSTEM_SPLIT + """
{%- if system or tools %}
{{- '<|im_start|>system\\n' + system }}
{%- if tools %}
{%- if system %}{{- '\\n\\n' }}{%- endif %}
{{- 'You may call one or more functions. Their signatures are inside <tools></tools>:\\n<tools>\\n' }}
{%- for t in tools %}{{- (t.function if t.function is defined else t) | tojson }}{{- '\\n' }}{%- endfor %}
{{- '</tools>\\n\\nFor each call, answer with a JSON object inside <tool_call></tool_call> tags:\\n'
    + '<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call>' }}
{%- endif %}
{{- '<|im_end|>\\n' }}
{%- endif %}
{%- for m in rest %}
{%- if m.role == 'tool' %}
{{- '<|im_start|>tool\\n<tool_response>\\n' + m.content + '\\n</tool_response><|im_end|>\\n' }}
{%- else %}
{{- '<|im_start|>' + m.role + '\\n' + m.content }}
{%- if m.tool_calls %}
{%- for c in m.tool_calls %}""" + _TOOL_ARGS + """
{%- if m.content or not loop.first %}{{- '\\n' }}{%- endif %}
{{- '<tool_call>\\n{\"name\": ' + f.name | tojson + ', \"arguments\": ' + (f.arguments if f.arguments is string else f.arguments | tojson) + '}\\n</tool_call>' }}
{%- endfor %}
{%- endif %}
{{- '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"""

# The Go-template twins of the Jinja templates above (Ollama cannot run Jinja). BOS comes from the
# GGUF's add_bos_token, as Ollama adds it itself.
_GO_HERMES = """{{- $system := "" }}{{- range .Messages }}{{- if eq .Role "system" }}{{ $system = .Content }}{{ end }}{{- end }}
{{- if or $system .Tools }}<|im_start|>system
{{ $system }}
{{- if .Tools }}{{ if $system }}

{{ end }}You may call one or more functions. Their signatures are inside <tools></tools>:
<tools>
{{ range .Tools }}{{ json .Function }}
{{ end }}</tools>

For each call, answer with a JSON object inside <tool_call></tool_call> tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>{{ end }}<|im_end|>
{{ end }}
{{- range .Messages }}
{{- if eq .Role "tool" }}<|im_start|>tool
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ else if ne .Role "system" }}<|im_start|>{{ .Role }}
{{ .Content }}
{{- $content := .Content }}{{ range $i, $c := .ToolCalls }}{{ if or $content $i }}
{{ end }}<tool_call>
{"name": {{ json $c.Function.Name }}, "arguments": {{ json $c.Function.Arguments }}}
</tool_call>{{ end }}<|im_end|>
{{ end }}
{{- end }}<|im_start|>assistant
"""

_GO_LLAMA3 = """{{- $system := "" }}{{- range .Messages }}{{- if eq .Role "system" }}{{ $system = .Content }}{{ end }}{{- end }}
{{- if or $system .Tools }}<|start_header_id|>system<|end_header_id|>

{{ $system }}
{{- if .Tools }}{{ if $system }}

{{ end }}You can call the functions below. To call one, answer with a JSON object {"name": function name, "parameters": arguments}, one call per line.

{{ range .Tools }}{{ json .Function }}
{{ end }}{{ end }}<|eot_id|>
{{- end }}
{{- range .Messages }}
{{- if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- else if ne .Role "system" }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}
{{- $content := .Content }}{{ range $i, $c := .ToolCalls }}{{ if or $content $i }}
{{ end }}{"name": {{ json $c.Function.Name }}, "parameters": {{ json $c.Function.Arguments }}}{{ end }}<|eot_id|>
{{- end }}
{{- end }}<|start_header_id|>assistant<|end_header_id|>

"""

_GO_LLAMA4 = """{{- $system := "" }}{{- range .Messages }}{{- if eq .Role "system" }}{{ $system = .Content }}{{ end }}{{- end }}
{{- if or $system .Tools }}<|header_start|>system<|header_end|>

{{ $system }}
{{- if .Tools }}{{ if $system }}

{{ end }}You can call the functions below. To call one, answer with a JSON object {"name": function name, "parameters": arguments}, one call per line.

{{ range .Tools }}{{ json .Function }}
{{ end }}{{ end }}<|eot|>
{{- end }}
{{- range .Messages }}
{{- if eq .Role "tool" }}<|header_start|>ipython<|header_end|>

{{ .Content }}<|eot|>
{{- else if ne .Role "system" }}<|header_start|>{{ .Role }}<|header_end|>

{{ .Content }}
{{- if .ToolCalls }}<|python_start|>{{ range $i, $c := .ToolCalls }}{{ if $i }}
{{ end }}{"name": {{ json $c.Function.Name }}, "parameters": {{ json $c.Function.Arguments }}}{{ end }}<|python_end|>{{ end }}<|eot|>
{{- end }}
{{- end }}<|header_start|>assistant<|header_end|>

"""


Call = dict  # {"name": str, "arguments": dict}


def _json_lines(text: str, args_key: str) -> tuple[str, list[Call]]:
    """Split text into plain lines and lines that are ``{"name": .., args_key: {..}}`` calls."""
    content, calls = [], []
    for line in text.split("\n"):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and set(obj) == {"name", args_key} and isinstance(obj[args_key], dict):
            calls.append({"name": obj["name"], "arguments": obj[args_key]})
        else:
            content.append(line)
    return "\n".join(content).strip(), calls


def _parse_llama3(text: str) -> tuple[str, list[Call]]:
    return _json_lines(text, "parameters")


def _parse_llama4(text: str) -> tuple[str, list[Call]]:
    m = re.search(r"<\|python_start\|>(.*?)(?:<\|python_end\|>|$)", text, re.S)
    if not m:
        return text.strip(), []
    rest, calls = _json_lines(m.group(1), "parameters")
    return (text[: m.start()] + rest).strip(), calls


def _parse_hermes(text: str) -> tuple[str, list[Call]]:
    calls = []
    for block in re.findall(r"<tool_call>(.*?)</tool_call>", text, re.S):
        obj = json.loads(block)
        calls.append({"name": obj["name"], "arguments": obj["arguments"]})
    return re.sub(r"<tool_call>.*?</tool_call>", "", text, flags=re.S).strip(), calls


@dataclass(frozen=True)
class Template:
    name: str
    jinja: str
    special_tokens: tuple[str, ...]  # must each be one token of the tokenizer
    end_of_turn: str  # closes every turn; trained on assistant turns so the model learns to stop
    parse: Callable[[str], tuple[str, list[Call]]]  # assistant text -> (content, tool calls)
    vllm_parser: str  # vLLM's --tool-call-parser for these calls
    sglang_parser: str  # SGLang's --tool-call-parser
    ollama: str  # the Go TEMPLATE twin of ``jinja`` (Ollama cannot run Jinja)
    marker: str  # regex that only this format's tool-call syntax matches, to recognise foreign templates


TEMPLATES: dict[str, Template] = {
    "llama3": Template(
        "llama3", _llama("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "", ""),
        ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), "<|eot_id|>", _parse_llama3,
        "llama3_json", "llama3", _GO_LLAMA3, r"(?s)(?=.*<\|start_header_id\|>).*(ipython|tool)"),
    "llama4": Template(
        "llama4", _llama("<|header_start|>", "<|header_end|>", "<|eot|>", "<|python_start|>", "<|python_end|>"),
        ("<|header_start|>", "<|header_end|>", "<|eot|>", "<|python_start|>", "<|python_end|>"),
        "<|eot|>", _parse_llama4, "llama4_json", "llama4", _GO_LLAMA4, r"<\|python_start\|>"),
    "hermes": Template("hermes", _HERMES, ("<|im_start|>", "<|im_end|>"), "<|im_end|>", _parse_hermes,
                       "hermes", "qwen25", _GO_HERMES, r"<tool_call>"),
}
TEMPLATE_NAMES = tuple(TEMPLATES)
TemplateName = Literal[TEMPLATE_NAMES]
ToolCallFormat = Literal[(*sorted(TEMPLATE_NAMES), "none")]  # "none": the model does not call tools


def recognise(template: str | None) -> str | None:
    """The toolkit format a chat template is: exactly one of ours, or one whose tool-call syntax
    is ours (a model's own template written elsewhere)."""
    if not template:
        return None
    for name, t in TEMPLATES.items():
        if template.strip() == t.jinja.strip():
            return name
    for name, t in TEMPLATES.items():
        if re.search(t.marker, template):
            return name
    return None
