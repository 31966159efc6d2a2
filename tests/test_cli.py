"""The `finetune` command as users run it: help, exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def run(*args, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "finetune.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_help_lists_every_verb_and_flag():
    top = run("--help")
    assert top.returncode == 0
    for verb in ("validate", "model import", "tiny-model", "data prepare", "data inspect", "plan"):
        assert f"finetune {verb}" in top.stdout
    prep = run("data", "prepare", "--help").stdout
    for flag in ("--model", "--source", "--out", "--max-seq-length", "--chat-template", "--validation-fraction",
                 "--max-reject-fraction", "--seed", "--no-dedup"):
        assert flag in prep
    plan = run("plan", "--help").stdout
    for flag in ("--gpu", "--gpus", "--nodes", "--gpu-memory", "--host-memory", "--accelerate-config", "--json"):
        assert flag in plan


def test_validate_exit_codes(tmp_path):
    ok = run("validate", "recipes/tiny/traces.yaml", "data.max_seq_length=4096")
    assert ok.returncode == 0 and "max_seq_length 4096" in ok.stdout
    bad = run("validate", "recipes/tiny/traces.yaml", "data.max_seq_lenght=1", "train.method=qlora")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "data.max_seq_lenght: unknown key; did you mean `max_seq_length`?" in bad.stderr


def test_prepare_and_inspect_from_the_command_line(models, tmp_path):
    out = tmp_path / "prep"
    res = run("data", "prepare", "--model", models["bpe-llama3"], "--source", "data/sample/openai.jsonl:openai",
              "--source", "data/sample/swe_agent.jsonl", "--out", out, "--max-reject-fraction", "0.6")
    assert res.returncode == 0, res.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["records_in"] == 8 and stats["records_ok"] == 4
    assert "tokenizer: chat template of the model; pad '<|reserved_special_token_0|>' (id 128002)" in res.stdout
    shown = run("data", "inspect", out, "--n", "1", "--plain")
    assert shown.returncode == 0
    assert "⟦" in shown.stdout and "<|eot_id|>⟧" in shown.stdout and "assistant" in shown.stdout


def test_user_mistakes_are_one_line_errors(models, tmp_path):
    missing = run("data", "prepare", "--model", models["spm-hermes"], "--source", tmp_path / "nope.jsonl",
                  "--out", tmp_path / "o")
    assert missing.returncode == 2 and missing.stderr.strip().startswith("error: source")
    assert "nope.jsonl does not exist" in missing.stderr and "Traceback" not in missing.stderr
    ceiling = run("data", "prepare", "--model", models["spm-hermes"], "--source", "data/sample/openai.jsonl",
                  "--out", tmp_path / "o")
    assert ceiling.returncode == 2 and "records rejected" in ceiling.stderr and "rejects.jsonl" in ceiling.stderr
    neither = run("data", "prepare", "--out", tmp_path / "o")
    assert neither.returncode == 2 and "--model, --source and --out are required" in neither.stderr
    layout = run("data", "prepare", "--model", models["spm-hermes"], "--source", "data/sample/hermes.jsonl:hermez",
                 "--out", tmp_path / "o")
    assert layout.returncode == 2 and "unknown layout 'hermez'; layouts: auto, openai, sharegpt, hermes" in layout.stderr
    unknown = run("model", "import", "smollm-nope", "--out", tmp_path / "m")
    assert unknown.returncode == 2 and "not a known model name (known: smollm2-135m-instruct)" in unknown.stderr
    assert "Traceback" not in layout.stderr + unknown.stderr and not (tmp_path / "m").exists()


def test_prepare_a_codebase_from_the_command_line(models, tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "a.py").write_text("def a():\n    return 1\n")
    (repo / "README.md").write_text("# demo\n")
    (repo / "logo.png").write_bytes(b"\x89PNG\0\0")
    out = tmp_path / "prep"
    res = run("data", "prepare", "--model", models["spm-hermes"], "--source", f"{repo}:codebase", "--out", out,
              "--validation-fraction", "0")
    assert res.returncode == 0, res.stderr
    assert f"{repo}: 2 of 3 files kept; skipped {{'unknown_language': 1}}" in res.stdout
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert rejects == [{"source": str(repo), "line": None, "id": "logo.png", "reason": "unknown_language",
                        "detail": "no language for `logo.png`", "record": None}]
    # A folder given without `:codebase` is neither a dataset nor guessed at.
    res = run("data", "prepare", "--model", models["spm-hermes"], "--source", repo, "--out", out)
    assert res.returncode == 2 and f"--source {repo}:codebase" in res.stderr and "Traceback" not in res.stderr
