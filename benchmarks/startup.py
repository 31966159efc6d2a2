"""Start-up time and memory of the light verbs, this tree against a baseline commit, in one run.

Three commands, each run ``--repeat`` times per tree (median wall time, peak RSS):

- ``finetune --help``;
- ``finetune validate recipes/tiny/traces.yaml`` (a training recipe: schema only, no model);
- ``finetune pool serve`` on an endpoint-only pool (two endpoint members, a generative judge on an
  endpoint; nothing is started locally): the time until ``GET /v1/models`` answers, and the
  gateway's resident memory then.

Each command also runs once under ``python -X importtime`` to say whether it imported torch,
transformers or datasets. The baseline is checked out with ``git worktree`` into a scratch folder
and run with the same interpreter (``.venv``), so only the code differs.

    .venv/bin/python benchmarks/startup.py --baseline 3f698cf

3f698cf is the last commit before the contracts refactor (issue 17).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = str(REPO / ".venv" / "bin" / "python")
HEAVY = ("torch", "transformers", "datasets")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint_pool(folder: Path) -> Path:
    """A manifest whose members and judge are all OpenAI endpoints (none needs to be up to start)."""
    def endpoint(port, model):
        return {"url": f"http://127.0.0.1:{port}/v1", "model": model, "api_key_env": None}

    def member(name, port):
        return {"name": name, "endpoint": endpoint(port, name), "tool_call_format": "hermes", "context_length": 8192}

    weights = folder / "judge" / "judge.gguf"  # the judge runs elsewhere; the manifest still names its model
    weights.parent.mkdir()
    weights.write_bytes(b"GGUF")
    judge_file = {"path": "judge.gguf", "bytes": 4, "sha256": hashlib.sha256(b"GGUF").hexdigest()}

    manifest = {
        "schema_version": 1, "name": "remote-pool", "created": "2026-12-03T00:00:00Z", "toolkit_version": "0",
        "tool_call_format": "hermes", "bases": [],
        "members": [member("a", 9901), member("b", 9902)],
        "judge": {"kind": "generative", "max_length": 2048,
                  "artifacts": [{"format": "gguf-q8_0", "root": "judge", "path": "judge.gguf", "files": [judge_file]}],
                  "endpoint": endpoint(9903, "judge"),
                  "templates": {"system": "Judge.", "task": "Task:\n{task}", "candidate": "Candidate {letter}:\n{answer}",
                                "merge": "Write one answer from the candidates."}},
        "fusion": {"mode": "best_of", "quorum": 1, "member_timeout_s": 30},
    }
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path


def _env(tree: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}


def run_once(tree: Path, argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one `python -m finetune ARGV`."""
    start = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "finetune", *argv], cwd=tree, env=_env(tree),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{tree}: finetune {' '.join(argv)} failed:\n{proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024


def serve_once(tree: Path, manifest: Path) -> tuple[float, float]:
    """Seconds until the gateway answers /v1/models, and its RSS (MiB) then."""
    port = _free_port()
    start = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "finetune", "pool", "serve", str(manifest), "--port", str(port)], cwd=tree,
                            env=_env(tree), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                sys.exit(f"{tree}: pool serve exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.02)
        wall = time.perf_counter() - start
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:")) / 1024
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return wall, rss


def heavy_imports(tree: Path, argv: list[str], serve: bool) -> list[str]:
    """Which of torch, transformers, datasets the command imports (python -X importtime)."""
    cmd = [PY, "-X", "importtime", "-m", "finetune", *argv]
    if serve:  # import what `pool serve` imports, then stop before listening
        cmd = [PY, "-X", "importtime", "-c", "import finetune.cli, finetune.pool.gateway"]
    err = subprocess.run(cmd, cwd=tree, env=_env(tree), capture_output=True, text=True).stderr
    names = {line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if line.startswith("import time:")}
    return [h for h in HEAVY if h in names]


def measure(tree: Path, manifest: Path, repeat: int) -> dict:
    commands = {"finetune --help": ["--help"],
                "finetune validate": ["validate", "recipes/tiny/traces.yaml"],
                "finetune pool serve (endpoint-only pool)": None}
    out = {}
    for label, argv in commands.items():
        runs = [serve_once(tree, manifest) if argv is None else run_once(tree, argv) for _ in range(repeat)]
        out[label] = {"seconds": round(statistics.median(w for w, _ in runs), 3),
                      "rss_mib": round(max(r for _, r in runs), 1),
                      "imports": heavy_imports(tree, argv or [], argv is None)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default="3f698cf", help="commit to compare with (default: before issue 17)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline], cwd=REPO, check=True,
                       capture_output=True)
        try:
            manifest = endpoint_pool(tmp)
            results = {"baseline": measure(base, manifest, args.repeat), "this tree": measure(REPO, manifest, args.repeat)}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=False)
    print(f"{'command':<42} {'baseline':>17} {'this tree':>17} {'ratio':>7}   imports (baseline -> this tree)")
    for label in results["this tree"]:
        b, t = results["baseline"][label], results["this tree"][label]
        print(f"{label:<42} {b['seconds']:>6.2f} s {b['rss_mib']:>5.0f} MiB {t['seconds']:>6.2f} s "
              f"{t['rss_mib']:>5.0f} MiB {b['seconds'] / t['seconds']:>6.2f}x   "
              f"{','.join(b['imports']) or 'none'} -> {','.join(t['imports']) or 'none'}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
