"""`finetune eval` with pool contenders: a real pool of llama.cpp members (tiny GGUFs) judged by the
MiniLM reward model, in two modes, one member fused with itself, and an export folder's formats as
contenders. Here because the pool's artifacts fixture lives here."""

from __future__ import annotations

import json

import pytest

from finetune.contracts.schema import recipe_from_tree
from finetune.eval.config import EvalRecipe
from finetune.eval.run import evaluate
from tests.eval.test_run import TOOLS


@pytest.mark.slow
def test_a_pool_in_two_modes_and_self_fusion(artifacts, tmp_path):
    """Real llama.cpp members (tiny GGUFs) and the MiniLM judge: a pool contender per mode, and one
    member sampled twice and judged; costs add up from the manifest; the judge is set against a random
    pick on the requests where it chose. The member's export folder runs as two contenders."""
    from tests.pool.conftest import tiny_pool

    manifest, data = tiny_pool(artifacts, tmp_path, max_tokens=8)
    costs = {m["name"]: m["cost"] for m in data["members"]}
    recipe = recipe_from_tree({"out": str(tmp_path / "eval"), "generation": {"max_tokens": 8},
                               "contenders": [{"name": "pool", "pool": str(manifest), "modes": ["best_of", "debate"]},
                                              {"name": "self", "pool": str(manifest), "members": ["coder"],
                                               "samples": 2},
                                              {"name": "coder", "export": str(artifacts / "coder-export")}],
                               "tasks": {"tool_calls": [{"path": str(TOOLS), "limit": 3}]}}, "test", EvalRecipe)
    summary = evaluate(recipe, show_progress=False)
    by = {c["name"]: c for c in summary["contenders"]}
    # an export folder is one contender per format: the same merged model through transformers and llama.cpp
    assert list(by) == ["pool/best_of", "pool/debate", "self", "coder/safetensors", "coder/gguf-q8_0"]
    assert {n: c["kind"] for n, c in by.items()} == {"pool/best_of": "pool", "pool/debate": "pool",
                                                      "self": "self_fusion", "coder/safetensors": "model",
                                                      "coder/gguf-q8_0": "gguf"}
    assert all(c["status"] == "ok" and c["tasks"] == 3 for c in by.values()), by
    answers = [json.loads(line) for line in (tmp_path / "eval/answers.jsonl").read_text().splitlines()]
    sampled = [a for a in answers if a["contender"] == "self"]
    assert all(set(a["fusion"]["members"]) == {"coder#1", "coder#2"} for a in sampled)
    assert all(a["cost"] == pytest.approx(2 * costs["coder"]) for a in sampled)
    best_of = [a for a in answers if a["contender"] == "pool/best_of"]
    assert all(a["cost"] == pytest.approx(sum(costs.values())) for a in best_of)
    debated = [a for a in answers if a["contender"] == "pool/debate"]
    assert all(a["cost"] >= sum(costs.values()) for a in debated)  # a debate round asks every member again
    judged = [a for a in best_of if a["judge"]]
    if judged:  # tiny random members answer in text, which is valid: the judge chose
        assert by["pool/best_of"]["judge"]["choices"] == len(judged)
        assert all(a["judge"]["candidates"] == 2 and 0 <= a["judge"]["random"] <= 1 for a in judged)
