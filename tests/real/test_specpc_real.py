"""SpecPC on the real smollm2-135m draft (pulled from PyPI on first use)."""

from __future__ import annotations

import random

import pytest

from specrag import SpecPC, load_model

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
    assert result.kept_tokens == result.budget
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
    assert result.budget - 3 <= result.kept_tokens <= result.budget
