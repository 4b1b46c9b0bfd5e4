"""Markdown tables with 95 % intervals from benchmark records, and the docs section writer.

Why intervals everywhere
------------------------
CPU budgets allow tens of items, not thousands; a difference of 0.05 between two methods on
40 items is noise. Rates (containment, EM) get a Wilson score interval, which behaves at 0
and 1 where the normal approximation does not; means of continuous scores (F1, seconds) get a
seeded percentile bootstrap. Each table states its N.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .kvpress_worker import EARLIER_FIRST_TOKEN

START = "<!-- bench-suite:start -->"
END = "<!-- bench-suite:end -->"
Record = dict[str, Any]


def wilson(successes: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial rate (``(0, 1)`` when ``n`` is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap(
    values: Sequence[float],
    rounds: int = 2000,
    seed: int = 0,
    statistic: Callable[[Sequence[float]], float] = statistics.fmean,
) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of ``statistic`` (the mean by default; the median
    for skewed per-item ratios such as time to first token). Seeded, so tables are reproducible."""
    if not values:
        return 0.0, 0.0
    rng = random.Random(seed)
    n = len(values)
    estimates = sorted(statistic([values[rng.randrange(n)] for _ in range(n)]) for _ in range(rounds))
    return estimates[int(0.025 * rounds)], estimates[int(0.975 * rounds) - 1]


def label(record: Record) -> str:
    """Row label: method, plus the draft for draft-based rows, a fixed lookahead, and kvpress
    rows from the worker's earlier protocol (their first answer token read the pruned cache)."""
    details = [str(record["draft"])] if record.get("draft") else []
    if record.get("lookahead") is not None:
        details.append(f"lookahead {record['lookahead']}")
    if record.get("first_token") == EARLIER_FIRST_TOKEN:
        details.append("first token from the pruned cache")
    return f"{record['method']} ({', '.join(details)})" if details else str(record["method"])


def complete_items(records: Sequence[Record]) -> list[Record]:
    """Only items that have every (method, draft, budget) row seen in ``records``.

    A run stopped at a deadline leaves its last item half done; comparing methods on
    different item sets would not be paired, so such items are left out of tables.
    """
    by_task: dict[tuple[str, int], set[tuple[str, float]]] = defaultdict(set)
    by_item: dict[str, set[tuple[str, float]]] = defaultdict(set)
    for record in records:
        cell = (label(record), float(record["budget"]))
        by_task[(record["task"], int(record["length"]))].add(cell)
        by_item[record["item_id"]].add(cell)
    return [r for r in records if by_item[r["item_id"]] >= by_task[(r["task"], int(r["length"]))]]


def _rate_cell(values: list[float]) -> str:
    if not values:
        return "—"
    low, high = wilson(sum(values), len(values))
    return f"{sum(values) / len(values):.2f} [{low:.2f}, {high:.2f}]"


def _mean_cell(values: list[float], digits: int = 2) -> str:
    if not values:
        return "—"
    low, high = bootstrap(values)
    return f"{sum(values) / len(values):.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def metric_table(
    records: Iterable[Record],
    metric: str,
    budgets: Sequence[float],
    *,
    rate: bool = True,
    where: Callable[[Record], bool] = lambda r: True,
    order: Sequence[str] = (),
) -> str:
    """Rows = method (and draft), columns = budgets: mean [95 % CI] and N, kept fraction.

    ``full`` rows (budget 1.0) are shown in every budget column as the reference.
    """
    cells: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    kept: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if not where(record) or record.get(metric) is None:
            continue
        row = label(record)
        targets = budgets if record["method"] in ("full", "kv_full") else [record["budget"]]
        for budget in targets:
            if budget in budgets:
                cells[row][budget].append(float(record[metric]))
                kept[row][budget].append(float(record["kept_fraction"]))
    if not cells:
        return "_no records_\n"
    rank = {name: index for index, name in enumerate(order)}
    rows = sorted(cells, key=lambda row: (rank.get(row.split(" (")[0], len(rank)), row))
    header = "| method | " + " | ".join(f"{metric} @{b:g} | N | kept @{b:g}" for b in budgets) + " |"
    lines = [header, "|" + "---|" * (1 + 3 * len(budgets))]
    for row in rows:
        parts = [row]
        for budget in budgets:
            values = cells[row].get(budget, [])
            parts.append(_rate_cell(values) if rate else _mean_cell(values))
            parts.append(str(len(values)))
            fractions = kept[row].get(budget, [])
            parts.append(f"{sum(fractions) / len(fractions):.3f}" if fractions else "—")
        lines.append("| " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test p-value for paired wins against losses (ties dropped)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_table(
    records: Iterable[Record],
    metric: str,
    reference: str,
    budgets: Sequence[float],
    *,
    where: Callable[[Record], bool] = lambda r: True,
    order: Sequence[str] = (),
) -> str:
    """Every row against ``reference`` (a row label) on the items both have: ``+wins/-losses``
    (items only the reference / only the row got right) and the sign test's p.

    Why paired: rows share their items, so per-item differences are what tell methods
    apart; two overlapping intervals can hide a consistent 10-to-1 split.
    """
    outcome: dict[str, dict[float, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for record in records:
        if not where(record) or record.get(metric) is None or record["method"] in ("full", "kv_full"):
            continue
        outcome[label(record)][float(record["budget"])][record["item_id"]] = float(record[metric])
    if reference not in outcome:
        return f"_no {reference} records_\n"
    rank = {name: index for index, name in enumerate(order)}
    rows = sorted(
        (r for r in outcome if r != reference), key=lambda row: (rank.get(row.split(" (")[0], len(rank)), row)
    )
    lines = [
        f"| vs {reference} | " + " | ".join(f"@{b:g} +/- (N) | p" for b in budgets) + " |",
        "|" + "---|" * (1 + 2 * len(budgets)),
    ]
    for row in rows:
        parts = [row]
        for budget in budgets:
            mine, theirs = outcome[row].get(budget, {}), outcome[reference].get(budget, {})
            shared = sorted(set(mine) & set(theirs))
            wins = sum(1 for item in shared if mine[item] > theirs[item])
            losses = sum(1 for item in shared if mine[item] < theirs[item])
            parts += [f"+{wins}/-{losses} ({len(shared)})", f"{sign_test(wins, losses):.3f}"] if shared else ["—", "—"]
        lines.append("| " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def cost_table(records: Iterable[Record], where: Callable[[Record], bool] = lambda r: True) -> str:
    """Per method, length and budget: compression s, TTFT s, decode tok/s, peak KV, peak RSS."""
    groups: dict[tuple[str, int, float], list[Record]] = defaultdict(list)
    for record in records:
        if where(record) and record.get("ttft_s") is not None:
            groups[(label(record), int(record["length"]), float(record["budget"]))].append(record)
    if not groups:
        return "_no timed records_\n"
    lines = [
        "| method | length | budget | N | prompt tokens | compression s | TTFT s [95 % CI] | decode tok/s "
        "| peak KV MiB | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (row, length, budget), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):

        def mean(field: str, group: list[Record] = group) -> float:
            return sum(float(r[field]) for r in group) / len(group)

        lines.append(
            f"| {row} | {length} | {budget:g} | {len(group)} | {mean('prompt_tokens'):.0f} | "
            f"{mean('compression_s'):.2f} | {_mean_cell([float(r['ttft_s']) for r in group])} | "
            f"{mean('decode_tok_s'):.1f} | {mean('kv_bytes_peak') / 2**20:.1f} | "
            f"{max(float(r['peak_memory_bytes']) for r in group) / 2**30:.2f} |"
        )
    return "\n".join(lines) + "\n"


def write_section(path: Path, body: str, title: str = "## Benchmark suite") -> None:
    """Replace the text between this suite's markers in ``path`` (append them if absent).

    Other engineers own the rest of the file; nothing outside the markers is touched.
    """
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{START}\n{title}\n\n{body.rstrip()}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    path.write_text(text, encoding="utf-8")
