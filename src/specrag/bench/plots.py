"""Figures of the benchmark: accuracy vs budget per method, time to first token vs length.

Kept apart from the tables so that the suite runs (and its tests pass) where matplotlib is
missing: the import happens inside the functions and only plotting needs it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .report import label, wilson

Record = dict[str, Any]


def accuracy_vs_budget(
    records: Iterable[Record],
    metric: str,
    path: Path,
    *,
    title: str,
    where: Callable[[Record], bool] = lambda r: True,
) -> Path:
    """One line per method: mean ``metric`` with 95 % Wilson bars at each budget; ``full``
    as a horizontal reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if where(record) and record.get(metric) is not None:
            series[label(record)][float(record["budget"])].append(float(record[metric]))
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, points in sorted(series.items()):
        budgets = sorted(points)
        means = [sum(points[b]) / len(points[b]) for b in budgets]
        bounds = [wilson(sum(points[b]), len(points[b])) for b in budgets]
        if name in ("full", "kv_full"):
            axes.axhline(means[0], color="black", linestyle="--", label=f"{name} (N={len(points[budgets[0]])})")
            continue
        errors = [
            [max(0.0, m - lo) for m, (lo, _) in zip(means, bounds)],
            [max(0.0, hi - m) for m, (_, hi) in zip(means, bounds)],
        ]
        axes.errorbar(budgets, means, yerr=errors, marker="o", capsize=3, label=name)
    axes.set_xlabel("kept fraction of context (target tokens)")
    axes.set_ylabel(metric)
    axes.set_ylim(-0.02, 1.02)
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=7, loc="lower right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def ttft_vs_length(
    records: Iterable[Record],
    path: Path,
    *,
    title: str,
    where: Callable[[Record], bool] = lambda r: True,
) -> Path:
    """Mean time to first token (compression + target prefill) per method and budget against
    context length in target tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if where(record) and record.get("ttft_s") is not None:
            name = label(record) + ("" if record["method"] in ("full", "kv_full") else f" @{record['budget']:g}")
            series[name][int(record["length"])].append(float(record["ttft_s"]))
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, points in sorted(series.items()):
        lengths = sorted(points)
        axes.plot(lengths, [sum(points[n]) / len(points[n]) for n in lengths], marker="o", label=name)
    axes.set_xlabel("context length (target tokens, as requested)")
    axes.set_ylabel("time to first token, s")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
