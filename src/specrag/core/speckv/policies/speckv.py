"""SpecKV: a draft's approximate answer tells which entries generation will need.

Draft-based Approximate Inference for LLMs (arXiv 2506.08373): the draft writes the answer
first; the target prefills it after the prompt, and the attention its answer queries (plus
the prompt's last ``window``) pay to the prompt scores the cache. SnapKV with lookahead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .snapkv import SnapKV


@dataclass(frozen=True)
class DraftAttention(SnapKV):
    """SnapKV's scoring, with the queries of a draft answer added.

    Parameters
    ----------
    pool_kernel, reduction, query_chunk
        As for :class:`~specrag.core.speckv.policies.snapkv.SnapKV`.
    lookahead
        Draft answer tokens whose queries score; ``None`` = ``min(max_new_tokens,
        max_lookahead)``; 0 = no draft runs (SnapKV).
    max_lookahead
        Cap on the automatic lookahead: the draft's generation is SpecKV's main cost and
        its first tokens carry most of the signal (``docs/speckv.md``).
    """

    lookahead: int | None = None
    max_lookahead: int = 64

    name: ClassVar[str] = "speckv"
    uses_draft: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lookahead is not None and (
            isinstance(self.lookahead, bool) or not isinstance(self.lookahead, int) or self.lookahead < 0
        ):
            raise ValueError(f"lookahead must be None or an int >= 0, got {self.lookahead!r}")
        if isinstance(self.max_lookahead, bool) or not isinstance(self.max_lookahead, int) or self.max_lookahead < 1:
            raise ValueError(f"max_lookahead must be an int >= 1, got {self.max_lookahead!r}")

    def lookahead_tokens(self, max_new_tokens: int) -> int:
        """Draft tokens to generate for a call that may write ``max_new_tokens``."""
        if self.lookahead is not None:
            return self.lookahead
        return min(max_new_tokens, self.max_lookahead)
