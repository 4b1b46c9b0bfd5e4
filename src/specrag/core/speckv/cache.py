"""A transformers ``Cache`` whose full-attention layers can be cut down to a budget.

Why this shape
--------------
SpecKV keeps, per layer and per KV head, a *different* set of past entries. transformers'
layered cache (``Cache`` holding one ``CacheLayerMixin`` per layer) already owns everything
else a decode step needs (appending, mask sizes, rollback), so the budget lives in one small
:class:`BudgetedLayer` — a ``DynamicLayer`` that can additionally gather a subset of its
entries — and :class:`BudgetedCache` assembles those with transformers' own
``DynamicSlidingWindowLayer`` where a model has sliding-window layers that must stay intact.

Which layers can be evicted is one decision, made once per call by :func:`plan_layers`:

- ``full_attention`` layers are budgeted (evicted).
- ``sliding_attention`` layers are budgeted too *when the whole sequence the call can
  produce fits inside every sliding window*: the window then never hides anything, so the
  layer is a full-attention layer in all but name. Otherwise every sliding layer is left to
  transformers' ``DynamicSlidingWindowLayer`` and never evicted (it already holds at most
  ``window - 1`` entries); only the full-attention layers are budgeted then, and a model
  without any full-attention layer is refused.
- Anything else (linear attention, convolutions, chunked attention, KV sharing, indexed
  attention, bidirectional attention) is refused with :class:`UnsupportedModelError`: an
  approximation SpecKV cannot vouch for must not happen silently.

Keys keep the rotary embedding they were computed with; the caller supplies explicit
``position_ids`` so new tokens continue the *original* sequence although the cache is
shorter. transformers 5 derives mask sizes from the cache (``get_mask_sizes`` /
``get_query_offset``), not from positions, so a single-token decode step over an evicted
cache attends to every kept entry — which is what eviction intends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from transformers import PretrainedConfig
from transformers.cache_utils import (
    Cache,
    DynamicLayer,
    DynamicSlidingWindowLayer,
    get_layer_types_and_kwargs,
)

BUDGETED = "budgeted"
WINDOWED = "windowed"

_SERVED_TYPES = frozenset({"full_attention", "sliding_attention"})


class UnsupportedModelError(ValueError):
    """The model has layers whose cache SpecKV cannot evict without changing their meaning."""


@dataclass(frozen=True)
class LayerPlan:
    """What SpecKV does with each layer's cache during one call.

    Attributes
    ----------
    kinds
        Per layer, :data:`BUDGETED` (evicted to the budget) or :data:`WINDOWED`
        (transformers' sliding-window layer, never evicted).
    windows
        Per layer, the sliding window of a :data:`WINDOWED` layer, else ``None``.
    """

    kinds: tuple[str, ...]
    windows: tuple[int | None, ...]

    @property
    def budgeted_layers(self) -> tuple[int, ...]:
        """Indices of the layers that are evicted."""
        return tuple(index for index, kind in enumerate(self.kinds) if kind == BUDGETED)


def plan_layers(config: PretrainedConfig, sequence_length: int) -> LayerPlan:
    """Decide, per layer, whether its cache is budgeted or left to its sliding window.

    Parameters
    ----------
    config
        The target model's config (multimodal configs: their text part is used).
    sequence_length
        The longest sequence this call can feed the model (prompt + lookahead, or prompt +
        new tokens). Decides whether sliding windows can ever hide a token.

    Raises
    ------
    UnsupportedModelError
        For bidirectional attention, layer types other than full / sliding attention, or
        sliding windows that matter in a model without full-attention layers.
    """
    text_config = config.get_text_config(decoder=True)
    name = type(text_config).__name__
    if not getattr(text_config, "is_causal", True) or getattr(text_config, "use_bidirectional_attention", False):
        raise UnsupportedModelError(f"{name} uses bidirectional attention; SpecKV only serves causal decoders")
    layer_types, layer_kwargs = get_layer_types_and_kwargs(text_config)
    unsupported = sorted({kind for kind in layer_types if kind not in _SERVED_TYPES})
    if unsupported:
        where = [index for index, kind in enumerate(layer_types) if kind not in _SERVED_TYPES]
        raise UnsupportedModelError(
            f"{name} has {', '.join(unsupported)} layers (layers {where[:8]}"
            f"{' ...' if len(where) > 8 else ''}); SpecKV can only evict from full-attention "
            "layers and serve sliding-window layers, so it refuses this model rather than "
            "approximate it silently"
        )
    windows = [
        int(kwargs["sliding_window"]) if kind == "sliding_attention" else None
        for kind, kwargs in zip(layer_types, layer_kwargs, strict=True)
    ]
    sliding = [window for window in windows if window is not None]
    if not sliding or sequence_length <= min(sliding):
        # No window can hide a token in this call: every layer is a full-attention layer.
        return LayerPlan(kinds=(BUDGETED,) * len(layer_types), windows=(None,) * len(layer_types))
    if all(window is not None for window in windows):
        raise UnsupportedModelError(
            f"{name} has only sliding-window layers (window {min(sliding)}) and this call "
            f"needs {sequence_length} positions: there is no full-attention layer to evict "
            "from, and the window layers must keep their window. Shorten the prompt or "
            "max_new_tokens to fit the window, or use a model with full-attention layers"
        )
    return LayerPlan(
        kinds=tuple(WINDOWED if window is not None else BUDGETED for window in windows),
        windows=tuple(windows),
    )


class BudgetedLayer(DynamicLayer):
    """A ``DynamicLayer`` that can keep a per-KV-head subset of its entries.

    Every head keeps the same *number* of entries (so the tensors stay rectangular and any
    attention kernel can read them), but each head chooses its own positions.
    """

    def keep(self, indices: torch.Tensor) -> None:
        """Keep only the entries at ``indices``, a ``(batch, kv_heads, n)`` long tensor.

        Indices should be sorted per head so entries stay in sequence order; the
        protected recent window is then still the tail of the cache.
        """
        if not self.is_initialized or self.keys is None or self.values is None:
            raise RuntimeError("cannot evict from an empty cache layer")
        gather = indices.to(self.keys.device)[..., None].expand(-1, -1, -1, self.keys.shape[-1])
        self.keys = torch.gather(self.keys, 2, gather).contiguous()
        value_gather = (
            gather
            if self.values.shape[-1] == self.keys.shape[-1]
            else indices.to(self.values.device)[..., None].expand(-1, -1, -1, self.values.shape[-1])
        )
        self.values = torch.gather(self.values, 2, value_gather).contiguous()


class BudgetedCache(Cache):
    """One cache layer per model layer, as laid out by a :class:`LayerPlan`.

    Budgeted layers are :class:`BudgetedLayer`; windowed layers are transformers'
    ``DynamicSlidingWindowLayer``, exactly what ``DynamicCache(config=...)`` would build.
    """

    def __init__(self, plan: LayerPlan) -> None:
        layers: list[DynamicLayer] = [
            BudgetedLayer() if kind == BUDGETED else DynamicSlidingWindowLayer(sliding_window=int(window))  # type: ignore[arg-type]
            for kind, window in zip(plan.kinds, plan.windows, strict=True)
        ]
        super().__init__(layers=layers)  # type: ignore[arg-type]
        self.plan = plan

    @property
    def _kv_layers(self) -> list[DynamicLayer]:
        """``self.layers`` as ``__init__`` built them: every one is a ``DynamicLayer``."""
        return cast("list[DynamicLayer]", self.layers)

    def keep(self, layer_idx: int, indices: torch.Tensor) -> None:
        """Evict: keep only ``indices`` (``(batch, kv_heads, n)``) of a budgeted layer."""
        layer = self.layers[layer_idx]
        if not isinstance(layer, BudgetedLayer):
            raise ValueError(f"layer {layer_idx} is not budgeted; it keeps its sliding window")
        layer.keep(indices)

    def layer_keys(self, layer_idx: int) -> torch.Tensor:
        """The keys a layer holds, ``(batch, kv_heads, entries, dim)``."""
        keys = self._kv_layers[layer_idx].keys
        if keys is None:
            raise RuntimeError(f"layer {layer_idx} holds nothing yet")
        return keys

    def start_rollback(self) -> None:
        """Make the next ``rollback`` exact for sliding-window layers too.

        A ``DynamicSlidingWindowLayer`` normally forgets what falls out of its window; with
        past recording on it keeps those entries until :meth:`rollback` crops them back.
        """
        self.activate_past_recording()

    def rollback(self, tokens: int) -> None:
        """Remove the last ``tokens`` entries of every layer (the draft answer's)."""
        if tokens > 0:
            self.crop(-tokens)
        for layer in self.layers:
            if isinstance(layer, DynamicSlidingWindowLayer) and layer.record_past:
                # Back to the normal rolling window: decoding never rolls back.
                layer.crop(0)
                layer.record_past = False

    def entries(self) -> list[int]:
        """Entries each layer holds now (what attention reads per KV head)."""
        return [
            0 if layer.keys is None or layer.keys.numel() == 0 else int(layer.keys.shape[-2])
            for layer in self._kv_layers
        ]

    def entry_bytes(self) -> list[int]:
        """Bytes one entry (key + value, all KV heads) takes, per layer; 0 if empty."""
        sizes = []
        for layer in self._kv_layers:
            keys, values = layer.keys, layer.values
            if keys is None or values is None or keys.numel() == 0:
                sizes.append(0)
                continue
            per_key = keys.shape[0] * keys.shape[1] * keys.shape[-1] * keys.element_size()
            per_value = values.shape[0] * values.shape[1] * values.shape[-1] * values.element_size()
            sizes.append(int(per_key + per_value))
        return sizes

    def kv_bytes(self) -> int:
        """Bytes of keys and values held across all layers."""
        return sum(n * size for n, size in zip(self.entries(), self.entry_bytes(), strict=True))
