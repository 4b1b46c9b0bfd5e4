"""Per-KV-head importance of cache entries, and which entries to keep.

SpecKV's scores differ from SpecPC's (:mod:`specrag.attention`) in one way that matters:
every KV head keeps its own entries, so scores are reduced over the query heads *of one KV
group* and over queries, never across KV heads. Everything here is a plain tensor function
or a small observer implementing :class:`specrag.core.attention.AttentionObserver` (and
:class:`specrag.core.speckv.policies.EntryScorer`: it can then score a layer's entries), so it can be
tested without a model and plugged into the scoped capture without touching attention code.

Memory stays ``O(heads * query_chunk * keys)`` per call: the ``keys x keys`` matrix is never
materialised.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ..attention import AttentionObserver

Reduction = Literal["max", "mean"]


def kv_head_scores(
    query: torch.Tensor,
    key: torch.Tensor,
    *,
    scaling: float,
    num_keys: int | None = None,
    reduction: Reduction = "max",
    query_chunk: int = 16,
) -> torch.Tensor:
    """Softmax attention of some queries, reduced to one score per KV head and key.

    The queries are taken to be the *last* ``n`` positions of the key sequence, so query
    ``i`` sees keys ``0 .. k_len - n + i`` (causal). Softmax runs in fp32 over every key the
    query sees, per query head; then the heads of one KV group and the queries are reduced.

    Parameters
    ----------
    query
        ``(batch, heads, n, dim)`` after RoPE.
    key
        ``(batch, kv_heads, k_len, dim)`` after RoPE.
    scaling
        The model's attention scaling (``dim ** -0.5`` for most models).
    num_keys
        Score only keys ``[0, num_keys)`` (the prompt); default all.
    reduction
        ``"max"`` (the paper's) or ``"mean"`` over group heads and queries.
    query_chunk
        Queries processed at once; bounds the transient fp32 tensor.

    Returns
    -------
    torch.Tensor
        ``(batch, kv_heads, num_keys)`` fp32 scores in ``[0, 1]``.
    """
    batch, n_heads, n_queries, dim = query.shape
    n_kv, k_len = key.shape[1], key.shape[2]
    if n_heads % n_kv:
        raise ValueError(f"{n_heads} query heads cannot be grouped onto {n_kv} KV heads")
    if n_queries > k_len:
        raise ValueError(f"{n_queries} queries cannot be the tail of {k_len} keys")
    width = k_len if num_keys is None else min(num_keys, k_len)
    group = n_heads // n_kv
    keys_t = key.float().transpose(-1, -2).unsqueeze(2)  # (B, Hkv, 1, D, K)
    grouped = query.float().reshape(batch, n_kv, group, n_queries, dim)
    total = torch.zeros(batch, n_kv, width, dtype=torch.float32, device=query.device)
    key_positions = torch.arange(k_len, device=query.device)
    for start in range(0, n_queries, max(1, query_chunk)):
        stop = min(start + max(1, query_chunk), n_queries)
        logits = torch.matmul(grouped[:, :, :, start:stop, :], keys_t) * scaling
        query_positions = k_len - n_queries + torch.arange(start, stop, device=query.device)
        logits.masked_fill_(key_positions[None, :] > query_positions[:, None], float("-inf"))
        probs = torch.softmax(logits, dim=-1)[..., :width]  # (B, Hkv, G, chunk, width)
        if reduction == "max":
            torch.maximum(total, probs.amax(dim=(2, 3)), out=total)
        else:
            total += probs.sum(dim=(2, 3))
    if reduction == "mean":
        total /= group * n_queries
    return total


def pool_scores(scores: torch.Tensor, kernel: int) -> torch.Tensor:
    """Centred 1-D max-pool along the last axis, same length.

    A strongly attended token pulls its neighbours up with it, so the kept set is made of
    short contiguous runs (phrases) rather than isolated tokens that lost their context.
    """
    if kernel < 1:
        raise ValueError(f"kernel must be >= 1, got {kernel}")
    if kernel == 1 or scores.shape[-1] == 0:
        return scores.clone()
    shape = scores.shape
    flat = scores.reshape(-1, 1, shape[-1])
    left = kernel // 2
    padded = F.pad(flat, (left, kernel - 1 - left), value=float("-inf"))
    return F.max_pool1d(padded, kernel_size=kernel, stride=1).reshape(shape)


def keep_indices(scores: torch.Tensor, keep: int, protect_last: int) -> torch.Tensor:
    """Positions to keep per KV head: the last ``protect_last`` plus the best of the rest.

    Parameters
    ----------
    scores
        ``(batch, kv_heads, n)`` importance of the ``n`` entries.
    keep
        Entries to keep per head (``protect_last <= keep <= n``).
    protect_last
        The most recent entries, always kept (the question / the latest tokens).

    Returns
    -------
    torch.Tensor
        ``(batch, kv_heads, keep)`` long tensor, ascending per head so entries stay in
        sequence order and the protected tail stays the tail.
    """
    batch, heads, n = scores.shape
    if not 0 <= protect_last <= keep <= n:
        raise ValueError(f"need 0 <= protect_last ({protect_last}) <= keep ({keep}) <= n ({n})")
    tail = torch.arange(n - protect_last, n, device=scores.device).expand(batch, heads, -1)
    chosen = keep - protect_last
    if chosen == 0:
        return tail.clone()
    best = torch.topk(scores[..., : n - protect_last], chosen, dim=-1, sorted=False).indices
    return torch.cat([torch.sort(best, dim=-1).values, tail], dim=-1)


def sink_and_recent_indices(
    entries: int, keep: int, sinks: int, *, batch: int, kv_heads: int, device: torch.device
) -> torch.Tensor:
    """Positions StreamingLLM keeps: the first ``sinks`` entries plus the last ``keep - sinks``.

    The first tokens of a sequence soak up attention mass that has nowhere else to go
    ("attention sinks", Xiao et al. 2023): dropping them degrades every later step, while
    keeping them plus a recent window keeps decoding stable at zero scoring cost. Positions
    only, so every KV head keeps the same ones; the result has :func:`keep_indices`' shape
    and order and goes through the same gather (:meth:`BudgetedCache.keep`).

    Parameters
    ----------
    entries
        Entries the layer holds now (``n``).
    keep
        Entries to keep per head (``sinks <= keep <= entries``).
    sinks
        Leading entries always kept.
    batch, kv_heads, device
        Shape and device of the index tensor.

    Returns
    -------
    torch.Tensor
        ``(batch, kv_heads, keep)`` long tensor, ascending.
    """
    if not 0 <= sinks <= keep <= entries:
        raise ValueError(f"need 0 <= sinks ({sinks}) <= keep ({keep}) <= entries ({entries})")
    positions = torch.cat(
        [
            torch.arange(sinks, device=device),
            torch.arange(entries - (keep - sinks), entries, device=device),
        ]
    )
    return positions.expand(batch, kv_heads, -1).clone()


class DraftGuidedScores:
    """Observer folding, per layer and KV head, the attention the importance queries pay.

    Importance queries are those at positions ``>= num_keys - window``: the last ``window``
    prompt tokens and every draft-answer token after the prompt. That one rule covers both
    forwards SpecKV runs (prompt, then draft answer on top of the cached prompt), so the
    observer needs no notion of phases. Only keys ``[0, num_keys)`` (the prompt) are scored;
    draft-answer entries are dropped anyway.

    Parameters
    ----------
    num_keys
        Prompt length.
    window
        Last prompt positions whose queries score.
    layers
        Layer indices to score (the budgeted ones); others are ignored.
    reduction
        ``"max"`` or ``"mean"`` over group heads and queries.
    query_chunk
        See :func:`kv_head_scores`.
    """

    def __init__(
        self,
        num_keys: int,
        window: int,
        layers: set[int] | frozenset[int],
        reduction: Reduction = "max",
        query_chunk: int = 16,
    ) -> None:
        self.num_keys = num_keys
        self.window = window
        self.layers = frozenset(layers)
        self.reduction: Reduction = reduction
        self.query_chunk = query_chunk
        self._totals: dict[int, torch.Tensor] = {}
        self._counts: dict[int, int] = {}

    def observe(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, scaling: float | None) -> None:
        """Score keys with the importance queries among ``query`` (see the class notes)."""
        if layer_idx not in self.layers:
            return
        q_len, k_len = query.shape[2], key.shape[2]
        first_position = k_len - q_len
        first_scored = max(first_position, self.num_keys - self.window)
        n_scored = k_len - first_scored
        if n_scored <= 0:
            return
        scores = kv_head_scores(
            query[:, :, q_len - n_scored :, :],
            key,
            scaling=scaling if scaling is not None else query.shape[-1] ** -0.5,
            num_keys=self.num_keys,
            reduction=self.reduction,
            query_chunk=self.query_chunk,
        )
        if self.reduction == "mean":
            scores = scores * n_scored  # back to a sum, so chunks average correctly
        previous = self._totals.get(layer_idx)
        if previous is None:
            self._totals[layer_idx] = scores
        elif self.reduction == "max":
            torch.maximum(previous, scores, out=previous)
        else:
            previous += scores
        self._counts[layer_idx] = self._counts.get(layer_idx, 0) + n_scored

    def result(self, layer_idx: int) -> torch.Tensor:
        """``(batch, kv_heads, num_keys)`` scores of a layer; raises if it was never seen."""
        if layer_idx not in self._totals:
            raise RuntimeError(
                f"no attention was captured for layer {layer_idx}: the model does not route it "
                "through transformers' AttentionInterface, so SpecKV cannot score its cache"
            )
        total = self._totals[layer_idx]
        return total / self._counts[layer_idx] if self.reduction == "mean" else total

    def scores(self, layer_idx: int, keys: torch.Tensor) -> torch.Tensor:
        """Scores of the layer's first ``keys.shape[2]`` entries (the prompt, once the
        draft-answer entries are rolled back)."""
        return self.result(layer_idx)[..., : keys.shape[2]]


class RecentQueries:
    """Observer remembering, per layer, the queries of the last ``window`` tokens fed.

    Used to re-score the cache during long generations: the most recent tokens' queries
    stand in for the draft answer, which no longer describes what is being written. Their
    keys are the cache's last entries (eviction always keeps them, in order), which is what
    :func:`kv_head_scores` assumes.
    """

    def __init__(
        self,
        window: int,
        layers: set[int] | frozenset[int],
        reduction: Reduction = "max",
        query_chunk: int = 16,
    ) -> None:
        self.window = window
        self.layers = frozenset(layers)
        self.reduction: Reduction = reduction
        self.query_chunk = query_chunk
        self._queries: dict[int, torch.Tensor] = {}
        self._scaling: dict[int, float] = {}

    def observe(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, scaling: float | None) -> None:
        """Append the layer's newest queries, keeping only the last ``window``."""
        if layer_idx not in self.layers:
            return
        tail = query[:, :, -self.window :, :].detach()
        previous = self._queries.get(layer_idx)
        merged = tail if previous is None else torch.cat([previous, tail], dim=2)
        self._queries[layer_idx] = merged[:, :, -self.window :, :].clone()
        self._scaling[layer_idx] = scaling if scaling is not None else query.shape[-1] ** -0.5

    def scores(self, layer_idx: int, key: torch.Tensor) -> torch.Tensor:
        """``(batch, kv_heads, entries)`` importance of a layer's current cache entries."""
        if layer_idx not in self._queries:
            raise RuntimeError(f"no recent queries were captured for layer {layer_idx}")
        queries = self._queries[layer_idx]
        queries = queries[:, :, -min(queries.shape[2], key.shape[2]) :, :]
        return kv_head_scores(
            queries,
            key,
            scaling=self._scaling[layer_idx],
            reduction=self.reduction,
            query_chunk=self.query_chunk,
        )


class FanOut:
    """Hands every observation to several observers (one capture scope holds one)."""

    def __init__(self, *observers: AttentionObserver) -> None:
        self.observers = observers

    def observe(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, scaling: float | None) -> None:
        for observer in self.observers:
            observer.observe(layer_idx, query, key, scaling)
