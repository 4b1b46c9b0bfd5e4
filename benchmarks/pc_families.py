#!/usr/bin/env python
"""Per task family: each prompt-compression row against the sentence filter and LangChain's.

Why this script
---------------
The claim SpecPC must earn is "never below the sentence-embedding filter on any kind of
question". This reads ``specrag bench`` per-item JSONL files and prints, per family (Quoref,
multi-hop, RULER's four tasks pooled and one by one), the rate each method keeps what the
question needs (``evidence_kept`` where items carry evidence, else ``contained``) at every
budget, with 95 % Wilson intervals, and paired win/loss counts with the exact sign test's p
against both filters (``sentence``: MiniLM sentences through the bench's selector;
``lc_filter``: LangChain's own ``EmbeddingsFilter`` pipeline).

Usage::

    .venv/bin/python benchmarks/pc_families.py docs/img/bench-pc-quoref.jsonl \\
        docs/img/bench-pc-multihop.jsonl docs/img/bench-pc-ruler.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from specrag.bench.report import sign_test, wilson

RULER = ("niah_single", "niah_multikey", "niah_multivalue", "vt")
REFERENCES = ("sentence", "lc_filter")


def family_of(task: str) -> str:
    return "ruler (4 tasks)" if task in RULER else task


FRACTIONS: dict[tuple[str, str, float], list[float]] = defaultdict(list)
"""``(group, method, budget) -> kept fractions``: a peer that sets its own length may go over."""


def load(paths: list[Path]) -> dict[tuple[str, str, float], dict[str, bool]]:
    """``(group, method, budget) -> {item: kept}`` for families and single RULER tasks."""
    out: dict[tuple[str, str, float], dict[str, bool]] = defaultdict(dict)
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record.get("kind") != "pc" or record["method"] == "full":
                continue
            kept = bool(record.get("evidence_kept", record["contained"]))
            for group in {family_of(record["task"]), record["task"]}:
                out[(group, record["method"], record["budget"])][record["item_id"]] = kept
                FRACTIONS[(group, record["method"], record["budget"])].append(record["kept_fraction"])
    return out


def paired(row: dict[str, bool], reference: dict[str, bool]) -> str:
    common = [item for item in row if item in reference]
    wins = sum(row[i] and not reference[i] for i in common)
    losses = sum(reference[i] and not row[i] for i in common)
    p = sign_test(wins, losses)
    shown = "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"
    return f"+{wins}/−{losses} ({shown})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    data = load(args.files)
    print("# Per-family tables\n")
    print("Written by `benchmarks/pc_families.py` from " + ", ".join(f"`{path}`" for path in args.files) + ";")
    print("the reading is in [benchmarks.md](benchmarks.md#specpc-against-the-sentence-filter-per-task-family).")
    groups = sorted({g for g, _, _ in data}, key=lambda g: (g in RULER, g))
    for group in groups:
        methods = sorted({m for g, m, _ in data if g == group})
        budgets = sorted({b for g, _, b in data if g == group})
        n = max(len(v) for (g, _, _), v in data.items() if g == group)
        print(f"\n#### {group} (N = {n})\n")
        head = " | ".join(f"keep {b}" for b in budgets)
        refs = " | ".join(f"vs {r} @{b}" for r in REFERENCES for b in budgets)
        print(f"| method | {head} | {refs} |")
        print("|---|" + "---|" * (len(budgets) * (1 + len(REFERENCES))))
        for method in methods:
            cells = []
            for budget in budgets:
                row = data.get((group, method, budget), {})
                low, high = wilson(sum(row.values()), len(row))
                cells.append(f"{sum(row.values()) / max(1, len(row)):.2f} [{low:.2f}, {high:.2f}]")
            for reference in REFERENCES:
                for budget in budgets:
                    row, ref = data.get((group, method, budget), {}), data.get((group, reference, budget), {})
                    cells.append("" if method == reference or not ref else paired(row, ref))
            print(f"| {method} | " + " | ".join(cells) + " |")
        for method in methods:
            means = [sum(FRACTIONS[(group, method, b)]) / max(1, len(FRACTIONS[(group, method, b)])) for b in budgets]
            if any(mean > budget * 1.05 for mean, budget in zip(means, budgets)):
                shown = " / ".join(f"{mean:.2f}" for mean in means)
                print(f"\n{method} is over budget: it kept {shown} of the context on average (budgets {budgets}).")


if __name__ == "__main__":
    main()
