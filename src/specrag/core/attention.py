"""Scoped capture of window-query attention through transformers' ``AttentionInterface``.

Why this shape
--------------
SpecPC needs, for a handful of query positions (the question's last tokens and any lookahead
tokens), the softmax attention they pay to every key. Asking the model for
``output_attentions=True`` would force the eager kernel and materialise an L x L matrix per
layer. Instead we register one extra attention implementation, ``specrag_<inner>``, that runs
the model's usual kernel (``sdpa``, ``eager``, flash ...) unchanged and, *only while a
:class:`AttentionCapture` is active in the current context*, recomputes the attention of the
last few queries against all keys in fp32. Nothing global is patched: the registered function
is a pure pass-through when no capture is active, and the active capture lives in a
:class:`contextvars.ContextVar`, so two threads compressing with the same draft each see only
their own scores.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel

_PREFIX = "specrag_"


class AttentionObserver(Protocol):
    """What a capturing attention function hands queries and keys to.

    ``query`` is ``(batch, heads, q_len, dim)`` after RoPE; ``key`` is
    ``(batch, kv_heads, k_len, dim)`` including cached keys. Implementations must only read
    them: the model's own attention output is computed from the same tensors.
    """

    def observe(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, scaling: float | None) -> None: ...


_ACTIVE_CAPTURE: contextvars.ContextVar[AttentionObserver | None] = contextvars.ContextVar(
    "specrag_active_capture", default=None
)
_REGISTRATION_LOCK = threading.Lock()


class StopForward(Exception):
    """Raised by :class:`AttentionCapture` after its last layer, to end a forward early.

    SpecPC needs neither logits nor the layers after the last scored one (``draft_layers``);
    the caller catches this around the model call.
    """


class AttentionCapture:
    """Accumulates per-key importance from the attention of selected queries.

    The score of a key is the max, over scored layers, heads and observed queries, of the
    (query-weighted) softmax probability that query assigns to it — the reduction SpecPC
    uses. Only keys ``[0, num_keys)`` are tracked: keys appended later by lookahead decoding
    are the draft's own answer and are never candidates for keeping.

    Parameters
    ----------
    num_keys:
        Length of the prompt whose keys are scored.
    window:
        How many of the *last* prompt queries score keys during the prefill call.
    start_layer:
        Layers with a smaller index are ignored (early layers attend diffusely).
    query_chunk:
        Window queries are processed in chunks of this size so the transient
        ``heads x chunk x keys`` fp32 tensor stays small on long inputs.
    end_layer:
        If set, layers from this index on are not needed: after observing layer
        ``end_layer - 1`` the capture raises :class:`StopForward`, so the rest of the forward
        (later layers, the LM head) never runs.
    row_windows, key_mask:
        For a left-padded batch of prompts: each row's own window (its question may be
        shorter than ``window``), and ``(batch, num_keys)`` True where a key is a real token.
        Padding keys then get no attention, so each row scores as it would alone.
    """

    def __init__(
        self,
        num_keys: int,
        window: int,
        start_layer: int = 0,
        query_chunk: int = 16,
        end_layer: int | None = None,
        *,
        row_windows: list[int] | None = None,
        key_mask: torch.Tensor | None = None,
    ):
        if num_keys <= 0:
            raise ValueError(f"num_keys must be positive, got {num_keys}")
        if window <= 0 or (row_windows is not None and min(row_windows) <= 0):
            raise ValueError(f"window must be positive, got {window} (rows: {row_windows})")
        self.num_keys = num_keys
        self.window = window if row_windows is None else max(row_windows)
        self.row_windows = row_windows
        self.key_mask = key_mask
        self.start_layer = start_layer
        self.query_chunk = max(1, query_chunk)
        self.end_layer = end_layer
        self.scores: torch.Tensor | None = None
        self.layers_seen: set[int] = set()

    def observe(
        self,
        layer_idx: int,
        query: torch.Tensor,
        key: torch.Tensor,
        scaling: float | None,
    ) -> None:
        """Fold one layer's attention from the last queries into the running score.

        ``query`` is ``(batch, heads, q_len, dim)`` after RoPE and ``key`` is
        ``(batch, kv_heads, k_len, dim)`` including any cached keys, exactly as
        transformers hands them to an attention function.
        """
        if layer_idx < self.start_layer:
            return
        q_len, k_len = query.shape[2], key.shape[2]
        if q_len == 1:
            # A lookahead (decode) step: the new token sees every key, weight 1.
            n_scored, weights = 1, torch.ones(1, device=query.device)
        else:
            n_scored = min(self.window, q_len)
            windows = self.row_windows or [n_scored]
            weights = torch.stack([_window_weights(min(w, n_scored), n_scored, query.device) for w in windows])
        mask = self.key_mask
        if mask is not None and mask.shape[1] < k_len:  # lookahead keys are always real
            mask = torch.nn.functional.pad(mask, (0, k_len - mask.shape[1]), value=True)
        layer_scores = window_attention_scores(
            query[:, :, q_len - n_scored :, :],
            key,
            scaling=scaling if scaling is not None else query.shape[-1] ** -0.5,
            query_weights=weights,
            chunk=self.query_chunk,
            key_mask=mask,
        )[:, : min(self.num_keys, k_len)]
        self._fold(layer_scores)
        self.layers_seen.add(layer_idx)
        if self.end_layer is not None and layer_idx >= self.end_layer - 1:
            raise StopForward

    def _fold(self, layer_scores: torch.Tensor) -> None:
        if self.scores is None:
            self.scores = torch.zeros(
                layer_scores.shape[0], self.num_keys, dtype=torch.float32, device=layer_scores.device
            )
        width = layer_scores.shape[1]
        torch.maximum(self.scores[:, :width], layer_scores, out=self.scores[:, :width])

    def result(self) -> torch.Tensor:
        """Return ``(batch, num_keys)`` fp32 scores; raises if no layer was observed."""
        if self.scores is None:
            raise RuntimeError(
                "No attention was captured. The model either does not route attention through "
                "transformers' AttentionInterface or has fewer layers than start_layer="
                f"{self.start_layer}."
            )
        return self.scores


def _window_weights(window: int, width: int, device: torch.device) -> torch.Tensor:
    """Weights of the last ``width`` queries when only the last ``window`` of them score:
    zeros, then a ramp from 0 to 1 (later queries have read more of the question); a
    window of one query weighs 1."""
    ramp = torch.ones(1, device=device) if window == 1 else torch.linspace(0.0, 1.0, window, device=device)
    return torch.cat([torch.zeros(width - window, device=device), ramp])


def window_attention_scores(
    query: torch.Tensor,
    key: torch.Tensor,
    *,
    scaling: float,
    query_weights: torch.Tensor,
    chunk: int = 16,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention of a few queries over all keys, reduced to one score per key.

    Queries are assumed to be the *last* ``n`` positions of the key sequence (causal inside
    that window). GQA is handled by grouping query heads onto their KV head, so keys are
    never repeated. Work is done in fp32 and in query chunks: memory is
    ``O(heads * chunk * k_len)``, never ``O(k_len^2)``.

    ``query_weights`` is ``(n,)``, or ``(batch, n)`` for one set per row; ``key_mask``
    (``(batch, k_len)``, True for real tokens) takes padding keys out of every softmax.

    Returns
    -------
    torch.Tensor
        ``(batch, k_len)``: max over heads and queries of ``weight[q] * softmax(q k^T)``.
    """
    batch, n_heads, n_queries, dim = query.shape
    n_kv, k_len = key.shape[1], key.shape[2]
    if n_heads % n_kv:
        raise ValueError(f"{n_heads} query heads cannot be grouped onto {n_kv} KV heads")
    group = n_heads // n_kv
    keys = key.float().transpose(-1, -2)  # (B, Hkv, D, K)
    grouped = query.float().reshape(batch, n_kv, group, n_queries, dim)
    best = torch.zeros(batch, k_len, dtype=torch.float32, device=query.device)
    key_positions = torch.arange(k_len, device=query.device)
    weights = query_weights.float().reshape(-1, n_queries)  # (1 or B, n)
    padding = None if key_mask is None else ~key_mask.bool()[:, None, None, None, :]  # (B, 1, 1, 1, K)
    for start in range(0, n_queries, chunk):
        stop = min(start + chunk, n_queries)
        logits = torch.matmul(grouped[:, :, :, start:stop, :], keys.unsqueeze(2)) * scaling
        # Query i of the window sits at absolute position k_len - n_queries + i.
        query_positions = k_len - n_queries + torch.arange(start, stop, device=query.device)
        future = key_positions[None, :] > query_positions[:, None]  # (chunk, K)
        logits.masked_fill_(future, float("-inf"))
        if padding is not None:
            logits.masked_fill_(padding, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if padding is not None:  # a padding query sees only padding: its softmax is NaN, weight 0
            probs = torch.nan_to_num(probs, nan=0.0)
        probs = probs * weights[:, None, None, start:stop, None]
        best = torch.maximum(best, probs.amax(dim=(1, 2, 3)))
    return best


ObserverT = TypeVar("ObserverT", bound=AttentionObserver)


@contextmanager
def capture_attention(capture: ObserverT) -> Iterator[ObserverT]:
    """Make ``capture`` receive attention from models using a ``specrag_*`` implementation.

    Scoped to the current thread / asyncio task; restores the previous capture on exit, so
    captures can nest and never leak.
    """
    token = _ACTIVE_CAPTURE.set(capture)
    try:
        yield capture
    finally:
        _ACTIVE_CAPTURE.reset(token)


def _make_capturing(inner_name: str) -> Callable[..., Any]:
    def attention(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        **kwargs: Any,
    ) -> Any:
        output = ALL_ATTENTION_FUNCTIONS[inner_name](module, query, key, value, attention_mask, **kwargs)
        capture = _ACTIVE_CAPTURE.get()
        # A sliding-window layer longer than its window only sees a local band; scoring it
        # over all keys would invent attention it never paid, so it is skipped then.
        band = getattr(module, "sliding_window", None)
        if capture is not None and not (band and key.shape[2] > band):
            capture.observe(int(getattr(module, "layer_idx", 0)), query, key, kwargs.get("scaling"))
        return output

    attention.__name__ = f"{_PREFIX}{inner_name}_attention"
    return attention


def enable_capture(model: PreTrainedModel) -> str:
    """Route ``model``'s attention through a capturing wrapper of its current kernel.

    Idempotent and cheap. Outputs are bit-identical to the original kernel: the wrapper
    only *reads* queries and keys, and only while :func:`capture_attention` is active.
    Returns the implementation name now in use.
    """
    current = model.config._attn_implementation or "eager"
    if current.startswith(_PREFIX):
        return current
    if current == "eager":
        # Eager lives in each modeling file, not in the shared registry; sdpa computes the
        # same function and every AttentionInterface model supports it.
        current = "sdpa"
    name = f"{_PREFIX}{current}"
    with _REGISTRATION_LOCK:
        if name not in ALL_ATTENTION_FUNCTIONS:
            if current not in ALL_ATTENTION_FUNCTIONS:
                raise ValueError(f"Unknown attention implementation {current!r}; cannot wrap it")
            AttentionInterface.register(name, _make_capturing(current))
            AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[current])
        model.set_attn_implementation(name)
    if model.config._attn_implementation != name:
        raise ValueError(
            f"{type(model).__name__} does not accept pluggable attention functions; "
            "SpecPC needs a model that uses transformers' AttentionInterface"
        )
    return name
