"""Throughput and peak memory of a `codebase` source in `finetune data prepare`, against baselines.

Generates a repository of Python modules (distinct functions, 2% exact copies, 2% near copies,
1% with a planted credential, a vendored ``node_modules`` tree and binary files), then runs, each in
its own process so peak RSS is its own:

- finetune: ``prepare`` with a codebase source (walk with .gitignore, filters, exact + MinHash
  dedup, secret redaction, file samples, FIM at rate 0.5, streamed to disk);
- baseline: what a plain script does: ``os.walk`` + read + tokenize every ``.py`` file +
  ``save_to_disk``, with no filtering, dedup or redaction;
- redaction alone, ours (``Redactor``) against detect-secrets' own line-by-line scan
  (``scan_file`` with its default plugins) over the same files.

``--scale`` also runs finetune on a repository that many times larger, to show that peak memory
does not grow with the repository.

    .venv/bin/python benchmarks/codebase_prepare.py --files 4000 --scale 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peak import peak_rss_mb

REPO = Path(__file__).resolve().parents[1]
WORDS = ("parse load save value index count items result total config path name token buffer offset limit "
         "request response handler cache entry record batch stream reader writer state error retry").split()


def _function(rng: random.Random, i: int) -> str:
    w = lambda: rng.choice(WORDS)  # noqa: E731
    name, arg, other = f"{w()}_{w()}_{i}", w(), w()
    body = [f"    {other}_{k} = {arg}.{w()}({rng.randint(0, 99)}) + {rng.randint(0, 999)}" for k in range(rng.randint(3, 12))]
    return (f"def {name}({arg}, {other}=None):\n    \"\"\"{w().title()} the {w()} of a {w()} {w()}.\"\"\"\n"
            + "\n".join(body) + f"\n    return {other}_0\n\n\n")


def make_repo(root: Path, n: int, seed: int = 0) -> int:
    """Write ``n`` modules (and the extras) under ``root``; return the bytes of Python written."""
    rng = random.Random(seed)
    total = 0
    (root / ".gitignore").parent.mkdir(parents=True, exist_ok=True)
    (root / ".gitignore").write_text("*.log\n")
    texts = []
    for i in range(n):
        pkg = root / f"pkg{i % 40}"
        pkg.mkdir(exist_ok=True)
        roll = rng.random()
        if roll < 0.02 and texts:
            text = rng.choice(texts)  # exact copy
        elif roll < 0.04 and texts:
            lines = rng.choice(texts).splitlines(keepends=True)
            lines[rng.randrange(len(lines))] = "    # tweaked\n"
            text = "".join(lines)  # near copy
        else:
            text = "import os\n\n\n" + "".join(_function(rng, j) for j in range(rng.randint(4, 20)))
            if roll > 0.99:
                text += 'API_TOKEN = "ghp_' + "".join(rng.choice("abcdefghijkLMNOP0123456789") for _ in range(36)) + '"\n'
            texts.append(text)
        (pkg / f"mod_{i}.py").write_text(text)
        total += len(text)
    vendored = root / "node_modules" / "lib"
    vendored.mkdir(parents=True)
    for i in range(200):
        (vendored / f"v{i}.js").write_text("module.exports = function () { return 1; };\n" * 20)
    for i in range(50):
        (root / f"pkg{i % 40}" / f"blob_{i}.py").write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
    return total


def run_finetune(model: str, repo: str, out: str) -> dict:
    from finetune.data.config import Prepare, Source
    from finetune.data.prepare import prepare

    src = Source(path=repo, format="codebase", codebase={"fim": {"rate": 0.5}})
    stats = prepare(Prepare.of(model=model, sources=[src], out=out, max_seq_length=2048))
    code = stats["sources"][repo]["codebase"]
    return {"files": code["files_in"], "kept": code["files_ok"], "tokens": stats["tokens_total"],
            "skipped": code["skipped"], "redacted": code["redacted"]}


def run_baseline(model: str, repo: str, out: str) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    rows, files = [], 0
    for folder, _, names in os.walk(repo):
        for name in sorted(names):
            if name.endswith(".py"):
                files += 1
                text = Path(folder, name).read_text(errors="replace")
                rows.append(tok(text)["input_ids"])
    Dataset.from_dict({"input_ids": rows}).save_to_disk(out)
    return {"files": files, "kept": len(rows), "tokens": sum(map(len, rows))}


def _python_files(repo: str) -> list[str]:
    return sorted(str(p) for p in Path(repo).glob("pkg*/mod_*.py"))


def run_redactor(model: str, repo: str, out: str) -> dict:
    from finetune.data.code.secrets import Redactor

    r, hits, size = Redactor(), 0, 0
    for path in _python_files(repo):
        text = Path(path).read_text()
        size += len(text)
        hits += sum(r.redact(text, path)[1].values())
    return {"files": len(_python_files(repo)), "bytes": size, "hits": hits}


def run_detect_secrets(model: str, repo: str, out: str) -> dict:
    from detect_secrets.core.scan import scan_file
    from detect_secrets.settings import default_settings

    hits, size = 0, 0
    with default_settings():
        for path in _python_files(repo):
            size += os.path.getsize(path)
            hits += sum(1 for _ in scan_file(path))
    return {"files": len(_python_files(repo)), "bytes": size, "hits": hits}


SIDES = {"finetune": run_finetune, "baseline": run_baseline, "redactor": run_redactor,
         "detect-secrets": run_detect_secrets}


def child(which: str, model: str, repo: str, out: str) -> None:
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    import datasets

    datasets.disable_progress_bars()
    t0 = time.perf_counter()
    result = SIDES[which](model, repo, out)
    result["seconds"] = time.perf_counter() - t0
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def _run(which: str, model: str, repo: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", which, model, str(repo), str(out)],
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{which} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=4000, help="Python modules to generate (default 4000)")
    ap.add_argument("--scale", type=int, default=0, help="also run finetune on a repository this many times larger")
    ap.add_argument("--model", help="model folder (default: a tiny Llama with the DeepSeek-Coder vocabulary)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    tmp = Path(tempfile.mkdtemp(prefix="bench-codebase-"))
    model = args.model
    if model is None:
        from finetune.model.tiny import build_tiny_model

        model = str(build_tiny_model("llama", REPO / "data/tokenizers/ggml-vocab-deepseek-coder.gguf", tmp / "model"))
    size = make_repo(tmp / "repo", args.files)
    print(f"repository: {args.files} modules, {size / 1e6:.1f} MB of Python (+ vendored and binary files)")
    res = {}
    for which in ("baseline", "finetune", "detect-secrets", "redactor"):
        res[which] = r = _run(which, model, tmp / "repo", tmp / which)
        mb = (r.get("bytes") or size) / 1e6
        print(f"{which:15s} {r['files'] / r['seconds']:7.0f} files/s {mb / r['seconds']:6.2f} MB/s "
              f"{r['seconds']:7.1f} s  peak RSS {r['peak_rss_mb']:6.0f} MB  "
              + json.dumps({k: v for k, v in r.items() if k not in ("seconds", "peak_rss_mb", "bytes")}))
    f, b = res["finetune"], res["baseline"]
    print(f"ratio finetune/baseline: throughput {b['seconds'] / f['seconds']:.2f}x, "
          f"peak memory {f['peak_rss_mb'] / b['peak_rss_mb']:.2f}x")
    print(f"ratio redaction ours/detect-secrets scan: {res['detect-secrets']['seconds'] / res['redactor']['seconds']:.1f}x "
          f"faster ({res['redactor']['hits']} vs {res['detect-secrets']['hits']} hits)")
    if args.scale > 1:
        big_size = make_repo(tmp / "big", args.files * args.scale, seed=1)
        r = _run("finetune", model, tmp / "big", tmp / "finetune-big")
        print(f"finetune x{args.scale}: {big_size / 1e6:.1f} MB, {r['files'] / r['seconds']:.0f} files/s, "
              f"{big_size / 1e6 / r['seconds']:.2f} MB/s, peak RSS {r['peak_rss_mb']:.0f} MB "
              f"({r['peak_rss_mb'] / f['peak_rss_mb']:.2f}x the {size / 1e6:.1f} MB run's)")


if __name__ == "__main__":
    main()
