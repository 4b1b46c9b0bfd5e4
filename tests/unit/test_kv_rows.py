"""Pairing of KV rows: the per-cell tables and the summary must compare the same items."""

from __future__ import annotations

import pytest

from specrag.bench.kv_rows import kv_rows


def _kv(item: int, method: str, budget: float, em: float, task: str = "niah_multikey") -> dict[str, object]:
    return {
        "kind": "kv",
        "task": task,
        "item_id": f"i{item}",
        "method": method,
        "draft": None,
        "budget": budget,
        "em": em,
    }


def test_rows_are_paired_over_the_items_every_row_has() -> None:
    records = [_kv(i, "kv_full", 1.0, 1.0) for i in range(6)]
    records += [_kv(i, "kv_snapkv", 0.1, float(i < 2)) for i in range(6)]
    records += [_kv(i, "kv_speckv", 0.1, float(i != 3)) for i in range(5)]  # item 5 not run yet
    records += [_kv(i, "kv_speckv", 0.25, 0.0) for i in range(6)]  # another budget: not this table's
    table = kv_rows(records, 0.1)
    assert table.items == ["i0", "i1", "i2", "i3", "i4"]
    assert table.hits("kv_speckv") == 4 and table.hits("kv_snapkv") == 2
    assert table.paired("kv_speckv", "kv_snapkv") == (2, 0)
    assert table.paired("kv_speckv", "kv_full") == (0, 1)
    assert table.best_press is None


def test_best_press_is_the_most_accurate_and_ties_break_by_name() -> None:
    records = [_kv(i, "kv_full", 1.0, 1.0) for i in range(4)]
    records += [_kv(i, "kvpress_tova", 0.1, float(i < 3)) for i in range(4)]
    records += [_kv(i, "kvpress_snapkv", 0.1, float(i < 1)) for i in range(4)]
    assert kv_rows(records, 0.1).best_press == "kvpress_tova"
    records += [_kv(i, "kvpress_streaming_llm", 0.1, float(i < 3)) for i in range(4)]
    assert kv_rows(records, 0.1).best_press == "kvpress_tova"  # 'tova' sorts after 'streaming_llm'


def test_no_common_item_is_refused_with_the_budget_and_task() -> None:
    records = [_kv(0, "kv_full", 1.0, 1.0), _kv(1, "kv_speckv", 0.1, 1.0)]
    with pytest.raises(SystemExit, match="no item has every row at budget 0.1 for task 'niah_multikey'"):
        kv_rows(records, 0.1, task="niah_multikey")
    with pytest.raises(SystemExit, match="no item has every row"):
        kv_rows([_kv(0, "kv_full", 1.0, 1.0, task="quoref")], 0.1, task="niah_multikey")
