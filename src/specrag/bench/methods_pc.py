"""Prompt-compression methods compared by the benchmark, all scoring target-token units.

Every method turns an item into ranking keys over the item's target-tokenizer word units
(:class:`~specrag.bench.budget.Units`); :func:`~specrag.bench.budget.select` does the rest,
so all methods return verbatim spans within the same budget in target tokens. Scoring is
done once per item and reused for every budget: the draft pass does not depend on the budget.

Methods
-------
``full``      everything (budget ignored; the reference row).
``truncate``  the first units (documents in order).
``random``    units in a seeded random order.
``sentence``  sentences ranked by all-MiniLM cosine similarity to the question.
``selfinfo``  units ranked by the draft's mean surprisal (Selective-Context style).
``window``    window-only draft attention, SnapKV's recipe: the question's queries, every
              layer, a 7-wide max-pool, no neighbourhood widening.
``specpc``    SpecPC's scores with its tuned defaults (start layer a third of the depth,
              63-wide composed max-pool, linearly weighted window queries).
``specpc_snap``   SpecPC with ``snap="sentence"``: sentences (long ones as clause runs) rank
                  by their best token and are kept whole.
``specpc_fused``  SpecPC with all-MiniLM sentence relevance fused with the draft's attention
                  (percentile ranks, relevance at half the weight; :mod:`specrag.fusion`),
                  sentence-snapped.
``specpc_max``    as ``specpc_fused`` with ``fusion="max"``: each token keeps the better of its
                  attention and relevance percentile ranks.
``specpc_bridge``  ``specpc_max`` plus the bridge round (``bridge=True``): relevance to the
                  question plus the round-1 best sentence and the two after it.
``oracle``    SpecPC with the *target* as draft: what the answering model itself attends to.
``lc_filter``, ``bm25``, ``li_optimizer``  the peers, through their own code
              (:mod:`specrag.bench.peers`).

Both ``window`` and ``specpc`` use ``lookahead=1`` (prefill queries only): with the plain
``Answer:`` template the SmolLM2 draft's first greedy token is its end-of-turn token in most
items (docs/tuning.md), so lookahead adds nothing there. What separates the rows is the
scoring recipe (layers, weighting, smoothing), not lookahead. Real lookahead, with the draft
answering in its chat frame (``SpecPC(chat=True, lookahead=16)``), was measured apart in
``benchmarks/specpc_ablation.py``: at most 2 points with the 135M draft, so no row uses it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from ..core.embeddings import Embedder, sentence_relevance
from ..core.models import LoadedModel
from ..core.segmentation import tokenize_document
from ..core.specpc import ScoredContext, SpecPC
from .budget import Selection, Units, select, token_scores_to_units, unit_positions
from .peers import PEER_METHODS, LlamaIndexOptimizer, make_peer
from .tasks import BenchItem

Keys = list[list[np.ndarray]]

PC_METHODS = (
    "full",
    "truncate",
    "random",
    "sentence",
    "selfinfo",
    "window",
    "specpc",
    "specpc_snap",
    "specpc_fused",
    "specpc_max",
    "specpc_bridge",
    "specpc_shallow",
    "oracle",
    *PEER_METHODS,
)
DRAFT_METHODS = frozenset(
    {"selfinfo", "window", "specpc", "specpc_snap", "specpc_fused", "specpc_max", "specpc_bridge", "specpc_shallow"}
)
"""Methods whose scores depend on the draft (their result key includes the draft's name)."""


class PCMethod(Protocol):
    """Scores an item's target units; higher is kept first."""

    name: str

    def score(self, item: BenchItem, units: Units) -> Keys: ...


@dataclass
class Scored:
    """Ranking keys of one item under one method, with the seconds scoring took.

    ``sentence_tokens`` is the method's unit cap when it keeps whole sentences and clauses
    (SpecPC with ``snap="sentence"``), ``None`` when it keeps word units.
    """

    keys: Keys
    seconds: float
    sentence_tokens: int | None = None


class Full:
    """Keeps everything; :func:`score` still returns keys so the code path is shared."""

    name = "full"

    def score(self, item: BenchItem, units: Units) -> Keys:
        return [unit_positions(units)]


class Truncate:
    """The first tokens of the context, the baseline every serving stack has for free."""

    name = "truncate"

    def score(self, item: BenchItem, units: Units) -> Keys:
        return [unit_positions(units)]


class RandomUnits:
    """Units in a random order seeded by the item, so reruns keep the same picks."""

    name = "random"

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def score(self, item: BenchItem, units: Units) -> Keys:
        rng = np.random.default_rng(random.Random(f"{self.seed}:{item.item_id}").getrandbits(63))
        return [[rng.random(doc.num_units) for doc in units.tokens]]


class SentenceSimilarity:
    """Whole sentences, most similar to the question first (embedding retrieval inside a
    prompt, as RAG pipelines filter chunks). Units of a sentence rank together, in order."""

    name = "sentence"

    def __init__(self, embed: Embedder) -> None:
        self.embed = embed

    def score(self, item: BenchItem, units: Units) -> Keys:
        unit_starts = [units.unit_bounds(index)[0] for index in range(len(units.documents))]
        primary = sentence_relevance(self.embed, item.question, units.documents, unit_starts)
        return [primary, unit_positions(units)]


class SelfInformation:
    """Selective-Context style: keep what the draft finds least predictable.

    Each document is read by the draft after a short header; a token's surprisal is
    ``-log p(token | preceding text)``; a unit scores the mean surprisal of its tokens. The
    question plays no part, which is the method's known weakness for QA.
    """

    name = "selfinfo"

    def __init__(self, draft: LoadedModel) -> None:
        self.draft = draft
        tokenizer = draft.tokenizer
        with_special = tokenizer.encode("a", add_special_tokens=True)
        without = tokenizer.encode("a", add_special_tokens=False)
        bos = with_special[: len(with_special) - len(without)] if with_special[-len(without) :] == without else []
        self.prefix = list(bos) + tokenizer.encode("Documents:\n\n", add_special_tokens=False)

    @torch.inference_mode()
    def score(self, item: BenchItem, units: Units) -> Keys:
        primary = []
        limit = self.draft.max_positions or 8192
        for index, text in enumerate(units.documents):
            doc = tokenize_document(self.draft.tokenizer, text)
            if doc.num_tokens == 0:
                primary.append(np.zeros(units.tokens[index].num_units))
                continue
            ids = (self.prefix + doc.ids.tolist())[:limit]
            tensor = torch.tensor([ids], dtype=torch.long, device=self.draft.device)
            logits = self.draft.model(tensor).logits[0, :-1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            targets = tensor[0, 1:]
            surprisal = -logprobs.gather(1, targets[:, None])[:, 0].cpu().numpy()
            mine = surprisal[len(self.prefix) - 1 :]
            count = mine.shape[0]
            primary.append(token_scores_to_units(units, index, doc.token_anchors[:count], mine, how="mean"))
        return [primary, unit_positions(units)]


class DraftAttention:
    """Attention-based scoring through SpecPC's own scorer, carried onto target units.

    ``settings`` are :class:`~specrag.SpecPCSettings` fields. The ranking keys mirror
    SpecPC's selection (widened pool, then pool, then raw score), so with a draft that shares
    the target's tokenizer this reproduces :meth:`SpecPC.compress` up to unit boundaries.
    """

    def __init__(
        self,
        name: str,
        draft: LoadedModel,
        embedder: Embedder | None = None,
        shared: dict[tuple[Any, ...], ScoredContext] | None = None,
        **settings: Any,
    ) -> None:
        self.name = name
        self.pc = SpecPC(draft, progress=False, embedder=embedder, **settings)
        snap = self.pc.settings.snap == "sentence"
        self.sentence_tokens = self.pc.settings.max_sentence_tokens if snap else None
        self.shared = shared if shared is not None else {}
        self.reused_seconds = 0.0

    def score(self, item: BenchItem, units: Units) -> Keys:
        # One draft pass through SpecPC's public scorer and ranking keys; selection happens
        # here instead, because the benchmark budgets in the *target's* tokens. Rows whose
        # draft pass is the same (only ranking settings differ) share it through ``shared``;
        # its seconds are charged to each of them (``reused_seconds``).
        pass_key = (item.item_id, self.pc.draft_pass)
        earlier = self.shared.get(pass_key)
        scored = self.pc.score(list(units.documents), item.question, reuse=earlier)
        self.reused_seconds = earlier.seconds if earlier is not None else 0.0
        if earlier is None:
            for old in [k for k in self.shared if k[0] != item.item_id]:  # one item at a time
                del self.shared[old]
            self.shared[pass_key] = scored
        keys: Keys = [[], [], []]
        for index, token_keys in enumerate(self.pc.token_keys(scored)):
            doc = scored.tokenized[index]
            if doc is None or token_keys is None:
                for key in keys:
                    key.append(np.zeros(units.tokens[index].num_units))
                continue
            for key, values in zip(keys, token_keys):
                key.append(token_scores_to_units(units, index, doc.token_anchors, values))
        return keys


def make_pc_method(
    name: str,
    *,
    draft: LoadedModel | None,
    target: LoadedModel | None,
    embed: Embedder | None,
    seed: int,
    shared: dict[tuple[Any, ...], ScoredContext] | None = None,
) -> PCMethod | LlamaIndexOptimizer:
    """Build method ``name`` (see :data:`PC_METHODS`) from the models it needs.

    ``shared``: one dict for all methods of a run, through which SpecPC rows with the same
    draft pass score each item with one pass (:meth:`SpecPC.score` ``reuse=``).

    Raises
    ------
    ValueError
        For an unknown name or a missing model.
    """
    if name == "full":
        return Full()
    if name in PEER_METHODS:
        return make_peer(name)
    if name == "truncate":
        return Truncate()
    if name == "random":
        return RandomUnits(seed)
    if name in ("sentence", "specpc_fused", "specpc_max", "specpc_bridge", "specpc_shallow") and embed is None:
        from ..core.embeddings import embed as minilm_embed

        embed = minilm_embed
    if name == "sentence":
        assert embed is not None
        return SentenceSimilarity(embed)
    if name in DRAFT_METHODS and draft is None:
        raise ValueError(f"method {name!r} needs a draft model")
    if name == "selfinfo":
        assert draft is not None
        return SelfInformation(draft)
    if name == "window":
        assert draft is not None
        return DraftAttention(
            "window", draft, shared=shared, start_layer=0, pool_kernel=7, neighbourhood=1, snap="word"
        )
    if name == "specpc":
        assert draft is not None
        return DraftAttention("specpc", draft, shared=shared, snap="word")  # explicit: rows keep their meaning
    if name == "specpc_snap":
        assert draft is not None
        return DraftAttention(name, draft, shared=shared, snap="sentence")
    if name == "specpc_fused":
        assert draft is not None
        return DraftAttention(
            name, draft, shared=shared, embedder=embed, snap="sentence", fusion="sum", relevance_weight=0.5
        )
    if name == "specpc_max":
        assert draft is not None
        return DraftAttention(name, draft, shared=shared, embedder=embed, snap="sentence", fusion="max", bridge=False)
    if name in ("specpc_bridge", "specpc_shallow"):
        assert draft is not None
        # 0.2's default ranking; specpc_shallow runs it over a truncated draft (layers 3-10 of 30).
        depth: dict[str, int] = {}
        if name == "specpc_shallow":
            depth = {"start_layer": draft.num_layers // 9, "draft_layers": draft.num_layers // 3}
        return DraftAttention(
            name, draft, shared=shared, embedder=embed, snap="sentence", fusion="max", bridge=True, **depth
        )
    if name == "oracle":
        if target is None:
            raise ValueError("method 'oracle' needs the target model")
        return DraftAttention("oracle", target, shared=shared, snap="word")
    raise ValueError(f"unknown prompt-compression method {name!r}; expected one of {PC_METHODS}")


def compress_at_budgets(
    method: PCMethod | LlamaIndexOptimizer,
    item: BenchItem,
    units: Units,
    budgets: Sequence[float],
    count_tokens: Callable[[str], int],
) -> dict[float, tuple[Selection, float]]:
    """Each budget's selection and the seconds it cost: one scoring pass shared by all
    budgets and the shared selector, or, for a peer that sets its own length
    (``li_optimizer``), its own output per budget."""
    out: dict[float, tuple[Selection, float]] = {}
    if isinstance(method, LlamaIndexOptimizer):
        for budget in budgets:
            started = time.perf_counter()
            selection = method.compress(item, units, budget, count_tokens)
            out[budget] = (selection, time.perf_counter() - started)
        return out
    scored = timed_score(method, item, units)
    for budget in budgets:
        started = time.perf_counter()
        selection = select(units, scored.keys, budget, scored.sentence_tokens)
        out[budget] = (selection, scored.seconds + time.perf_counter() - started)
    return out


def timed_score(method: PCMethod, item: BenchItem, units: Units) -> Scored:
    """Score and time one item (the time is charged to every budget's compression)."""
    started = time.perf_counter()
    keys = method.score(item, units)
    seconds = time.perf_counter() - started
    if isinstance(method, DraftAttention):
        return Scored(keys, seconds + method.reused_seconds, method.sentence_tokens)
    return Scored(keys, seconds)
