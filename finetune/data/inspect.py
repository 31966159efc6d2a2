"""``finetune data inspect``: the mask audit, printed.

Shows prepared samples with the trained tokens highlighted (green in a terminal; wrapped in
``⟦ ⟧`` with ``--plain`` or when the output is not a terminal, so logs keep the mask visible) and
the tokens per role, total and trained, from ``stats.json``.

Example::

    inspect_dataset("runs/data", n=2)
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune import FinetuneError
from finetune.contracts.tokenizer import load_tokenizer
from finetune.data.prepare import load_prepared
from finetune.data.traces.render import IGNORE


def trained_runs(tokenizer, input_ids, labels) -> list[tuple[str, bool]]:
    """The sample as (decoded text, trained?) runs of consecutive tokens."""
    runs: list[tuple[list[int], bool]] = []
    for tid, lab in zip(input_ids, labels, strict=True):
        trained = lab != IGNORE
        if runs and runs[-1][1] == trained:
            runs[-1][0].append(tid)
        else:
            runs.append(([tid], trained))
    return [(tokenizer.decode(ids), t) for ids, t in runs]


def inspect_dataset(folder: str | Path, n: int = 3, split: str = "train", plain: bool | None = None) -> None:
    """Print ``n`` samples of ``split`` with trained tokens marked, then the per-role counts."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    folder = Path(folder)
    stats = json.loads((folder / "stats.json").read_text())
    ds = load_prepared(folder)
    if split not in ds:

        raise FinetuneError(f"{folder} has no split {split!r}; it has {', '.join(ds)}")
    tok = load_tokenizer(folder / "tokenizer")
    console = Console(highlight=False)
    plain = not console.is_terminal if plain is None else plain
    rows = ds[split]
    for i in range(min(n, len(rows))):
        row = rows[i]
        n_trained = sum(x != IGNORE for x in row["labels"])
        console.rule(f"{split}[{i}]  {row['record_id']}  piece {row['piece']}  "
                     f"{len(row['input_ids'])} tokens, {n_trained} trained")
        text = Text()
        for chunk, trained in trained_runs(tok, row["input_ids"], row["labels"]):
            if plain:
                text.append(f"⟦{chunk}⟧" if trained else chunk)
            else:
                text.append(chunk, style="bold green on grey19" if trained else "dim")
        console.print(text, soft_wrap=True)
    table = Table(title=f"tokens per role ({stats['tokens_trained']} of {stats['tokens_total']} trained)")
    for col in ("role", "tokens", "trained", "share trained"):
        table.add_column(col, justify="left" if col == "role" else "right")
    for role, v in stats["tokens_per_role"].items():
        share = f"{v['trained'] / v['tokens']:.1%}" if v["tokens"] else "-"
        table.add_row(role, str(v["tokens"]), str(v["trained"]), share)
    console.print(table)
    console.print(f"records: {stats['records_in']} in, {stats['records_ok']} ok, {stats['records_rejected']} "
                  f"rejected {stats['reject_reasons'] or ''}; {stats['records_split']} split; samples {stats['samples']}")
