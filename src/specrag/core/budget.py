"""Budget arithmetic and validation: the one place a budget becomes a number of tokens.

What each budget means
----------------------
Every budget is named after what it counts; this table is the one place they are defined.

``keep_ratio`` (SpecPC, its adapters, the CLI ``--keep``)
    Fraction of the documents' draft tokens to keep, in ``(0, 1]``; rounds half up.
``max_tokens`` (SpecPC, ``SpecPCCompressor``, ``SpecPCPostprocessor``, the trimmer, the CLI)
    Document tokens to keep, absolute, in the draft's tokenizer. Question and instruction
    are never cut and do not count. ``CompressionResult.budget`` is the number a call
    resolved to. Either way the kept tokens never exceed the budget and fall short of it by
    less than the smallest word unit left out: words, numbers and grapheme clusters are
    kept whole or not at all (:mod:`specrag.core.specpc.selection`).
``budget`` (SpecKV, ``ChatSpecKV``, ``SpecKVLLM``; ``SpecKVResult.budget``)
    KV-cache entries each budgeted layer keeps after prefill (one entry = one position's
    key and value for all KV heads of a layer), in the target's tokens.
``max_new_tokens`` (SpecKV; ``max_tokens`` in ``ChatSpecKV`` and ``SpecKVLLM``, the name
every LangChain / LlamaIndex chat model uses for it)
    Tokens to generate.
"""

from __future__ import annotations

import numpy as np


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
        wanted = validate_max_tokens(max_tokens)
    return min(wanted, total_tokens)


def resolve_call_budget(
    keep_ratio: float | None,
    max_tokens: int | None,
    default: tuple[float | None, int | None] = (0.25, None),
) -> tuple[float | None, int | None]:
    """The ``(keep_ratio, max_tokens)`` pair a call uses: the one given, else ``default``.

    Raises
    ------
    ValueError, TypeError
        If both are given, or the one given is invalid.
    """
    if keep_ratio is not None and max_tokens is not None:
        raise ValueError("give keep_ratio or max_tokens, not both")
    if keep_ratio is not None:
        validate_keep_ratio(keep_ratio)
        return keep_ratio, None
    if max_tokens is not None:
        return None, validate_max_tokens(max_tokens)
    return default


def validate_keep_ratio(keep_ratio: object) -> float:
    """``keep_ratio`` as a float in ``(0, 1]``, or a one-line error saying what it must be."""
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)):
        raise TypeError(f"keep_ratio must be a number in (0, 1], got {type(keep_ratio).__name__}")
    if not 0.0 < float(keep_ratio) <= 1.0 or np.isnan(keep_ratio):
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    return float(keep_ratio)


def validate_max_tokens(max_tokens: object) -> int:
    """``max_tokens`` as an int ``>= 0``, or a one-line error saying what it must be."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)):
        raise TypeError(f"max_tokens must be an int >= 0, got {type(max_tokens).__name__}")
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    return int(max_tokens)
