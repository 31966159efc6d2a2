"""benchmarks/gpu_throughput.py --dry-run: the GPU benchmark's whole code path on the CPU (tiny
shape), so the minutes of a lent GPU are not spent finding its bugs. The GPU run itself is never
part of the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_gpu_throughput_dry_run_writes_every_configuration(tmp_path):
    out = tmp_path / "gpu.json"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_throughput.py"), "--dry-run",
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["device"] == "CPU" and report["scaled"] is None
    assert report["peak_tflops"] > 0 and report["data"]["attention_len"] > 0
    assert report["attention"]["finetune"].startswith("sdpa_segments") and report["gradient_checkpointing"]

    rows = {(r["method"], r["liger"], r["side"]): r for r in report["configs"]}
    assert set(rows) == {(m, liger, s) for m in ("lora", "qlora") for liger in (False, True)
                         for s in ("finetune", "trl")}
    for (_, liger, side), r in rows.items():
        if liger:  # no CUDA here
            assert r["status"] == "skipped" and "CUDA" in r["reason"], r
            continue
        assert r["status"] == "ok", r
        assert r["tokens_per_s"] > 0 and r["real_tokens"] > 0 and 0 < r["mfu"] and r["peak_rss_mb"] > 0
        assert r["trainable_params"] > 0 and r["flops_per_token"] > 4 * report["non_embedding"]
        assert side == "trl" or r["padding_share"] == 0  # packed rows carry no padding

    ratios = {(r["method"], r["liger"]): r for r in report["ratios"]}
    assert set(ratios) == {(m, liger) for m in ("lora", "qlora") for liger in (False, True)}
    for (_, liger), r in ratios.items():
        assert set(r) >= {"tokens_per_s", "peak_memory", "memory_field"}
        assert (r["tokens_per_s"] is None) == liger and (r["tokens_per_s"] is None or r["tokens_per_s"] > 0)
    assert "finetune / trl:" in proc.stdout and "skipped: Liger's kernels" in proc.stdout
