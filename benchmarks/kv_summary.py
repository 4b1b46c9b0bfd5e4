#!/usr/bin/env python
"""Every SpecKV cell of the report in one table: the full cache, window-only eviction, SpecKV
and the best kvpress press, on the same items per cell, with paired sign tests.

Why this script
---------------
The per-cell tables (``benchmarks/kv_side_by_side.py``) carry the costs; a reader deciding
whether SpecKV is worth its draft needs the accuracy of every task, length and budget side by
side first, losses included. Cells are read from the committed JSONL files and paired the
same way as the per-cell tables (:mod:`specrag.bench.kv_rows`), so the two always agree.
A cell whose files are missing, or where no item has every row, is listed as not run.

Usage::

    .venv/bin/python benchmarks/kv_summary.py            # the committed files in docs/img
    .venv/bin/python benchmarks/kv_summary.py --dir out  # the same cells from another folder
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from specrag.bench.kv_rows import FULL_CACHE, WINDOW_ONLY, KVRows, kv_rows
from specrag.bench.report import Record, sign_test
from specrag.bench.runner import load_records

SPECKV = "kv_speckv"


@dataclass(frozen=True)
class Cell:
    """One task at one prompt length, from one results file, scored by one metric."""

    task: str
    length: str
    path: str
    metric: str = "em"


CELLS = (
    Cell("niah_single", "4k", "bench-kv-ruler4k.jsonl"),
    Cell("niah_multikey", "4k", "bench-kv-4k-n40.jsonl"),
    Cell("niah_multivalue", "4k", "bench-kv-ruler4k.jsonl", "answer_contained"),
    Cell("vt", "4k", "bench-kv-ruler4k.jsonl", "answer_contained"),
    Cell("quoref", "4k", "bench-kv-quoref4k-n40.jsonl"),
    Cell("niah_single", "8k", "bench-kv-niah8k.jsonl"),
    Cell("niah_multikey", "8k", "bench-kv-mk8k.jsonl"),
    Cell("niah_multivalue", "8k", "bench-kv-ruler8k.jsonl", "answer_contained"),
    Cell("vt", "8k", "bench-kv-ruler8k.jsonl", "answer_contained"),
    Cell("quoref", "8k", "bench-kv-quoref8k.jsonl"),
    # the Quoref items the 135M draft cannot read, with a draft that can
    Cell("quoref", "8k", "bench-kv-quoref8k-long.jsonl"),
)
BUDGETS = (0.1, 0.25)
COLUMNS = (
    "task",
    "length",
    "budget",
    "N",
    "prompt tokens",
    "SpecKV's draft",
    "full cache",
    "window-only",
    "SpecKV",
    "best kvpress press",
    "SpecKV vs press",
    "SpecKV vs window-only",
    "SpecKV vs full cache",
)


def _versus(table: KVRows, row: str | None, other: str | None) -> str:
    if row is None or other is None:
        return "not run"
    wins, losses = table.paired(row, other)
    p = sign_test(wins, losses)
    return f"+{wins}/−{losses}" + (f" (p = {p:.2g})" if p < 1 else "")


def _rate(table: KVRows, row: str | None) -> str:
    return "not run" if row is None else f"{table.hits(row) / len(table.items):.2f}"


def _prompt_tokens(table: KVRows) -> str:
    sizes = [int(record["prompt_tokens"]) for record in table.records[FULL_CACHE].values()]
    low, high = min(sizes), max(sizes)
    return f"{low / 1000:.1f}k" if low // 100 == high // 100 else f"{low / 1000:.1f}-{high / 1000:.1f}k"


def _draft(table: KVRows, speckv: str | None) -> str:
    """SpecKV's draft in this cell (cells differ where one draft cannot read every prompt)."""
    if speckv is None:
        return "not run"
    return ", ".join(sorted({str(record["draft"]) for record in table.records[speckv].values()}))


def _cell_line(cell: Cell, budget: float, records: list[Record]) -> str:
    head = f"| {cell.task} | {cell.length} | 1/{round(1 / budget)} |"
    try:
        table = kv_rows(records, budget, metric=cell.metric, task=cell.task)
    except SystemExit:
        return f"{head} not run |" + " |" * (len(COLUMNS) - 4)
    speckv = table.row_starting(SPECKV)
    window = table.row_starting(WINDOW_ONLY)
    full = table.row_starting(FULL_CACHE)
    press = table.best_press
    rates = " | ".join(_rate(table, row) for row in (full, window, speckv, press))
    name = "" if press is None else f" ({press.removeprefix('kvpress_')})"
    return (
        f"{head} {len(table.items)} | {_prompt_tokens(table)} | {_draft(table, speckv)} | {rates}{name} | "
        f"{_versus(table, speckv, press)} | {_versus(table, speckv, window)} | {_versus(table, speckv, full)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("docs/img"), help="Folder of the cells' JSONL files.")
    args = parser.parse_args()
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for cell in CELLS:
        path = args.dir / cell.path
        records = list(load_records(path).values()) if path.exists() else []
        for budget in BUDGETS:
            print(_cell_line(cell, budget, records))


if __name__ == "__main__":
    main()
