"""The multi-hop task family and the peers run through their own code."""

from __future__ import annotations

from collections import Counter

import numpy as np

from specrag.bench.budget import select, target_units
from specrag.bench.multihop import MULTIHOP_RELATIONS, check_sample, multihop_sample
from specrag.bench.peers import BM25Sentences, LangChainEmbeddingsFilter, LlamaIndexOptimizer
from specrag.bench.tasks import BenchItem, build_items
from specrag.core.models import tiny_tokenizer


def test_items_hold_their_invariants_and_reach_the_length() -> None:
    tokenizer = tiny_tokenizer()
    for seed in range(48):
        sample = multihop_sample(1024, tokenizer, seed)
        check_sample(sample)  # evidence in exactly one document each; bridge not in the question
        total = sum(len(tokenizer.encode(text, add_special_tokens=False)) for text in sample.documents)
        assert total >= 1024


def test_consecutive_items_balance_relations_and_wording() -> None:
    items = build_items(["multihop"], [512], 16, 0, tiny_tokenizer())
    assert Counter(item.meta["relation"] for item in items) == {name: 4 for name in MULTIHOP_RELATIONS}
    assert Counter(item.meta["qtype"] for item in items) == {"lexical": 8, "coref": 8}
    assert all(len(item.evidence) == 2 and item.answers[0] in item.evidence[1] for item in items)
    again = build_items(["multihop"], [512], 16, 0, tiny_tokenizer())
    assert [item.documents for item in items] == [item.documents for item in again]  # deterministic


def _item(documents: tuple[str, ...], question: str) -> BenchItem:
    return BenchItem("t", "t-0", 0, documents, question, ("x",))


DOCS = (
    "Wading birds feed on the mudflats at low tide. The estuary freezes in hard winters.",
    "The viaduct has fourteen arches. It was built of gritstone between 1884 and 1887.",
)


def test_bm25_keeps_the_sentence_sharing_the_questions_words() -> None:
    units = target_units(tiny_tokenizer(), DOCS)
    keys = BM25Sentences().score(_item(DOCS, "How many arches does the viaduct have?"), units)
    assert keys[0][1].max() > keys[0][0].max()  # the viaduct sentence outranks both bird sentences
    kept = select(units, keys, 0.3)
    assert "The viaduct has fourteen arches." in kept.texts[1]


def test_langchain_embeddings_filter_ranks_through_its_own_pipeline() -> None:
    units = target_units(tiny_tokenizer(), DOCS)
    keys = LangChainEmbeddingsFilter(chunk_size=60).score(_item(DOCS, "How many arches does the viaduct have?"), units)
    assert np.all(np.isfinite(np.concatenate(keys[0])))
    kept = select(units, keys, 0.3)
    assert "arches" in kept.texts[1]


def test_llama_index_optimizer_row_reports_what_it_really_returns() -> None:
    tokenizer = tiny_tokenizer()
    units = target_units(tokenizer, DOCS)

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    optimizer = LlamaIndexOptimizer()
    item = _item(DOCS, "How many arches does the viaduct have?")
    # two sentences per node: int(2 * 0.1) == 0, and LlamaIndex then keeps every sentence
    low = optimizer.compress(item, units, 0.1, count)
    assert all(sentence in low.texts[1] for sentence in DOCS[1].split(". "))
    assert low.kept_tokens >= units.total_tokens * 0.9 > low.budget  # far over the budget: reported, not cut
    assert low.kept_fraction == low.kept_tokens / units.total_tokens
    half = optimizer.compress(item, units, 0.5, count)
    assert "arches" in half.texts[1]
