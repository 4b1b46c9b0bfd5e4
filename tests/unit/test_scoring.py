"""Budget arithmetic, pooling and greedy selection on plain arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specrag.core.budget import resolve_budget
from specrag.core.specpc.ranking import centred_max_pool
from specrag.core.specpc.selection import fill_budget, rank_units


def test_centred_max_pool_spreads_a_peak_symmetrically() -> None:
    scores = np.zeros(11, dtype=np.float32)
    scores[5] = 1.0
    pooled = centred_max_pool(scores, 3)
    assert pooled.tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    assert centred_max_pool(scores, 4).sum() == 4  # even kernels keep the length too


@given(st.lists(st.floats(0, 1, width=32), min_size=1, max_size=60), st.integers(1, 70))
def test_centred_max_pool_is_a_windowed_max(values: list[float], kernel: int) -> None:
    scores = np.asarray(values, dtype=np.float32)
    pooled = centred_max_pool(scores, kernel)
    left = kernel // 2
    expected = [scores[max(0, i - left) : i + kernel - left].max() for i in range(len(scores))]
    assert pooled.shape == scores.shape
    np.testing.assert_array_equal(pooled, np.asarray(expected, dtype=np.float32))


@pytest.mark.parametrize(
    ("total", "ratio", "absolute", "expected"),
    [
        (10, 0.25, None, 3),
        (10, 1.0, None, 10),
        (3, 0.1, None, 0),
        (10, None, 4, 4),
        (10, None, 99, 10),
        (0, 0.5, None, 0),
    ],
)
def test_resolve_budget(total: int, ratio: float | None, absolute: int | None, expected: int) -> None:
    assert resolve_budget(total, ratio, absolute) == expected


@pytest.mark.parametrize(
    ("ratio", "absolute", "error", "word"),
    [
        (0.0, None, ValueError, "keep_ratio"),
        (1.5, None, ValueError, "keep_ratio"),
        (float("nan"), None, ValueError, "keep_ratio"),
        ("0.5", None, TypeError, "keep_ratio"),
        (None, -1, ValueError, "max_tokens"),
        (None, 2.5, TypeError, "max_tokens"),
        (None, True, TypeError, "max_tokens"),
        (0.5, 3, ValueError, "exactly one"),
        (None, None, ValueError, "exactly one"),
    ],
)
def test_resolve_budget_rejects_bad_arguments(ratio, absolute, error, word) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=word):
        resolve_budget(10, ratio, absolute)


def test_rank_units_orders_by_keys_then_position() -> None:
    ranking = rank_units(
        document=np.array([0, 0, 1, 1]),
        unit=np.array([0, 1, 0, 1]),
        size=np.array([1, 1, 1, 1]),
        keys=[np.array([0.5, 0.9, 0.9, 0.1]), np.array([0.0, 0.1, 0.2, 0.0])],
    )
    assert ranking.order.tolist() == [2, 1, 0, 3]


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(1, 5), st.floats(0, 1)), min_size=1, max_size=40), st.integers(0, 120))
def test_fill_budget_never_overspends_and_only_stops_when_nothing_fits(
    units: list[tuple[int, float]], budget: int
) -> None:
    sizes = np.array([size for size, _ in units])
    ranking = rank_units(
        np.zeros(len(units), dtype=np.int64), np.arange(len(units)), sizes, [np.array([s for _, s in units])]
    )
    kept, remaining = fill_budget(ranking, budget)
    spent = int(sizes[kept].sum())
    assert spent + remaining == budget
    assert spent <= budget
    if remaining:
        assert (sizes[~kept] > remaining).all() or spent == sizes.sum()
