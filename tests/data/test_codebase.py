"""Codebase sources: walk rules, secret redaction, dedup, decontamination, shapes, mixtures, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune import FinetuneError
from finetune.data.code.samples import _Doc, _imports, python_order
from finetune.data.code.secrets import Redactor
from finetune.data.code.walk import Skip, walk_repository
from finetune.data.config import Codebase, Prepare, Source
from finetune.data.prepare import load_prepared, prepare
from finetune.data.traces.render import IGNORE
from tests.conftest import REPO
from tests.data.codebase_fixture import EMAIL, PUBLIC_IP, SECRETS, build_repo, write_eval_set

OPTS = {"max_file_bytes": 100_000}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    expected = build_repo(root)
    evals = write_eval_set(tmp_path_factory.mktemp("eval") / "humaneval.jsonl")
    return root, expected, evals


def _prepare(model, out, *sources, **kw):
    return prepare(Prepare.of(model=str(model), sources=list(sources), out=str(out), **kw))


def _code(root, **opts):
    return Source(path=str(root), format="codebase", codebase={**OPTS, **opts})


def test_walk_skips_every_file_by_reason(repo):
    root, expected, _ = repo
    seen = {}
    for item in walk_repository(root, Codebase(**OPTS)):
        seen[item.path] = item.reason if isinstance(item, Skip) else ""
    walk_only = {k: v for k, v in expected.items() if v not in ("exact_duplicate", "near_duplicate", "contaminated")}
    walk_only.update({k: "" for k, v in expected.items() if v in ("exact_duplicate", "near_duplicate", "contaminated")})
    assert seen == walk_only  # pruned folders (ignored_dir, node_modules, build) are never entered


def test_prepare_accounts_for_every_file_and_drops_duplicates_and_eval_copies(repo, models, tmp_path):
    root, expected, evals = repo
    stats = _prepare(models["deepseek-hermes"], tmp_path, _code(root, decontaminate=[str(evals)]),
                     validation_fraction=0.0)
    code = stats["sources"][str(root)]["codebase"]
    skipped = {}
    for v in expected.values():
        if v:
            skipped[v] = skipped.get(v, 0) + 1
    assert code["skipped"] == dict(sorted(skipped.items()))
    assert code["files_in"] == code["files_ok"] + sum(code["skipped"].values()) == len(expected)
    assert code["pruned_dirs"] == {"gitignored": 1, "vendored": 1, "generated": 1}
    rejects = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert {r["id"]: r["reason"] for r in rejects} == {k: v for k, v in expected.items() if v}
    by_id = {r["id"]: r["detail"] for r in rejects}
    assert "z_copy_exact.py" in by_id and "original.py" in by_id["z_copy_exact.py"]
    assert "original.py" in by_id["z_copy_near.py"] and "HumanEval/1" in by_id["solutions/paren.py"]
    ds = load_prepared(tmp_path)["train"]
    kept = {rid.split("/", 1)[1] for rid in ds["record_id"]}
    assert kept == {k for k, v in expected.items() if v == ""} - {".gitignore"}
    assert {"original.py", "distinct.py"} <= kept  # distinct files survive dedup


def test_no_planted_secret_survives_into_the_decoded_dataset(repo, models, tokenizers, tmp_path):
    root, _, _ = repo
    stats = _prepare(models["deepseek-hermes"], tmp_path, _code(root, redact_pii=True), validation_fraction=0.0)
    tok = tokenizers["deepseek-hermes"]
    text = "\n".join(tok.decode(ids) for ids in load_prepared(tmp_path)["train"]["input_ids"])
    for name, value in SECRETS.items():
        assert value not in text, name
        assert value[-12:] not in text, f"the tail of {name}"
    assert EMAIL not in text and PUBLIC_IP not in text
    assert "this line stays" in text and "postgres://admin:" in text and "@db.internal:5432" in text
    redacted = stats["sources"][str(root)]["codebase"]["redacted"]
    assert redacted == {"api_key": 2, "aws_access_key": 2, "email_address": 1, "github_token": 2,
                        "gitlab_token": 1, "google_api_key": 1, "high_entropy_secret": 1, "hugging_face_token": 1,
                        "ip_address": 1, "json_web_token": 1, "password": 3, "private_key": 1,
                        "slack_token": 2, "stripe_key": 1}
    assert text.count("<REDACTED:") == sum(redacted.values())


def test_redactor_leaves_ordinary_code_alone():
    code = (REPO / "finetune" / "data" / "prepare.py").read_text()
    out, counts = Redactor().redact(code, "prepare.py")
    assert out == code and not counts
    config = 'api_key: none\ntoken: os.environ/REMOTE_KEY\nsecret_type = "Private Key Block"\n'
    assert Redactor().redact(config, "x.yaml") == (config, {})


def test_same_inputs_and_seed_give_byte_identical_datasets(repo, models, tmp_path):
    root, _, _ = repo
    src = _code(root, shape="repo", fim={"rate": 0.5})
    for name in ("a", "b"):
        _prepare(models["deepseek-hermes"], tmp_path / name, src, Source(path=str(REPO / "data/sample/openai.jsonl")),
                 max_seq_length=512, validation_fraction=0.2, max_reject_fraction=0.9)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert Path("dataset/train/data-00000-of-00001.arrow") in files
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_long_files_are_split_at_lines_never_cut(models, tokenizers, tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    body = "".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(400))
    (root / "long.py").write_text(body)
    stats = _prepare(models["spm-hermes"], tmp_path / "out", _code(root), max_seq_length=128, validation_fraction=0.0)
    rows = load_prepared(tmp_path / "out")["train"]
    assert stats["sources"][str(root)]["codebase"]["files_split"] == 1 and len(rows) > 20
    tok = tokenizers["spm-hermes"]
    parts = []
    for ids, labels in zip(rows["input_ids"], rows["labels"], strict=True):
        assert len(ids) <= 128 and labels[0] == IGNORE and labels[1:] == ids[1:]
        text = tok.decode(ids[1:-1])
        assert text.startswith("# long.py\n")  # every piece carries the path
        parts.append(text.removeprefix("# long.py\n"))
    assert "".join(parts) == body  # nothing lost, nothing repeated


def test_repo_order_puts_imports_first_and_tolerates_cycles():
    files = {"pkg/__init__.py": "from pkg.core import run\n", "pkg/core.py": "from .util import helper\nimport pkg.models\n",
             "pkg/util.py": "from pkg import models\n", "pkg/models.py": "from pkg.util import helper\nimport os\n",
             "README.md": "", "app.py": "from pkg import run\n"}
    docs = [_Doc(p, "python" if p.endswith(".py") else "markdown", 0, _imports(p, t)) for p, t in sorted(files.items())]
    assert _imports("pkg/core.py", files["pkg/core.py"]) == ["pkg.util", "pkg.util.helper", "pkg.models"]
    order = [d.path for d in python_order(docs)]
    assert order == ["pkg/models.py", "pkg/util.py", "pkg/core.py", "pkg/__init__.py", "app.py", "README.md"]


def test_repo_shape_packs_files_in_dependency_order(repo, models, tokenizers, tmp_path):
    root, _, _ = repo
    _prepare(models["deepseek-hermes"], tmp_path, _code(root, shape="repo"), max_seq_length=4096,
             validation_fraction=0.0)
    rows = load_prepared(tmp_path)["train"]
    text = "".join(tokenizers["deepseek-hermes"].decode(ids) for ids in rows["input_ids"])
    positions = [text.index(f"# {p}\n") for p in ("pkg/models.py", "pkg/util.py", "pkg/core.py", "pkg/__init__.py")]
    assert positions == sorted(positions) and len(rows) < 6 and all(len(x) <= 4096 for x in rows["input_ids"])


def test_license_allow_list(repo, tmp_path):
    root, _, _ = repo
    assert all(isinstance(x, Skip) and x.reason in ("license_not_allowed", "gitignored", "symlink", "secret_file",
                                                      "generated", "minified", "unknown_language", "too_large")
               for x in walk_repository(root, Codebase(**OPTS, licenses=["MIT"])))
    mit = tmp_path / "mit"
    mit.mkdir()
    (mit / "LICENSE").write_text("MIT License\n\nPermission is hereby granted, free of charge, to any person ...\n")
    (mit / "a.py").write_text("x = 1\n")
    assert [type(x).__name__ for x in walk_repository(mit, Codebase(licenses=["MIT", "Apache-2.0"]))] == \
        ["Skip", "CodeFile"]  # the LICENSE file itself has no language


def test_a_folder_that_is_not_a_dataset_names_the_codebase_format(models, repo, tmp_path):
    root, _, _ = repo
    with pytest.raises(FinetuneError, match=r"give --source .*:codebase"):
        _prepare(models["spm-hermes"], tmp_path, (str(root), "auto"))


def test_mixture_weights_caps_and_token_shares(repo, models, tmp_path):
    root, _, _ = repo
    traces = Source(path=str(REPO / "data/sample/openai.jsonl"), weight=2.0)
    code = Source(path=str(root), format="codebase", max_tokens=3000, codebase=OPTS)
    stats = _prepare(models["deepseek-hermes"], tmp_path, traces, code, validation_fraction=0.0,
                     max_reject_fraction=0.9)
    mix = stats["mixture"]
    t, c = mix[traces.path], mix[str(root)]
    assert t["samples"] == 2 * stats["sources"][traces.path]["ok"]  # every trace twice
    assert 0 < c["tokens"] <= 3000 and c["capped_samples"] > 0
    assert t["token_share"] + c["token_share"] == pytest.approx(1.0, abs=1e-3)
    rows = load_prepared(tmp_path)["train"]
    assert len(rows) == t["samples"] + c["samples"] == stats["samples"]["train"]
    by_source = {}
    for src, ids in zip(rows["source"], rows["input_ids"], strict=True):
        by_source[src] = by_source.get(src, 0) + len(ids)
    assert by_source == {traces.path: t["tokens"], str(root): c["tokens"]}
    assert stats["tokens_per_role"]["code"]["tokens"] > 0


def test_assignment_detectors_still_fire_on_the_lines_they_are_given():
    """detect-secrets' `name = value` detectors run only on lines with a secret word: they must still see them."""
    iam = "abcdEFGH1234ijklMNOP5678qrstUVWX9012yzABcd_-"
    cloudant = "a1b2c3d4e5f6" * 5 + "a1b2"
    text = f'ibm_cloud_iam_key = "{iam}"\ncloudant_password = "{cloudant}"\nplain = 1\n'
    out, counts = Redactor().redact(text, "x.py")
    assert counts == {"ibm_cloud_iam_key": 1, "cloudant_credentials": 1}
    assert iam not in out and cloudant not in out and out.endswith("plain = 1\n")
