"""Paired comparisons in the benchmark report: sign test and win/loss counts."""

from __future__ import annotations

import statistics

import pytest

from specrag.bench.report import bootstrap, paired_table, sign_test


def test_sign_test_exact_values() -> None:
    assert sign_test(10, 1) == pytest.approx(2 * (1 + 11) / 2**11)
    assert sign_test(0, 0) == 1.0
    assert sign_test(3, 3) == 1.0
    assert sign_test(0, 5) == sign_test(5, 0) == pytest.approx(2 / 2**5)


def _record(item: int, method: str, budget: float, contained: bool) -> dict[str, object]:
    return {"item_id": f"i{item}", "method": method, "draft": None, "budget": budget, "contained": contained}


def test_paired_table_counts_only_shared_items() -> None:
    records = [_record(i, "sentence", 0.1, i < 5) for i in range(10)]
    records += [_record(i, "specpc", 0.1, i >= 2) for i in range(12)]  # items 10, 11 unpaired
    records += [_record(i, "full", 1.0, True) for i in range(10)]  # the reference row is not compared
    table = paired_table(records, "contained", "sentence", (0.1,))
    row = next(line for line in table.splitlines() if line.startswith("| specpc"))
    # specpc gets 5..9 that sentence misses (+5) and misses 0..1 that sentence gets (-2), on 10 shared.
    assert "+5/-2 (10)" in row
    assert f"{sign_test(5, 2):.3f}" in row
    assert "full" not in table
    assert paired_table(records, "contained", "oracle", (0.1,)).startswith("_no oracle")


def test_bootstrap_interval_of_a_median_brackets_it_and_ignores_one_outlier() -> None:
    # Per-item time ratios: one slow outlier (a busy CPU) moves the mean's interval far
    # more than the median's, which is why the KV tables bootstrap the median.
    ratios = [1.05, 1.08, 1.10, 1.02, 1.12, 1.07, 1.09, 1.04, 1.06, 3.0]
    low, high = bootstrap(ratios, statistic=statistics.median)
    assert low <= statistics.median(ratios) <= high
    assert high < 1.2
    assert bootstrap(ratios)[1] > 1.3  # the mean's interval reaches towards the outlier
    assert bootstrap(ratios, statistic=statistics.median) == (low, high)  # seeded
    assert bootstrap([]) == (0.0, 0.0)
