#!/usr/bin/env python
"""One table: SpecKV's rows and kvpress's presses on the same items, at one cache budget.

Why this script
---------------
``specrag bench`` writes SpecKV's KV rows, and ``--import-kvpress`` adds kvpress's presses to
the same per-item JSONL (docs/kvpress.md). This prints the comparison the report needs:
per row, exact match with its 95 % Wilson interval, paired wins and losses with the exact
sign test against window-only eviction (``kv_snapkv``) and against the best kvpress press.
It also gives what attention reads after the prompt (entries per layer), the cache held at
the end, median time to first token, its median ratio to the full cache's (or
``--time-reference``'s) on the same item, with a 95 % bootstrap interval
(the cost a user sees: draft and compression included), the draft's share of the row's own
time to first token, and decode speed. Only items every row has are counted, so all rows
compare the same prompts.

Usage::

    .venv/bin/python benchmarks/kv_side_by_side.py docs/img/bench-kv.jsonl --budget 0.1
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from specrag.bench.kv_rows import FULL_CACHE, WINDOW_ONLY, KVRows, kv_rows
from specrag.bench.report import bootstrap, sign_test, wilson
from specrag.bench.runner import load_records


def _paired(table: KVRows, row: str, other: str) -> str:
    wins, losses = table.paired(row, other)
    p = sign_test(wins, losses)
    return f"+{wins}/−{losses}" + (f" (p = {p:.3f})" if p < 1 else "")


def _time_ratio(row: dict[str, dict[str, Any]], reference: dict[str, dict[str, Any]], items: list[str]) -> str:
    """Median per-item ratio of time to first token to the reference row's, with its 95 %
    bootstrap interval: the items are paired, so the prompt's own cost cancels out."""
    ratios = [float(row[item]["ttft_s"]) / float(reference[item]["ttft_s"]) for item in items]
    low, high = bootstrap(ratios, statistic=statistics.median)
    return f"{statistics.median(ratios):.2f} [{low:.2f}, {high:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--task", default=None, help="Only this task (default: all in the files).")
    parser.add_argument(
        "--lookahead-rows",
        action="store_true",
        help="Also the rows run with a fixed --lookahead (a sweep usually has fewer items, which the "
        "common-item rule would then impose on every row).",
    )
    parser.add_argument(
        "--metric",
        choices=("em", "answer_contained"),
        default="em",
        help="Per-item score: exact match, or answer_contained (every expected value appears in the "
        "answer: RULER's all-values match for multi-value and variable tracking, which an answer that "
        "repeats a value after the list fails under EM).",
    )
    parser.add_argument(
        "--time-reference",
        default="kv_full",
        help="The row time to first token is divided by (kv_snapkv: what the draft adds to the same "
        "eviction without one).",
    )
    args = parser.parse_args()
    records = [r for path in args.paths for r in load_records(path).values()]
    table = kv_rows(records, args.budget, metric=args.metric, task=args.task, lookahead_rows=args.lookahead_rows)
    rows, best, common = table.records, table.best_press, table.items
    if args.time_reference not in rows and args.time_reference != FULL_CACHE:  # no full cache: blank ratios
        raise SystemExit(f"--time-reference {args.time_reference!r} is not a row here; rows: {', '.join(sorted(rows))}")
    presses = table.presses

    print(f"N = {len(common)} items with every row; budget {args.budget:g} of the prompt's entries per layer\n")
    score = "EM" if args.metric == "em" else "all values in the answer"
    header = (
        f"| row | {score} [95 % CI] | vs kv_snapkv | vs best press | entries read | KV MiB at end "
        f"| TTFT s (median) | TTFT / {args.time_reference}'s, median [95 % CI] | draft / TTFT | decode tok/s |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    reference = rows.get(args.time_reference)
    order = sorted(rows, key=lambda row: (row.split(" (")[0] not in ("kv_full",), row in presses, row))
    for row in order:
        chosen = [rows[row][item] for item in common]
        hits = table.hits(row)
        low, high = wilson(int(hits), len(common))
        versus = _paired(table, row, WINDOW_ONLY) if WINDOW_ONLY in rows and row != WINDOW_ONLY else ""
        against = _paired(table, row, best) if best is not None and row != best else ""
        entries = statistics.median(float(r["kept_tokens"]) for r in chosen) if row != "kv_full" else None
        ttft = statistics.median(float(r["ttft_s"]) for r in chosen)
        versus_reference = (
            _time_ratio(rows[row], reference, common) if reference is not None and row != args.time_reference else ""
        )
        draft = statistics.median(float(r.get("draft_s", 0.0)) / float(r["ttft_s"]) for r in chosen)
        print(
            f"| {row} | {hits / len(common):.2f} [{low:.2f}, {high:.2f}] | {versus} | {against} | "
            f"{'all' if entries is None else f'{entries:.0f}'} | "
            f"{statistics.median(float(r['kv_bytes_end']) for r in chosen) / 2**20:.1f} | {ttft:.1f} | "
            f"{versus_reference} | "
            f"{draft:.2f} | {statistics.median(float(r['decode_tok_s']) for r in chosen):.2f} |"
        )
    if best is not None:
        print(f"\nBest kvpress press on these items: {best}.")


if __name__ == "__main__":
    main()
