"""KV-cache rows of one budget, paired over the items every row has.

Why one module
--------------
The per-cell side-by-side table and the one-table summary of every cell must pick the same
records, the same paired items and the same "best kvpress press", or the two would disagree
on the same files. Both read them from here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from .kvpress_io import KVPRESS_METHODS
from .report import Record, label

WINDOW_ONLY = "kv_snapkv"
FULL_CACHE = "kv_full"


@dataclass(frozen=True)
class KVRows:
    """Per row label, per item id, the record at one budget, restricted to common items.

    ``scores[row][item]`` is the per-item metric.
    """

    budget: float
    metric: str
    items: list[str]
    records: dict[str, dict[str, Record]]
    scores: dict[str, dict[str, float]]

    def hits(self, row: str) -> float:
        """Items the row answers (sum of its per-item scores)."""
        return sum(self.scores[row].values())

    def paired(self, row: str, other: str) -> tuple[int, int]:
        """Items ``row`` wins against ``other``, and items it loses."""
        mine, theirs = self.scores[row], self.scores[other]
        return (
            sum(1 for item in self.items if mine[item] > theirs[item]),
            sum(1 for item in self.items if mine[item] < theirs[item]),
        )

    @property
    def presses(self) -> list[str]:
        """The kvpress rows, by label."""
        return [row for row in self.records if _method(row) in KVPRESS_METHODS]

    @property
    def best_press(self) -> str | None:
        """The kvpress row with the highest total on these items (ties broken by name, so the
        choice is deterministic), or ``None`` when no kvpress row ran at this budget."""
        presses = self.presses
        return max(presses, key=lambda row: (self.hits(row), row)) if presses else None

    def row_starting(self, method: str) -> str | None:
        """The first row whose label is ``method`` or ``method (details)``."""
        return next((row for row in sorted(self.records) if _method(row) == method), None)


def _method(row: str) -> str:
    """The method of a row label: ``kv_speckv (smollm2-135m)`` -> ``kv_speckv``."""
    return row.split(" (")[0]


def kv_rows(
    records: Iterable[Record],
    budget: float,
    *,
    metric: str = "em",
    task: str | None = None,
    lookahead_rows: bool = False,
) -> KVRows:
    """The KV rows at ``budget`` (the full cache whatever its budget), paired over the items
    every row has, so that every figure compares the same prompts.

    Raises
    ------
    SystemExit
        When no item has every row: a half-finished run must be completed, not compared.
    """
    rows: dict[str, dict[str, Record]] = defaultdict(dict)
    for record in records:
        if record.get("kind") != "kv" or metric not in record or (task and record["task"] != task):
            continue
        if record.get("lookahead") is not None and not lookahead_rows:
            continue
        if record["method"] == FULL_CACHE or float(record["budget"]) == budget:
            rows[label(record)][record["item_id"]] = record
    common = set.intersection(*(set(items) for items in rows.values())) if rows else set()
    if not common:
        where = f" for task {task!r}" if task else ""
        raise SystemExit(f"no item has every row at budget {budget:g}{where}; run the missing rows first")
    items = sorted(common)
    kept = {row: {item: by_item[item] for item in items} for row, by_item in rows.items()}
    scores = {row: {item: float(kept[row][item][metric]) for item in items} for row in kept}
    return KVRows(budget=budget, metric=metric, items=items, records=kept, scores=scores)
