"""`prepare` end to end: counts that add up, rejects with locations, splitting, dedup, ceiling."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finetune import FinetuneError
from finetune.data.config import Prepare
from finetune.data.prepare import load_prepared, prepare
from finetune.data.traces.render import IGNORE, Renderer
from finetune.data.traces.validate import validate_trace
from tests.conftest import REPO, write_jsonl

SAMPLES = sorted((REPO / "data" / "sample").iterdir())


def _opts(model, sources, out, **kw):
    return Prepare.of(model=str(model), sources=[(str(s), "auto") for s in sources], out=str(out), **kw)


def test_shipped_samples_add_up(models, tmp_path):
    stats = prepare(_opts(models["spm-hermes"], SAMPLES, tmp_path, max_reject_fraction=0.5))
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert stats["records_in"] == stats["records_ok"] + stats["records_rejected"] == 23
    assert len(rejects) == stats["records_rejected"] == sum(stats["reject_reasons"].values())
    for r in rejects:  # every reject says where it came from and why, and keeps the record
        assert r["source"] and r["line"] >= 1 and r["reason"] and r["detail"] and r["record"] is not None
    assert {(r["source"].rsplit("/", 1)[-1], r["line"], r["reason"]) for r in rejects} == {
        ("openai.jsonl", 4, "malformed_json"), ("openai.jsonl", 5, "unknown_tool"), ("openai.jsonl", 6, "duplicate"),
        ("openai.jsonl", 7, "invalid_json"), ("hermes.jsonl", 4, "missing_required_argument"),
        ("xlam.json", 3, "bad_tool_schema"), ("hermes-fc.jsonl", 5, "null_user_content"),
        ("hermes-fc.jsonl", 6, "orphan_tool_result")}
    assert {k.rsplit("/", 1)[-1]: v["format"] for k, v in stats["sources"].items()} == {
        "glaive.jsonl": "glaive", "hermes.jsonl": "sharegpt", "hermes-fc.jsonl": "sharegpt", "openai.jsonl": "openai",
        "swe_agent.jsonl": "swe_agent", "xlam.json": "xlam"}
    ds = load_prepared(tmp_path)
    assert len(ds["train"]) + len(ds["validation"]) == stats["pieces"] == 15
    assert len(ds["validation"]) == stats["samples"]["validation"] >= 1
    trained = sum(sum(x != IGNORE for x in row["labels"]) for split in ds.values() for row in split)
    assert trained == stats["tokens_trained"] > 0
    assert stats["tokens_per_role"]["assistant"]["trained"] == trained
    assert sum(v["tokens"] for v in stats["tokens_per_role"].values()) == stats["tokens_total"]
    assert stats["truncated"] == 0
    # The tokenizer and template that made the masks travel with the data.
    assert (tmp_path / "tokenizer" / "tokenizer.json").exists()


def test_split_is_seeded_and_by_record(models, tmp_path):
    a = prepare(_opts(models["spm-hermes"], SAMPLES, tmp_path / "a", max_reject_fraction=0.5, validation_fraction=0.3))
    prepare(_opts(models["spm-hermes"], SAMPLES, tmp_path / "b", max_reject_fraction=0.5, validation_fraction=0.3))
    ids = lambda p: sorted(load_prepared(p)["validation"]["record_id"])  # noqa: E731
    assert ids(tmp_path / "a") == ids(tmp_path / "b")
    assert a["records_per_split"]["validation"] == round(15 * 0.3)
    assert not set(ids(tmp_path / "a")) & set(load_prepared(tmp_path / "a")["train"]["record_id"])


def test_no_validation_split(models, tmp_path):
    stats = prepare(_opts(models["spm-hermes"], SAMPLES, tmp_path, max_reject_fraction=0.5, validation_fraction=0.0))
    ds = load_prepared(tmp_path)
    assert list(ds) == ["train"] and len(ds["train"]) == stats["pieces"] and stats["samples"]["validation"] == 0


def _long_trace(n_steps: int) -> dict:
    tools = [{"name": "read_file", "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                                                  "required": ["path"]}}]
    msgs = [{"role": "system", "content": "SYSTEM PROMPT"}, {"role": "user", "content": "Fix the bug in the parser."}]
    for i in range(n_steps):
        msgs.append({"role": "assistant", "content": f"Step {i}.", "tool_calls": [
            {"id": f"c{i}", "name": "read_file", "arguments": {"path": f"src/file_{i}.py"}}]})
        msgs.append({"role": "tool", "tool_call_id": f"c{i}", "content": f"RESULT {i} " + "x = 1\n" * 5})
    msgs.append({"role": "assistant", "content": "Done."})
    return validate_trace({"messages": msgs, "tools": tools})


@pytest.mark.parametrize("name", ["spm-hermes", "bpe-llama3"])
def test_long_traces_split_at_turns_keep_system_and_tools(name, tokenizers):
    tok = tokenizers[name]
    renderer = Renderer(tok)
    trace = _long_trace(12)
    [whole] = renderer.render(trace, 100_000)
    pieces = renderer.render(trace, 400)
    assert len(whole.input_ids) > 400 and len(pieces) >= 3
    trained_whole, trained_pieces = [], []
    for sample, out in [(whole, trained_whole)] + [(p, trained_pieces) for p in pieces]:
        out.append(tok.decode([t for t, lab in zip(sample.input_ids, sample.labels, strict=True) if lab != IGNORE]))
    for p in pieces:
        text = tok.decode(p.input_ids)
        assert len(p.input_ids) <= 400
        assert "SYSTEM PROMPT" in text and "read_file" in text and "Fix the bug" in text
        for i in range(12):  # a call and its result are never separated
            assert (f"src/file_{i}.py" in text) == (f"RESULT {i} " in text)
    # Every assistant turn is trained exactly once over all pieces, and nothing else is.
    assert "".join(trained_pieces) == trained_whole[0]


def test_a_turn_too_long_alone_is_rejected_with_the_reason(models, tmp_path):
    trace = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "word " * 400}]}
    src = write_jsonl(tmp_path / "t.jsonl", [trace, {"messages": [{"role": "user", "content": "a"},
                                                                  {"role": "assistant", "content": "b"}]}])
    stats = prepare(_opts(models["spm-hermes"], [src], tmp_path / "out", max_seq_length=64, max_reject_fraction=0.5))
    [rej] = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert rej["reason"] == "too_long" and "max_seq_length 64" in rej["detail"] and rej["line"] == 1
    assert stats["records_ok"] == 1 and stats["truncated"] == 0


def test_reject_ceiling_fails_loudly_but_keeps_the_evidence(models, tmp_path):
    src = write_jsonl(tmp_path / "bad.jsonl", ["{nope", {"messages": []}, {"foo": 1},
                                               {"messages": [{"role": "user", "content": "a"},
                                                             {"role": "assistant", "content": "b"}]}])
    with pytest.raises(FinetuneError, match=r"3 of 4 records rejected \(75% > max_reject_fraction 25%\)"):
        prepare(_opts(models["spm-hermes"], [src], tmp_path / "out"))
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["reject_reasons"] == {"invalid_json": 1, "no_assistant_turn": 1, "wrong_layout": 1}
    assert not (tmp_path / "out" / "dataset").exists()


def test_nothing_trained_is_an_error(models, tmp_path):
    src = write_jsonl(tmp_path / "t.jsonl", [{"messages": [{"role": "user", "content": "a"},
                                                           {"role": "assistant", "content": "b", "train": False}]}])
    with pytest.raises(FinetuneError, match="no token would be trained"):
        prepare(_opts(models["spm-hermes"], [src], tmp_path / "out"))


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_json_value = st.recursive(st.none() | st.booleans() | st.integers() | _text,
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_text, kids, max_size=3),
                           max_leaves=6)
_message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool", "bot", 3])},
                                 optional={"content": _json_value, "tool_call_id": _json_value,
                                           "tool_calls": st.lists(st.fixed_dictionaries(
                                               {}, optional={"id": _json_value, "function": st.fixed_dictionaries(
                                                   {}, optional={"name": _json_value, "arguments": _json_value})}),
                                               max_size=2) | _json_value})
_record = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(_message, max_size=6)}, optional={"tools": _json_value}),
    st.fixed_dictionaries({"conversations": st.lists(st.fixed_dictionaries(
        {"from": st.sampled_from(["human", "gpt", "system", "tool", "x"]), "value": _json_value}), max_size=5)}),
    st.fixed_dictionaries({"system": _json_value, "chat": _text}),
    st.fixed_dictionaries({"query": _json_value, "answers": _json_value, "tools": _json_value}),
    _json_value,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.one_of(_record, _text.map(lambda t: "{" + t)), min_size=1, max_size=8))
def test_malformed_records_never_crash_and_always_add_up(models, tmp_path_factory, records):
    tmp = tmp_path_factory.mktemp("hyp")
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    src = tmp / "fuzz.jsonl"
    src.write_text("".join(line.replace("\n", " ") + "\n" for line in lines))
    try:
        stats = prepare(_opts(models["spm-hermes"], [src], tmp / "out", max_reject_fraction=1.0))
    except FinetuneError as exc:
        assert "no token would be trained" in str(exc) or "no records" in str(exc)
        stats = json.loads((tmp / "out" / "stats.json").read_text())
    rejects = (tmp / "out" / "rejects.jsonl").read_text().splitlines()
    assert stats["records_in"] == stats["records_ok"] + stats["records_rejected"]
    assert len(rejects) == stats["records_rejected"]


def test_workers_write_byte_identical_output(models, tmp_path):
    """`--workers N` renders in N processes; everything written (dataset, stats, rejects, tokenizer)
    is byte for byte the one-process output, across chunk borders, with rejects, duplicates of
    kept and of rejected traces, and traces split into pieces interleaved."""
    from finetune.cli import main
    from finetune.data.traces.workers import CHUNK

    def trace(i, steps):
        msgs = [{"role": "system", "content": f"agent {i % 3}"}, {"role": "user", "content": f"task {i}"}]
        for s in range(steps):
            msgs += [{"role": "assistant", "content": f"step {s} of {i}",
                      "tool_calls": [{"id": f"c{s}", "type": "function",
                                      "function": {"name": "shell", "arguments": json.dumps({"cmd": f"ls {s}"})}}]},
                     {"role": "tool", "tool_call_id": f"c{s}", "content": "out " * (5 + 7 * s)}]
        return {"messages": msgs + [{"role": "assistant", "content": f"done {i}"}],
                "tools": [{"type": "function", "function": {"name": "shell", "description": "Run.", "parameters": {
                    "type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}}]}
    records = []
    for i in range(2 * CHUNK + 37):
        if i % 17 == 5:
            records.append("{broken")
        elif i % 23 == 7:
            records.append(records[i - 3])  # a duplicate, of a kept or of a rejected record
        elif i % 29 == 3:
            records.append({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "w " * 900}]})
        else:
            records.append(trace(i, i % 9))  # up to 8 steps: the longest are split at max_seq_length
    src = write_jsonl(tmp_path / "t.jsonl", records)
    outs = {}
    for workers in (1, 3):
        outs[workers] = out = tmp_path / f"out{workers}"
        assert main(["data", "prepare", "--model", str(models["bpe-llama3"]), "--source", str(src),
                     "--out", str(out), "--max-seq-length", "256", "--workers", str(workers)]) == 0
    stats = json.loads((outs[1] / "stats.json").read_text())
    assert stats["records_split"] > 0 and {"too_long", "invalid_json", "duplicate"} <= set(stats["reject_reasons"])
    files = sorted(p.relative_to(outs[1]) for p in outs[1].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(outs[3]) for p in outs[3].rglob("*") if p.is_file())
    for f in files:
        assert (outs[1] / f).read_bytes() == (outs[3] / f).read_bytes(), f


def test_workers_must_be_positive(models, tmp_path, capsys):
    from finetune.cli import main

    src = write_jsonl(tmp_path / "t.jsonl", [{"messages": [{"role": "user", "content": "a"},
                                                           {"role": "assistant", "content": "b"}]}])
    assert main(["data", "prepare", "--model", str(models["bpe-llama3"]), "--source", str(src),
                 "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert "num_proc" in capsys.readouterr().err
