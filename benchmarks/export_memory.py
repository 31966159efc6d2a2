"""Peak memory and throughput of `finetune export` against a load-everything baseline.

Builds a random-initialised dense Llama of real width (hidden 2048, SentencePiece vocabulary,
bfloat16 on disk, about 1-2 GB with the default layer count), then runs, each in its own process
so that peak RSS is its own:

- finetune: ``finetune export MODEL --format safetensors --format gguf-f16 --no-verify`` (tensors
  streamed one at a time; merged safetensors and GGUF written by the streaming writers);
- baseline: what a naive script does: ``from_pretrained`` the whole model, ``save_pretrained``
  it, then hand every tensor to ``GGUFWriter.add_tensor`` and write the file at the end.

Both write the same bytes (bf16 safetensors + f16 GGUF). Printed: peak RSS in MB and as a
fraction of the model's size, output MB/s, and the ratios. The target is peak RSS <= 0.5x.

    .venv/bin/python benchmarks/export_memory.py --layers 16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BASELINE = r"""
import sys, time, numpy as np, torch, gguf
from pathlib import Path
from transformers import AutoModelForCausalLM
model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir()
model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16)
model.save_pretrained(str(out / "safetensors"))
# the same GGUF the streaming exporter writes, built in memory from the loaded model
from finetune.export.source import open_source
from finetune.export import to_gguf
src = open_source(model_dir)
state = model.state_dict()
w, names = to_gguf._writer(src, out / "model-F16.gguf")
to_gguf._add_hparams(w, src, "f16", "baseline")
to_gguf._add_tokenizer(w, src)
for gname, hf, fn in to_gguf.plan(src, names):
    t = fn(state[hf].float())
    w.add_tensor(gname, t.numpy() if t.dim() == 1 else t.half().numpy())
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")))
"""

OURS = r"""
import sys
from pathlib import Path
from finetune.export.run import export
export(Path(sys.argv[1]), ["safetensors", "gguf-f16"], Path(sys.argv[2]), check=False, say=lambda _: None)
print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")))
"""

IMPORTS = r"""
import torch, transformers, gguf, safetensors, numpy
from transformers import AutoModelForCausalLM
import finetune.export.run
print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")))
"""


def build(folder: Path, layers: int) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    from finetune.model.tiny import build_tiny_model

    tmp = folder.parent / "fp32"
    build_tiny_model("llama", REPO / "data" / "tokenizers" / "ggml-vocab-llama-spm.gguf", tmp, layers=layers,
                     hidden=2048)
    AutoModelForCausalLM.from_pretrained(str(tmp), dtype=torch.bfloat16).save_pretrained(str(folder))
    for f in tmp.iterdir():
        if not f.name.endswith(".safetensors") and f.name != "config.json":
            (folder / f.name).write_bytes(f.read_bytes())
    import shutil

    shutil.rmtree(tmp)
    return folder


def run(code: str, *args: str) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    # VmHWM (kB): this process's own peak; ru_maxrss would carry the parent's peak across exec.
    return int(proc.stdout.strip().splitlines()[-1]) / 1024, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=16, help="decoder layers (16: ~0.94B parameters, 1.9 GB bf16)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=REPO / "runs" if (REPO / "runs").exists() else None) as d:
        d = Path(d)
        model = build(d / "model", args.layers)
        size = sum(f.stat().st_size for f in model.glob("*.safetensors")) / 2**20
        imports, _ = run(IMPORTS)
        ours, t_ours = run(OURS, str(model), str(d / "ours"))
        base, t_base = run(BASELINE, str(model), str(d / "base"))
        written = sum(f.stat().st_size for f in (d / "ours").rglob("*") if f.is_file()) / 2**20
        result = {
            "model_mb": round(size), "written_mb": round(written), "imports_rss_mb": round(imports),
            "finetune": {"peak_rss_mb": round(ours), "rss_over_model": round(ours / size, 3),
                         "seconds": round(t_ours, 1), "mb_per_s": round(written / t_ours, 1)},
            "baseline": {"peak_rss_mb": round(base), "rss_over_model": round(base / size, 3),
                         "seconds": round(t_base, 1), "mb_per_s": round(written / t_base, 1)},
            "rss_ratio_finetune_over_baseline": round(ours / base, 3),
            "throughput_ratio_finetune_over_baseline": round(t_base / t_ours, 3),
        }
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
