"""The budget-edge cuts of the "never a silent wrong context" issue, on the real smollm2-135m.

Before the fix the leftover budget bought the leading tokens of a unit: the three examples
below came back as ``'Electrified 1'``, a bare ``'Z'`` and ``'l … was\\x0belectrified'``.
"""

from __future__ import annotations

import pytest
import regex

from specrag import CompressionResult, ScoredContext, SpecPC, load_model

pytestmark = pytest.mark.real


@pytest.fixture(scope="module", params=["word", "sentence"])
def pc(request: pytest.FixtureRequest) -> SpecPC:
    """Word units (0.1's ranking) and the default sentence units, which group word units."""
    if request.param == "word":
        return SpecPC(load_model("smollm2-135m"), progress=False, snap="word", embedder=None)
    return SpecPC(load_model("smollm2-135m"), progress=False)


def assert_whole_units(result: CompressionResult, scored: ScoredContext, word_units: bool) -> None:
    """Spans cut only between grapheme clusters (``regex``'s ``\\X``), never inside a digit
    run or a word; never over the budget; with word units, under it by less than the smallest
    unit left out (sentence units leave less than a sentence group, tests/unit/test_grouping)."""
    assert result.kept_tokens <= result.budget
    left_out = []
    for document, doc in zip(result.documents, scored.tokenized, strict=True):
        text = document.original
        assert result.separator.join(text[start:end] for start, end in document.spans) == document.text
        if doc is None:
            continue
        cuts = {match.start() for match in regex.finditer(r"\X", text)} | {len(text)}
        for start, end in document.spans:
            for position in (start, end):
                assert position in cuts, (text, position)
                if 0 < position < len(text):
                    assert not (text[position - 1].isalnum() and text[position].isalnum()), (text, position)
        for unit in range(doc.num_units):
            first, last = int(doc.unit_char_starts[unit]), doc.unit_char_end(unit)
            visible = [i for i in range(first, last) if not text[i].isspace()]
            if visible and not any(s <= i < e for i in visible for s, e in document.spans):
                left_out.append(int(doc.unit_sizes[unit]))
    if left_out and word_units:
        assert result.budget - result.kept_tokens < min(left_out)


def test_a_number_is_never_cut_at_half_budget(pc: SpecPC) -> None:
    result = pc.compress(["Electrified 1923."], "When was it electrified?", keep_ratio=0.5)
    assert result.texts != ["Electrified 1"]
    assert result.texts[0] in {"", "Electrified", "1923.", "Electrified 1923."}


def test_combining_marks_stay_with_their_letter(pc: SpecPC) -> None:
    result = pc.compress(["Z\u0351\u0352\u0353\u0354\u0355algo tests."], "What?", max_tokens=1)
    assert result.texts == [""]  # no whole unit fits one token; a bare "Z" was a wrong context
    assert result.kept_tokens == 0


@pytest.mark.parametrize(
    "text",
    [
        "The\u00a0Kestrel\u00a0line was\x0belectrified\u2028in\u00a01923.",
        "Kestrel\u00a0Point line was\x0belectrified\u2028in 1923.",
        "Kestrel Point\u00a0station was\x0belectrified\u2028in 1923 by the line.",
    ],
)
def test_nbsp_and_line_separator_text_keeps_whole_words_at_every_budget(pc: SpecPC, text: str) -> None:
    scored = pc.score([text], "When was the line electrified?")
    for budget in range(1, scored.total_tokens + 1):
        assert_whole_units(pc.select(scored, max_tokens=budget), scored, pc.settings.snap == "word")
