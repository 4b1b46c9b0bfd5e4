"""Pure functions from per-token attention scores to a kept set of word units.

Kept apart from the model code so the budget and ordering rules can be tested on plain
arrays, without a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def centred_max_pool(scores: np.ndarray, kernel: int) -> np.ndarray:
    """Centred 1-D max-pool that keeps the length: ``out[i] = max(scores[i-k//2 : i+k-k//2])``.

    Smoothing spreads a peak onto its neighbours, so a whole phrase around a strongly
    attended token ranks together instead of as isolated tokens.
    """
    if kernel < 1:
        raise ValueError(f"kernel must be >= 1, got {kernel}")
    if kernel == 1 or scores.size == 0:
        return scores.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))[None, None, :]
    left = kernel // 2
    padded = F.pad(tensor, (left, kernel - 1 - left), value=float("-inf"))
    return F.max_pool1d(padded, kernel_size=kernel, stride=1)[0, 0].numpy()


def resolve_budget(total_tokens: int, keep_ratio: float | None, max_tokens: int | None) -> int:
    """Number of document tokens to keep. The one place budget arithmetic happens.

    ``keep_ratio`` rounds half up (``0.25 * 10 -> 3``); ``max_tokens`` is taken as is. Either
    way the budget never exceeds what is there.
    """
    if (keep_ratio is None) == (max_tokens is None):
        raise ValueError("give exactly one of keep_ratio or max_tokens")
    if keep_ratio is not None:
        validate_keep_ratio(keep_ratio)
        wanted = int(np.floor(keep_ratio * total_tokens + 0.5))
    else:
        validate_max_tokens(max_tokens)
        wanted = int(max_tokens)  # type: ignore[arg-type]
    return min(wanted, total_tokens)


def validate_keep_ratio(keep_ratio: object) -> None:
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)):
        raise TypeError(f"keep_ratio must be a number in (0, 1], got {type(keep_ratio).__name__}")
    if not 0.0 < float(keep_ratio) <= 1.0 or np.isnan(keep_ratio):
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")


def validate_max_tokens(max_tokens: object) -> None:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)):
        raise TypeError(f"max_tokens must be an int >= 0, got {type(max_tokens).__name__}")
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")


@dataclass(frozen=True)
class UnitRanking:
    """Word units of all documents, flattened, with what selection needs to know."""

    document: np.ndarray  # document index of each unit
    unit: np.ndarray  # unit index inside its document
    size: np.ndarray  # draft tokens per unit
    order: np.ndarray  # unit positions (into the arrays above), best first


def rank_units(
    document: np.ndarray,
    unit: np.ndarray,
    size: np.ndarray,
    keys: list[np.ndarray],
) -> UnitRanking:
    """Order units by ``keys`` (each higher-is-better, first key most significant); ties go
    to the earlier unit so the result is deterministic."""
    position = np.arange(document.shape[0])
    # np.lexsort sorts by the *last* key first and ascending: negate and reverse.
    order = np.lexsort([position] + [-key for key in reversed(keys)])
    return UnitRanking(document=document, unit=unit, size=size, order=order)


def fill_budget(ranking: UnitRanking, budget: int) -> tuple[np.ndarray, int]:
    """Greedily take whole units in rank order while they fit.

    Returns the boolean "kept" mask over units and the tokens still unspent (non-zero only
    when every unit left is larger than what remains; the caller may then take part of one).
    """
    kept = np.zeros(ranking.size.shape[0], dtype=bool)
    remaining = budget
    smallest_left = int(ranking.size.min()) if ranking.size.size else 0
    for index in ranking.order:
        if remaining == 0 or remaining < smallest_left:
            break
        cost = int(ranking.size[index])
        if cost <= remaining:
            kept[index] = True
            remaining -= cost
    return kept, remaining
