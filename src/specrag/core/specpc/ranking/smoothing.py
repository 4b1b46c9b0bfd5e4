"""Smoothing: a centred max-pool that spreads a peak onto its neighbours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .base import RankingContext


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


@dataclass(frozen=True)
class MaxPool:
    """Max-pool every document's scores with ``kernel`` (SpecPC's ``pool_kernel`` and,
    as a second pass, ``neighbourhood``: the tokens around a peak that rank with it).

    The pool runs in float32 (as the draft's scores are), then returns float64 so later
    steps compare exactly.
    """

    kernel: int
    tiebreak: bool = False
    name: ClassVar[str] = "max_pool"

    def apply(self, scores: list[np.ndarray], context: RankingContext) -> list[np.ndarray]:
        return [centred_max_pool(values, self.kernel).astype(np.float64) for values in scores]
