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
    series: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if where(record) and record.get(metric) is not None:
            series[label(record)][float(record["budget"])].append(float(record[metric]))
    figure, axes = _new_figure()
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
    axes.set_ylim(-0.02, 1.02)
    return _save(figure, axes, path, "kept fraction of context (target tokens)", metric, title, "lower right")


def ttft_vs_length(
    records: Iterable[Record],
    path: Path,
    *,
    title: str,
    where: Callable[[Record], bool] = lambda r: True,
) -> Path:
    """Mean time to first token (compression + target prefill) per method and budget against
    context length in target tokens."""
    series: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if where(record) and record.get("ttft_s") is not None:
            name = label(record) + ("" if record["method"] in ("full", "kv_full") else f" @{record['budget']:g}")
            series[name][int(record["length"])].append(float(record["ttft_s"]))
    figure, axes = _new_figure()
    for name, points in sorted(series.items()):
        lengths = sorted(points)
        axes.plot(lengths, [sum(points[n]) / len(points[n]) for n in lengths], marker="o", label=name)
    return _save(
        figure, axes, path, "context length (target tokens, as requested)", "time to first token, s", title, "best"
    )


def _new_figure() -> tuple[Any, Any]:
    """A figure on the file-only Agg backend (imported lazily: matplotlib is an optional extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4.5))


def _save(figure: Any, axes: Any, path: Path, xlabel: str, ylabel: str, title: str, legend_at: str) -> Path:
    """Label, lay out, write and close a figure; returns ``path``."""
    import matplotlib.pyplot as plt

    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=7, loc=legend_at)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
