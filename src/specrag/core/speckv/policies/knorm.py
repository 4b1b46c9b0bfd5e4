"""Key-norm eviction: keep the entries whose keys have the smallest L2 norm.

Devoto et al. 2024 ("A Simple and Effective L2 Norm-Based Strategy for KV Cache
Compression", EMNLP 2024) observe that keys with a low L2 norm tend to receive high
attention, so the key norm alone predicts importance: no attention is read, no draft runs,
and scoring costs one norm per entry. A cheap baseline between StreamingLLM (positions only)
and SnapKV (the question's attention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import EntryScorer, ScoredPolicy


@dataclass(frozen=True)
class KeyNorm(ScoredPolicy):
    """Keep the window plus the entries with the lowest-norm keys, per KV head.

    Parameters
    ----------
    pool_kernel
        Centred max-pool width over the (negated) norms; 1 (default) keeps single entries,
        as the paper does.
    """

    name: ClassVar[str] = "knorm"

    def entry_scores(self, layer: int, keys: torch.Tensor, observer: EntryScorer | None) -> torch.Tensor:
        return -torch.linalg.vector_norm(keys.float(), dim=-1)
