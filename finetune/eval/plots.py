"""The report's plots: accuracy against cost, accuracy against p50 latency, accuracy per category.

People compare contenders at a glance on these two axes (what it costs, how long it takes) before
they read a table; the error bars are the 95% intervals of the verdict table.

Example::

    draw(summary, [e for e in summary["contenders"] if e["status"] == "ok"], Path("runs/eval/plots"))
"""

from __future__ import annotations

from pathlib import Path

PLOTS = ("accuracy_vs_cost.png", "accuracy_vs_latency.png", "categories.png")


def draw(summary: dict, ran: list[dict], folder: Path) -> list[Path]:
    """The three plots of a summary (``ran``: the contenders with numbers) into ``folder``: accuracy with
    its interval against relative cost and against p50 latency (the shipped one in red), and
    accuracy per category per contender; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in PLOTS]
    relative = all(e["relative_cost"] is not None for e in ran)
    scatter = [(paths[0], "relative_cost" if relative else "cost_per_1k",
                f"cost per request (x {summary['baseline']})" if relative else "cost per 1k requests"),
               (paths[1], "latency_p50", "p50 latency (s)")]
    for png, key, label in scatter:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for e in ran:
            y = 100 * e["accuracy"]
            err = [[y - 100 * e["ci"][0]], [100 * e["ci"][1] - y]]
            ax.errorbar(e[key], y, yerr=err, fmt="o", capsize=4, color="C3" if e["name"] == summary["ship"] else "C0")
            ax.annotate(e["name"], (e[key], y), textcoords="offset points", xytext=(6, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (%) with 95% interval")
        ax.set_title(f"accuracy against {label.split(' (')[0]} (red: ship)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        plt.close(fig)
    cats = [(c["kind"], c["category"]) for c in summary["tasks"]["by_category"]]
    fig, ax = plt.subplots(figsize=(max(6.5, 0.9 * len(cats) * max(1, len(ran)) / 2), 4.5))
    width = 0.8 / max(1, len(ran))
    for i, e in enumerate(ran):
        acc = {(c["kind"], c["category"]): c["accuracy"] for c in e["by_category"]}
        ax.bar([j + (i - (len(ran) - 1) / 2) * width for j in range(len(cats))],
               [100 * (acc.get(c) or 0) for c in cats], width, label=e["name"])
    ax.set_xticks(range(len(cats)), [f"{k}/{c}" for k, c in cats], rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 115)  # room above 100% for the legend
    ax.set_title("accuracy per category")
    if ran:
        ax.legend(fontsize=8, loc="upper center", ncol=min(4, len(ran)))
    fig.tight_layout()
    fig.savefig(paths[2], dpi=100)
    plt.close(fig)
    return paths
