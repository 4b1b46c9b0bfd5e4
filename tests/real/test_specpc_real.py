"""SpecPC on the real smollm2-135m draft (pulled from PyPI on first use)."""

from __future__ import annotations

import random

import pytest

from specrag import CompressionResult, SpecPC, load_model
from specrag.core.segmentation import tokenize_document
from specrag.core.specpc.grouping import group_cap

pytestmark = pytest.mark.real

SUBJECTS = [
    "The farmer",
    "A young teacher",
    "The old bridge",
    "Our neighbour",
    "The city council",
    "A travelling musician",
    "The river",
    "The museum guide",
    "A quiet student",
    "The baker",
]
VERBS = [
    "walked past",
    "talked about",
    "repaired",
    "painted",
    "forgot",
    "visited",
    "described",
    "photographed",
    "measured",
    "ignored",
]
OBJECTS = [
    "the red barn",
    "a broken fence",
    "the morning market",
    "an empty station",
    "the harvest festival",
    "a wooden boat",
    "the long corridor",
    "a box of letters",
    "the hillside orchard",
    "the winter garden",
]
TAILS = [
    "before noon.",
    "after the rain stopped.",
    "with great care.",
    "for the third time that week.",
    "while the bells rang.",
    "without saying a word.",
    "in the late afternoon.",
    "as the fog lifted.",
]
NEEDLE = "The secret passphrase for the vault is amber falcon forty-two."


def haystack(seed: int, documents: int = 14, sentences: int = 18) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(
            f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}"
            for _ in range(sentences)
        )
        for _ in range(documents)
    ]


def assert_budget(result: CompressionResult, pc: SpecPC) -> None:
    """Never over the budget; under it only by less than the smallest word unit left out, or,
    with sentence units, by less than the largest sentence group."""
    assert result.kept_tokens <= result.budget
    if pc.settings.snap == "sentence":
        assert result.budget - result.kept_tokens < group_cap(result.budget, pc.settings.max_sentence_tokens)
        return
    left_out = []
    for document in result.documents:
        doc = tokenize_document(pc.draft.tokenizer, document.original, pc.settings.max_unit_tokens)
        for unit in range(doc.num_units):
            start, end = int(doc.unit_char_starts[unit]), doc.unit_char_end(unit)
            visible = [i for i in range(start, end) if not document.original[i].isspace()]
            if visible and not any(s <= i < e for i in visible for s, e in document.spans):
                left_out.append(int(doc.unit_sizes[unit]))
    if left_out:
        assert result.budget - result.kept_tokens < min(left_out)


@pytest.fixture(scope="module")
def pc() -> SpecPC:
    return SpecPC(load_model("smollm2-135m"), keep_ratio=0.1)


@pytest.mark.parametrize(("seed", "where"), [(0, 2), (1, 7), (2, 12)])
def test_needle_survives_keep_ten_percent(pc: SpecPC, seed: int, where: int) -> None:
    docs = haystack(seed)
    sentences = docs[where].split(". ")
    sentences.insert(len(sentences) // 2, NEEDLE.rstrip("."))
    docs[where] = ". ".join(sentences)
    result = pc.compress(docs, "What is the secret passphrase for the vault?")
    assert 2800 < result.original_tokens < 3600  # ~3k tokens, as the needle check specifies
    assert_budget(result, pc)
    assert "amber falcon forty-two" in result.documents[where].text
    assert max(result.documents, key=lambda d: d.relevance).index == where


def test_cjk_and_emoji_documents_map_back_verbatim(pc: SpecPC) -> None:
    docs = [
        "東京タワーは1958年に完成した。高さは333メートルで、赤と白に塗られている。" * 3,
        "Die Zugspitze ist mit 2962 Metern der höchste Berg Deutschlands. 🏔️🇩🇪" * 3,
        "The Eiffel Tower 🗼 was finished in 1889 and is 330 metres tall. Ça va? Très bien! " * 3,
    ]
    result = pc.compress(docs, "How tall is Tokyo Tower?", keep_ratio=0.3)
    for doc in result.documents:
        assert result.separator.join(doc.original[s:e] for s, e in doc.spans) == doc.text
    assert_budget(result, pc)
