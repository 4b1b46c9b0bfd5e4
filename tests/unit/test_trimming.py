"""The framework-free trimming core (the LangChain adapter's tests cover messages)."""

from __future__ import annotations

from specrag import LoadedModel, SpecPC
from specrag.core.trimming import split_history, trim_pieces

TEXTS = [
    "The capital of France is Paris. It lies on the Seine and has many museums. " * 3,
    "Mount Everest is the highest mountain on Earth. Climbers start from Nepal. " * 3,
]


def test_split_history_keeps_marked_and_short_messages_verbatim() -> None:
    plan = split_history([10, 50, 3, 40, 20], verbatim=[True, False, False, False, True], max_tokens=60,
                         short_message_tokens=5)  # fmt: skip
    assert plan.shrinkable == [1, 3]
    assert plan.budget == 60 - (10 + 3 + 20)
    assert split_history([100], verbatim=[True], max_tokens=10, short_message_tokens=0).budget == 0


def test_trim_pieces_fits_what_the_caller_counts_and_stays_verbatim(draft: LoadedModel) -> None:
    pc = SpecPC(draft, window=8, pool_kernel=4, neighbourhood=2, progress=False)
    tokenizer = draft.tokenizer

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False)) if text else 0

    overhead = 5  # what the caller's rendering adds per emptied piece, say a placeholder

    def spent(texts: list[str]) -> int:  # fmt: skip
        return sum(count(text) if text else overhead for text in texts)

    for budget in (12, 30, 60):
        texts = trim_pieces(TEXTS, "What is the capital of France?", compressor=pc, budget=budget, spent=spent,
                            count=count)  # fmt: skip
        assert len(texts) == len(TEXTS)
        assert spent(texts) <= budget
        for original, text in zip(TEXTS, texts, strict=True):
            assert all(part in original for part in text.split(pc.settings.separator) if part)
