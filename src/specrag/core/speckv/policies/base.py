"""What an eviction policy is: how SpecKV scores and picks the KV entries each layer keeps.

A policy is a small frozen dataclass carrying only its own settings. SpecKV asks it three
things, and nothing else about eviction lives in the engine:

- :attr:`EvictionPolicy.uses_draft`: does it read the queries of a draft's approximate
  answer, appended after the prompt? (Only then does SpecKV run the draft.)
- :meth:`EvictionPolicy.observer`: what it watches while the target runs. An
  :class:`EntryScorer` sees every layer's queries and keys through the scoped attention
  capture (:mod:`specrag.core.attention`) and can then score that layer's cache entries.
  ``None``: the policy needs no attention (it decides from positions or keys alone), and no
  attention is captured.
- :meth:`EvictionPolicy.select`: given a layer's cached keys, how many entries to keep and
  the observer it asked for, which entries (per KV head) stay.

Selection runs once after prefill and, with ``rescore_every``, during decoding (phase
``"decode"``: the observer then watches the newest tokens). Every policy's indices go
through the same gather (:meth:`~specrag.core.speckv.cache.BudgetedCache.keep`), so
positions, masks and byte counts behave identically whatever the policy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

import torch

from ..attention_scores import keep_indices, pool_scores

Phase = Literal["prefill", "decode"]


class EntryScorer(Protocol):
    """An attention observer that can then score one layer's cache entries."""

    def observe(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, scaling: float | None) -> None: ...

    def scores(self, layer_idx: int, keys: torch.Tensor) -> torch.Tensor:
        """``(batch, kv_heads, entries)`` importance of the entries whose keys are ``keys``
        (``(batch, kv_heads, entries, dim)``); higher is kept first."""
        ...


@dataclass(frozen=True)
class EvictionPolicy(ABC):
    """Base of every eviction policy (see the module notes for the contract).

    Subclasses set :attr:`name` (the registry key, ``SpecKV(policy=name)``), may set
    :attr:`uses_draft`, and implement :meth:`select`; :meth:`observer` defaults to none.

    ``window`` (SpecKV's setting, passed to every method) is the number of most recent
    entries the engine keeps whatever the policy says: the question at the end of the
    prompt, or the latest tokens while decoding. Policies may use it as their query window.
    """

    name: ClassVar[str]
    uses_draft: ClassVar[bool] = False

    def observer(self, phase: Phase, *, prompt_length: int, window: int, layers: frozenset[int]) -> EntryScorer | None:
        """What to watch during the forwards of ``phase``; ``None`` captures nothing."""
        return None

    @abstractmethod
    def select(
        self, layer: int, keys: torch.Tensor, keep: int, window: int, observer: EntryScorer | None
    ) -> torch.Tensor:
        """Entries of ``layer`` to keep: ``(batch, kv_heads, keep)`` long indices into the
        layer's ``entries`` axis, ascending per head, the last ``min(window, keep)`` entries
        included (unless the policy documents another rule)."""

    def check_keep(self, keep: int, described: str = "budget") -> None:
        """Refuse, before any work, a number of kept entries the policy cannot honour
        (``described`` says in the error where ``keep`` comes from). Default: any."""
        return None


@dataclass(frozen=True)
class ScoredPolicy(EvictionPolicy):
    """A policy that scores every entry and keeps the window plus the best-scored others.

    Subclasses implement :meth:`entry_scores`; scores are smoothed with a centred max-pool
    of ``pool_kernel`` (1: none) before the top-k, so kept entries form short runs.
    """

    pool_kernel: int = 1

    @abstractmethod
    def entry_scores(self, layer: int, keys: torch.Tensor, observer: EntryScorer | None) -> torch.Tensor:
        """``(batch, kv_heads, entries)`` importance, higher kept first."""

    def select(
        self, layer: int, keys: torch.Tensor, keep: int, window: int, observer: EntryScorer | None
    ) -> torch.Tensor:
        scores = pool_scores(self.entry_scores(layer, keys, observer), self.pool_kernel)
        return keep_indices(scores, keep, min(window, keep))
