"""Readable units: sentence and clause groups, whole-group selection, token anchors, reuse."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from specrag import LoadedModel, SpecPC
from specrag.core.segmentation import DocumentTokens, tokenize_document
from specrag.core.sentences import sentence_spans
from specrag.core.specpc.grouping import MIN_GROUP_TOKENS, group_cap, sentence_groups
from specrag.core.specpc.selection import DocumentUnits, choose_units

LONG = (
    "The viaduct, which the railway company ordered in 1884, crosses the valley on fourteen arches, "
    "each of them built from local granite, and it carried its first train in 1889."
)


def group_texts(doc_text: str, doc: DocumentTokens, groups: np.ndarray) -> list[str]:
    out = []
    for group in np.unique(groups):
        units = np.flatnonzero(groups == group)
        out.append(doc_text[int(doc.unit_char_starts[units[0]]) : doc.unit_char_end(int(units[-1]))].strip())
    return out


def test_group_cap_follows_the_budget_within_bounds() -> None:
    assert group_cap(200, 48) == 48
    assert group_cap(30, 48) == 30
    assert group_cap(3, 48) == MIN_GROUP_TOKENS
    assert group_cap(200, 20) == 20


def test_short_sentences_are_one_group_each(llama: LoadedModel) -> None:
    text = "Ada wrote code. Bob fixed it! Was it done? Yes."
    doc = tokenize_document(llama.tokenizer, text)
    groups = sentence_groups(doc, cap=500)
    assert group_texts(text, doc, groups) == [text[a:b].strip() for a, b in sentence_spans(text)]


def test_a_long_sentence_splits_after_clause_marks_within_the_cap(llama: LoadedModel) -> None:
    doc = tokenize_document(llama.tokenizer, LONG)
    cap = 40
    assert doc.num_tokens > cap
    groups = sentence_groups(doc, cap)
    texts = group_texts(LONG, doc, groups)
    assert len(texts) > 1
    sizes = np.bincount(groups, weights=doc.unit_sizes)
    assert sizes.max() <= cap
    # every group but the last ends at a clause mark or is a cut of a clause longer than the cap
    assert any(text.endswith(",") for text in texts[:-1])
    assert " ".join(texts) == " ".join(LONG.split())


@hypothesis_settings(max_examples=25)
@given(
    st.lists(st.sampled_from(["alpha", "beta,", "gamma;", "1,234.5", "δέλτα", "東京", "x."]), max_size=60),
    st.integers(1, 60),
)
def test_groups_are_contiguous_and_capped_unless_one_unit(llama: LoadedModel, words: list[str], cap: int) -> None:
    text = " ".join(words)
    if not text.strip():
        return
    doc = tokenize_document(llama.tokenizer, text)
    groups = sentence_groups(doc, cap)
    assert groups.shape == (doc.num_units,)
    assert (np.diff(groups) >= 0).all() and (np.diff(groups) <= 1).all() and groups[0] == 0
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        assert members.size == 1 or int(doc.unit_sizes[members].sum()) <= cap


def test_whole_groups_are_kept_and_repeats_skipped(llama: LoadedModel) -> None:
    docs = [tokenize_document(llama.tokenizer, t) for t in ("Keep this one. Filler here.", "keep  THIS one. Other.")]
    groups = [sentence_groups(doc, cap=100) for doc in docs]
    # both first sentences rank above everything; they differ only in case and spacing
    entries = [
        DocumentUnits(i, doc, [np.where(g == 0, 10.0 - i, 1.0)], g) for i, (doc, g) in enumerate(zip(docs, groups))
    ]
    first_size = int(docs[0].unit_sizes[groups[0] == 0].sum())
    budget = 2 * first_size + 20
    chosen = choose_units(entries, budget)
    assert set(np.flatnonzero(groups[0] == 0)) <= set(chosen.units[0].tolist())
    assert not set(np.flatnonzero(groups[1] == 0)) & set(chosen.units.get(1, np.zeros(0)).tolist())
    for index, units in chosen.units.items():  # whole groups only
        kept_groups = set(groups[index][units].tolist())
        assert sorted(units.tolist()) == sorted(np.flatnonzero(np.isin(groups[index], list(kept_groups))).tolist())
    spent = sum(int(docs[i].unit_sizes[u].sum()) for i, u in chosen.units.items())
    assert spent == budget - chosen.unspent and spent <= budget


def test_anchors_place_space_carrying_tokens_in_their_own_sentence(llama: LoadedModel) -> None:
    text = "North. Zorblat built it.  "
    doc = tokenize_document(llama.tokenizer, text)
    anchors = doc.token_anchors
    assert anchors.shape == doc.token_starts.shape
    for start, end, anchor in zip(doc.token_starts, doc.token_ends, anchors, strict=True):
        piece = text[start:end]
        if piece.strip():
            assert anchor >= start and anchor < end and not text[anchor].isspace()
        else:  # whitespace-only: belongs with the text before it
            assert anchor == max(start - 1, 0)


def test_sentence_snap_keeps_whole_sentences(draft: LoadedModel) -> None:
    docs = [
        "The weather was mild. Farmers planted barley in the north. Zorblat designed the copper bridge.",
        "A choir sang in the hall. Tickets sold out quickly. The mayor gave a speech.",
    ]
    pc = SpecPC(draft, keep_ratio=0.4, snap="sentence", window=8)
    result = pc.compress(docs, "Who designed the copper bridge?")
    assert result.kept_tokens <= result.budget
    for doc in result.documents:
        stripped = [
            (a + len(doc.original[a:b]) - len(doc.original[a:b].lstrip()), b) for a, b in sentence_spans(doc.original)
        ]
        starts = {a for a, _ in stripped}
        ends = {a + len(doc.original[a:b].rstrip()) for a, b in stripped}
        for start, end in doc.spans:  # short sentences: a span is whole sentences, never a fragment
            assert start in starts and end in ends, doc.original[start:end]


def test_reuse_equals_a_fresh_pass_and_refuses_another_pass(draft: LoadedModel) -> None:
    docs = ["Ada wrote the parser. Bob wrote the tests.", "The build runs nightly."]
    plain = SpecPC(draft, window=8)
    snapped = SpecPC(draft, window=8, snap="sentence")
    scored = plain.score(docs, "Who wrote the parser?")
    reused = snapped.score(docs, "Who wrote the parser?", reuse=scored)
    fresh = snapped.score(docs, "Who wrote the parser?")
    for a, b in zip(reused.scores, fresh.scores, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert snapped.select(reused, keep_ratio=0.5).texts == snapped.select(fresh, keep_ratio=0.5).texts
    with pytest.raises(ValueError, match="draft-pass settings"):
        SpecPC(draft, window=4).score(docs, "Who wrote the parser?", reuse=scored)
    with pytest.raises(ValueError, match="other documents"):
        snapped.score(docs[:1], "Who wrote the parser?", reuse=scored)


def test_a_truncated_draft_scores_as_the_full_one_over_the_same_layers(draft: LoadedModel) -> None:
    docs = ["Ada wrote the parser. Bob wrote the tests.", "The build runs nightly."]
    layers = draft.num_layers
    assert layers >= 2
    full = SpecPC(draft, window=8, start_layer=0)
    truncated = SpecPC(draft, window=8, start_layer=0, draft_layers=1)
    first_only = truncated.score(docs, "Who wrote the parser?")
    everything = full.score(docs, "Who wrote the parser?")
    # max over layers: the full model's scores dominate the first layer's alone
    for one, all_layers in zip(first_only.scores, everything.scores, strict=True):
        assert (all_layers >= one - 1e-6).all()
    calls: list[int] = []
    hook = draft.model.model.layers[-1].register_forward_hook(lambda *args: calls.append(1))
    try:
        truncated.score(docs, "Who wrote the parser?")
        assert calls == []  # the layers after the last scored one never ran
        full.score(docs, "Who wrote the parser?")
        assert calls == [1]
    finally:
        hook.remove()
    with pytest.raises(ValueError, match="lookahead=1"):
        SpecPC(draft, draft_layers=1, lookahead=4)
    with pytest.raises(ValueError, match="must be below draft_layers"):
        SpecPC(draft, start_layer=1, draft_layers=1)
    with pytest.raises(ValueError, match="only"):
        SpecPC(draft, draft_layers=layers + 1)


def test_a_sentence_that_no_longer_fits_is_kept_as_its_best_clause(llama: LoadedModel) -> None:
    short = "Rain fell on the market square all morning."
    doc_long, doc_short = (tokenize_document(llama.tokenizer, t) for t in (LONG, short))
    groups_long = sentence_groups(doc_long, cap=500)
    assert np.unique(groups_long).size == 1
    # the peak sits in the long sentence's "fourteen arches" clause; the short sentence ranks next
    peak = next(i for i in range(doc_long.num_units) if "fourteen" in LONG[doc_long.unit_char_starts[i] :][:9])
    long_keys = np.full(doc_long.num_units, 0.5)
    long_keys[peak] = 1.0
    entries = [
        DocumentUnits(0, doc_long, [long_keys], groups_long),
        DocumentUnits(1, doc_short, [np.full(doc_short.num_units, 0.8)], sentence_groups(doc_short, cap=500)),
    ]
    budget = doc_long.num_tokens - 5  # the whole sentence no longer fits
    assert budget >= MIN_GROUP_TOKENS
    chosen = choose_units(entries, budget)
    kept_long = chosen.units[0]
    assert peak in kept_long.tolist() and kept_long.size < doc_long.num_units
    kept_text = LONG[int(doc_long.unit_char_starts[kept_long[0]]) : doc_long.unit_char_end(int(kept_long[-1]))]
    assert "fourteen arches" in kept_text
    spent = sum(
        int(d.unit_sizes[chosen.units[i]].sum()) for i, d in ((0, doc_long), (1, doc_short)) if i in chosen.units
    )
    assert spent + chosen.unspent == budget
    # below the smallest group size the fallback does not cut sentences into scraps
    tiny = choose_units(entries, MIN_GROUP_TOKENS - 1)
    assert 0 not in tiny.units


def test_sentence_scoped_pooling_never_lends_a_peak_to_the_next_sentence(llama: LoadedModel) -> None:
    from specrag.core.sentences import sentence_index
    from specrag.core.specpc.ranking import bounded_max_pool, centred_max_pool

    text = "Zorblat built the bridge. Rain fell all week on the farms."
    doc = tokenize_document(llama.tokenizer, text)
    segment = sentence_index(text, doc.token_anchors)
    assert segment.max() == 1
    raw = np.zeros(doc.num_tokens)
    raw[int(np.flatnonzero(segment == 0)[-1])] = 1.0  # a peak on the first sentence's last token
    across = centred_max_pool(raw, 32)
    within = bounded_max_pool(raw, 32, segment)
    assert across[segment == 1].max() == 1.0  # the 0.1 pool spreads it into "Rain fell ..."
    assert (within[segment == 1] == 0.0).all() and within[segment == 0].max() == 1.0
    plain = SpecPC(llama, embedder=None, window=8, progress=False)
    scoped = SpecPC(llama, embedder=None, window=8, progress=False, pool_scope="sentence")
    scored = plain.score([text], "Who built the bridge?")
    assert plain.token_keys(scored)[0] is not None
    keys = scoped.token_keys(scored)[0]
    assert keys is not None and keys[0].shape == (doc.num_tokens,)
