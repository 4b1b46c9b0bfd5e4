"""Budgets in the answering model's tokens: SpecPC(target_tokenizer=...)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, PythonBackend

from specrag import LoadedModel, SpecPC
from specrag.core.segmentation import tokenize_document
from specrag.core.specpc.costs import resolve_costs

DOCS = [
    "The viaduct, ordered in 1884, crosses the valley on fourteen arches. It carried its first train in 1889.",
    "Zorblat the engineer designed the copper bridge. Markets opened early; the café served crème brûlée.",
    "北京是中国的首都，长江是中国最长的河流。 Emoji too: 🚀 launch, 👍🏽 thumbs up.",
]
QUESTION = "Who designed the copper bridge?"


def other_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with a far smaller vocabulary than the draft's: more, shorter tokens,
    so a budget in its tokens differs from one in the draft's."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(DOCS * 3, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def target_count(tokenizer: PreTrainedTokenizerFast, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_every_target_token_is_charged_to_exactly_one_unit(llama: LoadedModel) -> None:
    target = other_tokenizer()
    costs = resolve_costs(target)
    for text in DOCS:
        doc = tokenize_document(llama.tokenizer, text)
        unit_costs = costs.of(doc)
        assert unit_costs.shape == (doc.num_units,) and (unit_costs >= 0).all()
        assert int(unit_costs.sum()) == target_count(target, text) != doc.num_tokens


def test_the_budget_and_counts_are_in_target_tokens(llama: LoadedModel) -> None:
    target = other_tokenizer()
    pc = SpecPC(llama, keep_ratio=0.3, embedder=None, window=8, progress=False, target_tokenizer=target)
    result = pc.compress(DOCS, QUESTION)
    totals = [target_count(target, text) for text in DOCS]
    assert [doc.original_tokens for doc in result.documents] == totals
    assert result.budget == round(0.3 * sum(totals))
    assert 0 < result.kept_tokens <= result.budget
    assert result.counted_in.startswith("target tokens")
    for doc in result.documents:  # kept pieces, counted alone, are what the result says (± merges)
        pieces = doc.text.split(pc.settings.separator) if doc.text else []
        assert abs(sum(target_count(target, piece) for piece in pieces) - doc.kept_tokens) <= len(pieces)
    draft_counted = SpecPC(llama, keep_ratio=0.3, embedder=None, window=8, progress=False).compress(DOCS, QUESTION)
    assert draft_counted.budget != result.budget and draft_counted.counted_in.startswith("draft tokens")
    scored = pc.score(DOCS, QUESTION)  # select() re-counts in target tokens too
    assert pc.select(scored, max_tokens=20).kept_tokens <= 20
    assert pc.select(scored, keep_ratio=0.3).texts == result.texts


def test_a_counting_function_or_a_folder_name_sets_the_budget(llama: LoadedModel, tmp_path: Path) -> None:
    words = SpecPC(
        llama, max_tokens=6, embedder=None, window=8, progress=False, target_tokenizer=lambda t: len(t.split())
    )
    result = words.compress(DOCS, QUESTION)
    assert result.kept_tokens <= 6 and result.budget == 6
    assert sum(len(doc.text.replace(" … ", " ").split()) for doc in result.documents) <= 6
    target = other_tokenizer()
    target.save_pretrained(tmp_path / "target")
    by_name = SpecPC(
        llama, keep_ratio=0.3, embedder=None, window=8, progress=False, target_tokenizer=tmp_path / "target"
    )
    direct = SpecPC(llama, keep_ratio=0.3, embedder=None, window=8, progress=False, target_tokenizer=target)
    assert by_name.compress(DOCS, QUESTION).texts == direct.compress(DOCS, QUESTION).texts


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (lambda text: -1, "token count >= 0"),
        (lambda text: 2.5, "token count >= 0"),
        (lambda text: True, "token count >= 0"),
        (42, "a tokenizer, a model name or a function"),
    ],
)
def test_a_wrong_counter_is_refused_in_one_line(llama: LoadedModel, value: object, message: str) -> None:
    with pytest.raises(TypeError, match=message) as caught:
        SpecPC(llama, embedder=None, window=8, progress=False, target_tokenizer=value).compress(DOCS, QUESTION)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


class CharTokenizer(PythonBackend):
    """A slow (pure-Python) tokenizer: one token per character, no offset mappings."""

    @property
    def vocab_size(self) -> int:
        return 256

    def get_vocab(self) -> dict[str, int]:
        return {chr(i): i for i in range(256)}

    def _tokenize(self, text: str, **kwargs: object) -> list[str]:
        return list(text)

    def _convert_token_to_id(self, token: str) -> int:
        return ord(token) % 256

    def _convert_id_to_token(self, index: int) -> str:
        return chr(index)


def test_a_slow_target_tokenizer_is_refused_with_the_fix(llama: LoadedModel) -> None:
    slow = CharTokenizer()
    with pytest.raises(TypeError, match="slow tokenizer.*counting function"):
        SpecPC(llama, embedder=None, target_tokenizer=slow)
    counted = SpecPC(
        llama,
        max_tokens=30,
        embedder=None,
        window=8,
        progress=False,
        target_tokenizer=lambda t: len(slow(t)["input_ids"]),
    )
    result = counted.compress(DOCS, QUESTION)
    assert 0 < result.kept_tokens <= 30


def test_sentence_units_fit_a_target_budget(llama: LoadedModel) -> None:
    target = other_tokenizer()
    pc = SpecPC(
        llama, keep_ratio=0.5, embedder=None, snap="sentence", window=8, progress=False, target_tokenizer=target
    )
    result = pc.compress(DOCS, QUESTION)
    assert 0 < result.kept_tokens <= result.budget
    assert np.isclose(result.budget, 0.5 * sum(target_count(target, t) for t in DOCS), atol=1)


def test_the_langchain_compressor_counts_in_target_tokens(llama: LoadedModel) -> None:
    from langchain_core.documents import Document

    from specrag.langchain import METADATA_KEY, SpecPCCompressor

    target = other_tokenizer()
    compressor = SpecPCCompressor(draft=llama, max_tokens=25, target_tokenizer=target, settings={"window": 8})
    kept = compressor.compress_documents([Document(page_content=text) for text in DOCS], QUESTION)
    figures = [document.metadata[METADATA_KEY] for document in kept]
    assert 0 < sum(f["kept_tokens"] for f in figures) <= 25
    with pytest.raises(ValueError, match="target_tokenizer"):
        SpecPCCompressor(compressor=compressor.get_specpc(), target_tokenizer=target)


def test_the_message_trimmer_counts_in_the_compressors_tokens(llama: LoadedModel) -> None:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    from specrag.integrations.langchain import trim_messages_with_specpc

    target = other_tokenizer()
    pc = SpecPC(llama, embedder=None, window=8, progress=False, target_tokenizer=target)
    history = [
        SystemMessage("Use the tool."),
        HumanMessage("Who designed the bridge?"),
        AIMessage("", tool_calls=[{"name": "search", "args": {}, "id": "c1"}]),
        ToolMessage(" ".join(DOCS * 4), tool_call_id="c1"),
        HumanMessage(QUESTION),
    ]
    trimmed = trim_messages_with_specpc(history, compressor=pc, max_tokens=120)
    spent = sum(target_count(target, str(m.content)) for m in trimmed)
    assert spent <= 120  # every message text, counted in the target's tokens
    assert pc.count_tokens(QUESTION) == target_count(target, QUESTION) != len(llama.tokenizer.encode(QUESTION))
