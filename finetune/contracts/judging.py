"""The judge's prompt contract: what a judge reads, in training and in the pool, laid out once.

- ``judge_prompt(tools, messages)``: the conversation a reward model scores an answer after (the
  tools as one-line signatures in the system turn, assistant calls rendered as
  ``<tool_call>{...}</tool_call>`` text); ``judge data`` builds pairs with it and the gateway
  scores member answers with it, so the judge always sees the layout it was trained on.
- ``as_text``: a conversation as ``role: text`` lines (encoder judges, the verdict's task).
- ``verdict_prompt`` / ``verdict`` / ``parse_verdict``: the generative judge's question over
  lettered candidates and its JSON answer; ``VERDICT_TEMPLATES`` are the pieces a manifest carries.

No torch: the gateway imports this without loading a model.

Example::

    prompt = judge_prompt(tools, messages)                 # reward model: score(prompt, answer)
    ask = verdict_prompt(prompt, [answer_a, answer_b])     # generative judge
    parse_verdict('{"winner": "B"}', 2)                     # 1
"""

from __future__ import annotations

import json
import re


def render_call(call: dict, raw_arguments: str | None = None) -> str:
    args = raw_arguments if raw_arguments is not None else json.dumps(call["arguments"], ensure_ascii=False)
    return f'<tool_call>{{"name": {json.dumps(call["name"])}, "arguments": {args}}}</tool_call>'


def render_turn(message: dict, calls: list[str] | None = None) -> str:
    parts = [message.get("content") or ""] if (message.get("content") or "").strip() else []
    parts += calls if calls is not None else [render_call(c) for c in message.get("tool_calls", [])]
    return "\n".join(parts)


def signature(tool: dict) -> str:
    """``name(req*: type, opt: "a"|"b") - description``: one line per tool for the judge's prompt."""
    params = tool["parameters"]
    required = set(params.get("required", []))
    args = []
    for name, schema in (params.get("properties") or {}).items():
        kind = "|".join(json.dumps(v) for v in schema["enum"]) if schema.get("enum") else \
            "|".join(schema["type"]) if isinstance(schema.get("type"), list) else schema.get("type", "any")
        args.append(f"{name}{'*' if name in required else ''}: {kind}")
    desc = (tool.get("description") or "").strip()
    return f"{tool['name']}({', '.join(args)})" + (f" - {desc}" if desc else "")


def canonical_call(call: dict) -> dict:
    """A tool call as the toolkit holds it ({name, arguments: dict}) from either that or the OpenAI
    wire form ({function: {name, arguments: JSON text}})."""
    f = call.get("function", call)
    args = f.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return {"name": f.get("name"), "arguments": args}
    return {"name": f.get("name"), "arguments": args}


def judge_prompt(tools: list[dict], messages: list[dict]) -> list[dict]:
    """What a judge reads before an answer: one system message (the conversation's own system text,
    then the tools as signatures), then the conversation with assistant turns rendered as text,
    calls included. Tools and calls may be in the toolkit's form or the OpenAI wire form; training
    pairs and the pool's gateway both go through here, so the judge sees one layout."""
    tools = [t.get("function", t) for t in tools or []]
    first = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    out = []
    if tools or first:
        text = first
        if tools:
            text = (first + "\n\n" if first else "") + \
                "Tools (* = required; call one as <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call>):\n" + \
                "\n".join(signature(t) for t in tools)
        out.append({"role": "system", "content": text})
    for m in messages:
        if m["role"] == "system":
            continue
        if m["role"] == "assistant":
            calls = [canonical_call(c) for c in m.get("tool_calls") or []]
            out.append({"role": "assistant", "content": render_turn(
                m, [render_call(c) if isinstance(c["arguments"], dict) else render_call(c, c["arguments"])
                    for c in calls])})
        else:
            out.append({"role": m["role"], "content": m.get("content") or ""})
    return out


def as_text(messages: list[dict]) -> str:
    """A conversation as ``role: text`` lines."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


LETTERS = "ABCDEFGH"
SYSTEM = ("You judge answers to coding and tool-use tasks. Read the task and the candidates, then reply with "
          'JSON only: {"winner": "<letter>", "scores": {"<letter>": 0-10, ...}, "rationale": "<one sentence>"}.')
_JSON = re.compile(r"\{.*\}", re.DOTALL)

# The verdict prompt's pieces; a pool manifest carries them (judge.templates) so the gateway asks
# in the layout the judge was trained on. MERGE is what `fusion.mode: merge` asks instead.
VERDICT_TEMPLATES = {"system": SYSTEM, "task": "Task:\n{task}", "candidate": "Candidate {letter}:\n{answer}",
                     "merge": "Write one answer to the task that keeps what is right in the candidates and drops "
                              "what is wrong. Reply with the answer only."}


def verdict_prompt(prompt: list[dict], answers: list[list[dict]], templates: dict = VERDICT_TEMPLATES,
                   instruction: str = "system") -> list[dict]:
    parts = [templates["task"].format(task=as_text(prompt))]
    parts += [templates["candidate"].format(letter=LETTERS[i], answer=a[-1]["content"]) for i, a in enumerate(answers)]
    return [{"role": "system", "content": templates[instruction]}, {"role": "user", "content": "\n\n".join(parts)}]


def verdict(winner: int, n: int, reason: str) -> str:
    scores = {LETTERS[i]: 9 if i == winner else 2 for i in range(n)}
    losers = ", ".join(LETTERS[i] for i in range(n) if i != winner)
    return json.dumps({"winner": LETTERS[winner], "scores": scores,
                       "rationale": f"{losers} is wrong ({reason.split(':')[-1]}); {LETTERS[winner]} is right."})


def parse_verdict(text: str, n: int) -> int | None:
    """Index of the winning candidate, or None when the text holds no usable verdict."""
    m = _JSON.search(text)
    try:
        winner = json.loads(m.group(0))["winner"] if m else None
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
    return LETTERS.index(winner) if isinstance(winner, str) and winner in LETTERS[:n] else None
