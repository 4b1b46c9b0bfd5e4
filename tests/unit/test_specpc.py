"""SpecPC invariants on tiny random drafts: verbatim output, budgets held, clear errors."""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specrag import CompressionResult, SpecPC, build_tiny_model
from specrag.core.segmentation import tokenize_document

MIXED = [
    "The Eiffel Tower was finished in 1889 and is 330 metres tall.",
    "東京タワーは1958年に完成した。高さは333メートルです。",
    "Emoji 🎉🎉 and café au lait — naïve façade ✓ 👩‍👩‍👧 mixed with 中文 text.",
    "   ",
    "",
    "Короткий русский текст про Париж и Лондон.",
]


@pytest.fixture(scope="module", params=["llama", "qwen2", "gemma3"])
def pc(request: pytest.FixtureRequest) -> SpecPC:
    # word units and attention alone: these tests pin the mechanics under the default ranking
    return SpecPC(
        build_tiny_model(request.param), keep_ratio=0.5, window=8, pool_kernel=4, neighbourhood=2, **WORD_UNITS
    )


WORD_UNITS: dict[str, object] = {"snap": "word", "embedder": None}
"""0.1's ranking: word units scored by the draft's attention alone."""


@pytest.fixture(scope="module")
def llama_pc() -> SpecPC:
    return SpecPC(build_tiny_model("llama"), keep_ratio=0.5, window=8, pool_kernel=4, neighbourhood=2, **WORD_UNITS)


def assert_verbatim(result: CompressionResult) -> None:
    for document in result.documents:
        pieces = [document.original[start:end] for start, end in document.spans]
        assert result.separator.join(pieces) == document.text
        previous_end = 0
        for start, end in document.spans:
            assert previous_end <= start < end <= len(document.original)
            previous_end = end


def assert_budget(result: CompressionResult, pc: SpecPC) -> None:
    """Never over the budget; under it only by less than the smallest word unit left out
    (units are atomic: none is cut to spend the last tokens)."""
    assert result.kept_tokens <= result.budget
    left_out = []
    for document in result.documents:
        if not document.original.strip():
            continue
        doc = tokenize_document(pc.draft.tokenizer, document.original, pc.settings.max_unit_tokens)
        for unit in range(doc.num_units):
            start, end = int(doc.unit_char_starts[unit]), doc.unit_char_end(unit)
            visible = [i for i in range(start, end) if not document.original[i].isspace()]
            if visible and not any(s <= i < e for i in visible for s, e in document.spans):
                left_out.append(int(doc.unit_sizes[unit]))
    if left_out:
        assert result.budget - result.kept_tokens < min(left_out)


def assert_word_snapped(result: CompressionResult) -> None:
    """Spans start at a word start unless the text is in an unspaced script."""
    from specrag.core.segmentation import is_unspaced_char

    for document in result.documents:
        text = document.original
        for start, _ in document.spans:
            if start > 0 and not text[start].isspace():
                before = text[start - 1]
                assert (
                    before.isspace()
                    or is_unspaced_char(before)
                    or is_unspaced_char(text[start])
                    or (not text[start].isalnum())
                ), (text, start)


def test_mixed_scripts_stay_verbatim_and_within_budget(pc: SpecPC) -> None:
    result = pc.compress(MIXED, "When was the Eiffel Tower finished?")
    assert len(result.documents) == len(MIXED)
    assert_verbatim(result)
    assert_word_snapped(result)
    assert_budget(result, pc)
    assert result.documents[3].text == "   " and result.documents[4].text == ""


text_strategy = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=0, max_size=120
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    documents=st.lists(text_strategy, min_size=0, max_size=5),
    ratio=st.floats(0.01, 1.0),
)
def test_output_is_verbatim_and_budget_held_for_any_text(llama_pc: SpecPC, documents: list[str], ratio: float) -> None:
    result = llama_pc.compress(documents, "What is said?", keep_ratio=ratio)
    assert_verbatim(result)
    total = sum(d.original_tokens for d in result.documents)
    assert result.budget == min(total, int(ratio * total + 0.5))
    assert_budget(result, llama_pc)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(budget=st.integers(0, 400))
def test_absolute_budget_is_never_exceeded_and_underspent_only_by_a_unit(llama_pc: SpecPC, budget: int) -> None:
    docs = ["Alpha beta gamma delta. " * 12, "Unrelated words about cooking pasta al dente. " * 6]
    result = llama_pc.compress(docs, "What follows gamma?", max_tokens=budget)
    assert result.budget == min(budget, result.original_tokens)
    assert_budget(result, llama_pc)
    assert_verbatim(result)


def test_budget_is_shared_so_documents_may_vanish(llama_pc: SpecPC) -> None:
    docs = [f"Document number {i} talks about topic {i} at length. " * 5 for i in range(6)]
    result = llama_pc.compress(docs, "Which topic?", keep_ratio=0.05)
    assert_budget(result, llama_pc)
    assert any(d.is_dropped for d in result.documents)
    assert all(d.text == "" for d in result.documents if d.is_dropped)


def test_same_input_same_output(llama_pc: SpecPC) -> None:
    first = llama_pc.compress(MIXED, "Which tower is taller?")
    second = llama_pc.compress(MIXED, "Which tower is taller?")
    assert first.texts == second.texts
    assert [d.relevance for d in first.documents] == [d.relevance for d in second.documents]


def test_long_input_is_scored_in_pieces_that_end_with_the_question() -> None:
    short_limit = SpecPC(build_tiny_model("llama"), keep_ratio=0.3, max_draft_tokens=128, window=8, **WORD_UNITS)
    docs = ["word " * 150, "other " * 90, "x y z " * 40]
    result = short_limit.compress(docs, "Where?")
    assert result.pieces > 1
    assert_budget(result, short_limit)
    assert_verbatim(result)
    with pytest.raises(ValueError, match="max_draft_tokens"):
        short_limit.compress(docs, "question " * 200)


def test_lookahead_and_instruction(llama_pc: SpecPC) -> None:
    pc = SpecPC(llama_pc.draft, max_tokens=10, lookahead=4, window=8, **WORD_UNITS)
    result = pc.compress(MIXED, "Eiffel?", instruction="Answer briefly.")
    assert result.budget == 10
    assert_budget(result, pc)
    prompt = result.to_prompt()
    assert prompt.startswith("Answer briefly.") and prompt.endswith("Question: Eiffel?\nAnswer:")


def test_threads_and_async_give_the_sequential_answer(llama_pc: SpecPC) -> None:
    questions = ["When was it finished?", "How tall is Tokyo Tower?"]
    expected = [llama_pc.compress(MIXED, q).texts for q in questions]
    got: dict[int, list[str]] = {}

    def worker(index: int) -> None:
        for _ in range(3):
            got[index] = llama_pc.compress(MIXED, questions[index]).texts

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [got[0], got[1]] == expected

    async def both() -> list[CompressionResult]:
        return await asyncio.gather(*(llama_pc.acompress(MIXED, q) for q in questions))

    assert [r.texts for r in asyncio.run(both())] == expected


def test_empty_document_list_gives_an_empty_result(llama_pc: SpecPC) -> None:
    result = llama_pc.compress([], "Anything?")
    assert result.documents == [] and result.budget == 0 and result.pieces == 0


@pytest.mark.parametrize(
    ("call", "error", "word"),
    [
        (lambda pc: pc.compress("a string", "q"), TypeError, "documents"),
        (lambda pc: pc.compress(["ok", 3], "q"), TypeError, r"documents\[1\]"),
        (lambda pc: pc.compress(["ok"], "  "), ValueError, "question"),
        (lambda pc: pc.compress(["ok"], None), TypeError, "question"),
        (lambda pc: pc.compress(["ok"], "q", instruction=5), TypeError, "instruction"),
        (lambda pc: pc.compress(["ok"], "q", keep_ratio=0), ValueError, "keep_ratio"),
        (lambda pc: pc.compress(["ok"], "q", keep_ratio=1.01), ValueError, "keep_ratio"),
        (lambda pc: pc.compress(["ok"], "q", max_tokens=-3), ValueError, "max_tokens"),
        (lambda pc: pc.compress(["ok"], "q", keep_ratio=0.5, max_tokens=3), ValueError, "not both"),
    ],
)
def test_bad_input_names_the_argument(llama_pc: SpecPC, call, error, word) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=word):
        call(llama_pc)


def test_bad_settings_are_rejected_before_loading() -> None:
    with pytest.raises(ValueError, match="keep_ratio"):
        SpecPC("no-such-model", keep_ratio=2.0)
    with pytest.raises(ValueError, match="window"):
        SpecPC(build_tiny_model("llama"), window=0)
    with pytest.raises(ValueError, match="start_layer"):
        SpecPC(build_tiny_model("llama"), start_layer=99)
    with pytest.raises(ValueError, match="windo"):
        SpecPC(build_tiny_model("llama"), windo=8)  # a typo must not fall back to the default


def test_score_once_then_select_equals_compress(llama_pc: SpecPC) -> None:
    question = "How tall is the Eiffel Tower?"
    scored = llama_pc.score(MIXED, question, instruction="Be brief.")
    assert scored.total_tokens == llama_pc.compress(MIXED, question, keep_ratio=1.0).original_tokens
    for ratio in (0.1, 0.25, 0.5, 1.0):
        direct = llama_pc.compress(MIXED, question, instruction="Be brief.", keep_ratio=ratio)
        reselected = llama_pc.select(scored, keep_ratio=ratio)
        assert reselected.texts == direct.texts
        assert reselected.budget == direct.budget
        assert [d.relevance for d in reselected.documents] == [d.relevance for d in direct.documents]
    seven = llama_pc.select(scored, max_tokens=7)
    assert seven.budget == 7
    assert_budget(seven, llama_pc)
