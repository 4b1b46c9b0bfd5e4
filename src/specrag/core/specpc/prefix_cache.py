"""Prefix reuse: the draft's KV cache of prompts it has read, kept for the next request.

Why
---
A follow-up question over the same documents, or an agent's next turn over a history that
only grew at the end, sends the draft a prompt whose first thousands of tokens it has just
read. Their keys and values do not depend on what follows (the draft is causal), so the
draft need only forward the tokens after the longest common token-id prefix with a prompt
it has seen: the new documents and the question. Scores match a fresh pass up to
floating-point summation order.

Shape
-----
A small LRU of ``(token ids, DynamicCache)`` per SpecPC instance (its draft-pass settings
are fixed), bounded by bytes of cached keys and values. Lookups and stores hold a lock; the
forward runs outside it, on a private copy of the cached prefix, so threads sharing a SpecPC
never see each other's half-written caches. Caches that cannot be cut back to a prefix
(sliding-window or recurrent layers) are not kept.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from transformers import DynamicCache


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common prefix of two token-id arrays."""
    n = min(a.shape[0], b.shape[0])
    if n == 0:
        return 0
    differs = np.flatnonzero(a[:n] != b[:n])
    return int(differs[0]) if differs.size else n


def cache_bytes(cache: DynamicCache) -> int:
    """Bytes held by a cache's keys and values."""
    total = 0
    for layer in cache.layers:
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if tensor is not None and hasattr(tensor, "nbytes"):
                total += int(tensor.nbytes)
    return total


@dataclass
class _Entry:
    ids: np.ndarray
    cache: DynamicCache
    size: int


class PrefixCache:
    """Bounded, thread-safe LRU of draft KV caches keyed by the prompts they hold.

    Parameters
    ----------
    max_bytes
        Keys and values kept in all, in bytes; the least recently used prompts go first. A
        single prompt larger than this is not kept. 0 disables reuse.
    min_reuse
        Shorter common prefixes are not worth a cache copy: the prompt is forwarded whole.
    """

    def __init__(self, max_bytes: int, min_reuse: int = 32) -> None:
        self.max_bytes = max_bytes
        self.min_reuse = min_reuse
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._next_key = 0
        self.hits = 0
        self.reused_tokens = 0

    @property
    def size(self) -> int:
        """Bytes now held."""
        with self._lock:
            return sum(entry.size for entry in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def lookup(self, ids: np.ndarray, limit: int) -> tuple[int, DynamicCache | None]:
        """The longest cached prefix of ``ids`` (at most ``limit`` tokens) and a private copy
        of its cache, cut to that length; ``(0, None)`` when nothing useful is cached."""
        if self.max_bytes <= 0:
            return 0, None
        with self._lock:
            best_key, best = None, 0
            for key, entry in self._entries.items():
                length = min(common_prefix(entry.ids, ids), limit)
                if length > best:
                    best_key, best = key, length
            if best_key is None or best < self.min_reuse:
                return 0, None
            entry = self._entries[best_key]
            self._entries.move_to_end(best_key)
            cache = copy.deepcopy(entry.cache)
            self.hits += 1
            self.reused_tokens += best
        held = cache.get_seq_length()
        if held > best:
            cache.crop(best - held)  # a negative count removes that many tokens from the end
        return best, cache

    def store(self, ids: np.ndarray, cache: DynamicCache) -> None:
        """Keep ``cache`` (holding exactly ``ids``), evicting least recently used prompts;
        the caller must not change ``cache`` afterwards."""
        if self.max_bytes <= 0 or not cache.is_croppable:
            return
        size = cache_bytes(cache)
        if size > self.max_bytes:
            return
        with self._lock:
            for key, entry in list(self._entries.items()):  # a prompt this one extends is now redundant
                if entry.ids.shape[0] <= ids.shape[0] and common_prefix(entry.ids, ids) == entry.ids.shape[0]:
                    del self._entries[key]
            self._entries[self._next_key] = _Entry(ids.copy(), cache, size)
            self._next_key += 1
            while sum(entry.size for entry in self._entries.values()) > self.max_bytes:
                self._entries.popitem(last=False)
