"""KV-cache methods compared by the benchmark, all through SpecKV's public API.

Methods (``kv_`` prefix) and how each maps onto :class:`~specrag.SpecKV`:

``kv_full``      no eviction (budget larger than any prompt).
``kv_knorm``     lowest key norms (Devoto et al. 2024): ``draft=None, policy="knorm"``.
``kv_snapkv``    window-only target attention: ``draft=None, policy="snapkv"``.
``kv_speckv``    draft answer as lookahead: ``draft=<draft>``.
``kv_speckv_overlap`` the same, with ``overlap_draft=True``: the draft writes its answer in a
                 worker thread while the target prefills (same tokens; with ``--threads 1``
                 the draft gets a second core, as a draft on a device of its own would).
``kv_oracle``    the target's own answer as lookahead: ``draft=<target>`` (upper bound).
``kv_speckv_pc`` SpecPC (keep 0.5 of the documents) then SpecKV on the shortened prompt.
``kv_streaming`` sinks + recent window (StreamingLLM): ``draft=None,
                 policy="streaming"`` (the first 4 prompt entries plus the most recent
                 ones; no draft, no attention scoring).

:data:`UNAVAILABLE` lists rows SpecKV's API cannot run; it is empty now, and kept so a row
without a SpecKV mode is reported as not measured (:class:`KVMethodUnavailable`) rather
than approximated behind SpecKV's back.

The KV budget is a fraction of the full prompt's target tokens (cache entries per layer),
never below SpecKV's window; the kept fraction reported is budget / prompt tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.models import LoadedModel
from ..core.speckv import SpecKV, SpecKVResult
from ..core.specpc import SpecPC

KV_METHODS = (
    "kv_full",
    "kv_streaming",
    "kv_knorm",
    "kv_snapkv",
    "kv_speckv",
    "kv_speckv_overlap",
    "kv_oracle",
    "kv_speckv_pc",
)
KV_DRAFT_METHODS = frozenset({"kv_speckv", "kv_speckv_overlap", "kv_speckv_pc"})
LOOKAHEAD_METHODS = frozenset({"kv_speckv", "kv_speckv_overlap", "kv_oracle", "kv_speckv_pc"})
"""Rows whose eviction is scored from a lookahead answer, so ``lookahead=`` changes them."""


def fixed_lookahead(method: str, lookahead: int | None) -> int | None:
    """``lookahead`` where it changes ``method`` (a row in :data:`LOOKAHEAD_METHODS`), else None."""
    return lookahead if method in LOOKAHEAD_METHODS else None


UNAVAILABLE: dict[str, str] = {}
"""Method name -> why SpecKV cannot run it (such rows are reported as not measured)."""
SPECKV_PC_KEEP = 0.5
NO_EVICTION = 1 << 30


class KVMethodUnavailable(RuntimeError):
    """The method has no counterpart in SpecKV's API; the row is reported as not measured."""


@dataclass
class KVMethod:
    """Builds a SpecKV engine for a given cache budget (SpecKV takes the budget at construction)."""

    name: str
    target: LoadedModel
    draft: LoadedModel | None
    compressor: SpecPC | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    """:class:`~specrag.SpecKVSettings` fields that define the method (e.g. ``policy``)."""

    def engine(self, budget: int) -> SpecKV:
        if self.compressor is not None:
            return SpecKV(self.target, None, budget=budget, compressor=self.compressor, **self.settings)
        return SpecKV(self.target, self.draft, budget=budget, **self.settings)

    def kv_budget(self, prompt_tokens: int, ratio: float | None) -> int:
        """Cache entries at ``ratio`` of the prompt; the full cache when ``ratio`` is None."""
        if ratio is None or self.name == "kv_full":
            return NO_EVICTION
        return kv_entries(prompt_tokens, ratio)


def kv_entries(prompt_tokens: int, ratio: float) -> int:
    """Cache entries per layer at ``ratio`` of a prompt (never below 32, SpecKV's floor):
    every KV row, SpecKV's and kvpress's, is held to this number."""
    return max(32, int(ratio * prompt_tokens + 0.5))


def make_kv_method(
    name: str, *, target: LoadedModel, draft: LoadedModel | None, lookahead: int | None = None
) -> KVMethod:
    """Build method ``name`` (see :data:`KV_METHODS`).

    ``lookahead`` fixes how many answer tokens score the cache for the rows in
    :data:`LOOKAHEAD_METHODS` (None: SpecKV's default, ``min(max_new_tokens, 64)``); the
    other rows have no lookahead and ignore it.

    Raises
    ------
    KVMethodUnavailable
        For rows SpecKV cannot run (see :data:`UNAVAILABLE`).
    ValueError
        For an unknown name or a missing draft.
    """
    if name in UNAVAILABLE:
        raise KVMethodUnavailable(UNAVAILABLE[name])
    if name in KV_DRAFT_METHODS and draft is None:
        raise ValueError(f"method {name!r} needs a draft model")
    if name == "kv_full":
        return KVMethod(name, target, None)
    if name == "kv_streaming":
        return KVMethod(name, target, None, settings={"policy": "streaming"})
    if name == "kv_knorm":
        return KVMethod(name, target, None, settings={"policy": "knorm"})
    if name == "kv_snapkv":
        return KVMethod(name, target, None, settings={"policy": "snapkv"})
    scoring = {} if lookahead is None else {"lookahead": lookahead}
    if name == "kv_speckv":
        return KVMethod(name, target, draft, settings=scoring)
    if name == "kv_speckv_overlap":
        return KVMethod(name, target, draft, settings={**scoring, "overlap_draft": True})
    if name == "kv_oracle":
        return KVMethod(name, target, target, settings=scoring)
    if name == "kv_speckv_pc":
        assert draft is not None
        compressor = SpecPC(draft, keep_ratio=SPECKV_PC_KEEP, progress=False)
        return KVMethod(name, target, None, compressor=compressor, settings=scoring)
    raise ValueError(f"unknown KV method {name!r}; expected one of {KV_METHODS}")


def kv_figures(result: SpecKVResult) -> dict[str, float | int | str]:
    """Cost figures of one generation: time to first token, decode speed, cache bytes,
    and the draft's answer that scored the cache (what to read when a row goes wrong).

    The peak cache is the prefill's: eviction happens once, after the prompt has been
    held in full (plus the draft answer while it is scored), so bytes per entry times the
    prompt length bounds it; ``kv_bytes`` is what remained at the end.
    """
    entries_at_end = max(1, sum(result.cache_entries))
    per_entry = result.kv_bytes / entries_at_end if result.kv_bytes else 0.0
    layers = max(1, len(result.cache_entries))
    peak = int(per_entry * layers * (result.prompt_tokens + result.lookahead_tokens))
    return {
        "ttft_s": result.time_to_first_token,
        "draft_s": result.draft_seconds,
        "prefill_s": result.prefill_seconds,
        "decode_tok_s": result.decode_tokens_per_second,
        "kv_bytes_end": result.kv_bytes,
        "kv_bytes_full": result.full_kv_bytes,
        "kv_bytes_peak": peak,
        "prompt_tokens": result.prompt_tokens,
        "lookahead_tokens": result.lookahead_tokens,
        "draft_answer": result.draft_answer,
    }
