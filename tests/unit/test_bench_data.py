"""Benchmark data without downloads: metrics, the needle generator, Quoref parsing and caching."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from specrag.bench import quoref
from specrag.bench.metrics import answer_contained, exact_match, normalize_answer, token_f1
from specrag.bench.needle import filler_sentence, single_needle
from specrag.bench.quoref import (
    MultiDocItem,
    QuorefChecksumError,
    QuorefDataError,
    QuorefExample,
    load_quoref,
    multi_doc_items,
    parse_quoref,
)
from specrag.core.models import tiny_tokenizer


# ---------------------------------------------------------------------------- metrics
def test_answer_contained_ignores_case_and_whitespace_only() -> None:
    text = "The report named   volcanologist\nCatherine HICKSON as its source."
    assert answer_contained(text, ["catherine hickson"])
    assert answer_contained(text, "Catherine  Hickson")
    assert not answer_contained(text, ["Catherine Hickson."])  # punctuation is not normalised
    assert not answer_contained(text, ["John Cassidy"])


def test_answer_contained_any_versus_all() -> None:
    text = "McCall and Roper apprehend the man."
    assert answer_contained(text, ["Smith", "Roper"])
    assert not answer_contained(text, ["Smith", "Roper"], require_all=True)
    assert answer_contained(text, ["McCall", "Roper"], require_all=True)
    assert not answer_contained(text, [""])  # an empty answer never counts as found


def test_metrics_refuse_empty_answer_lists() -> None:
    for metric in (answer_contained, exact_match, token_f1):
        with pytest.raises(ValueError):
            metric("text", [])


def test_normalize_answer_follows_squad() -> None:
    assert normalize_answer("The  Beatles!") == "beatles"
    assert normalize_answer("An apple, a pear") == "apple pear"


def test_exact_match() -> None:
    assert exact_match("the Beatles.", ["Beatles"]) == 1.0
    assert exact_match("Rolling Stones", ["Beatles", "the rolling stones"]) == 1.0
    assert exact_match("Beatles band", ["Beatles"]) == 0.0


def test_token_f1() -> None:
    assert token_f1("Catherine Hickson", ["Catherine"]) == pytest.approx(2 / 3)
    assert token_f1("Catherine", ["Catherine Hickson", "Catherine"]) == 1.0
    assert token_f1("John", ["Catherine"]) == 0.0
    assert token_f1("the the", ["a"]) == 1.0  # both empty after normalisation
    assert token_f1("", ["Catherine"]) == 0.0
    assert token_f1("x y y", ["y y z"]) == pytest.approx(2 / 3)  # counts are respected


# ---------------------------------------------------------------------------- needle
def test_single_needle_is_deterministic() -> None:
    tokenizer = tiny_tokenizer()
    first = single_needle(600, tokenizer, seed=11, depth=0.3)
    again = single_needle(600, tokenizer, seed=11, depth=0.3)
    other = single_needle(600, tokenizer, seed=12, depth=0.3)
    assert first == again
    assert first.documents != other.documents
    assert first.answer != other.answer or first.question != other.question


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_needle_is_present_once_with_its_answer(depth: float) -> None:
    tokenizer = tiny_tokenizer()
    sample = single_needle(900, tokenizer, seed=3, depth=depth, passage_tokens=100)
    joined = " ".join(sample.documents)
    assert joined.count(sample.needle) == 1
    assert sample.needle in sample.documents[sample.needle_document]
    assert sample.answer in sample.needle and sample.answer.isdigit()
    assert joined.count(sample.answer) == 1
    assert "magic number" in sample.question and sample.question.endswith("?")
    assert len(sample.documents) > 3
    if depth == 0.0:
        assert sample.documents[0].startswith(sample.needle)
    if depth == 1.0:
        assert sample.documents[-1].endswith(sample.needle)


def test_haystack_length_and_passage_size_follow_the_tokenizer() -> None:
    tokenizer = tiny_tokenizer()
    sample = single_needle(1200, tokenizer, seed=5, depth=0.5, passage_tokens=150)
    counts = [len(tokenizer.encode(doc, add_special_tokens=False)) for doc in sample.documents]
    assert 1200 <= sum(counts) <= 1200 + 150
    assert max(counts) <= 150 + 40  # one sentence of slack at most


def test_filler_is_varied_and_never_mentions_the_needle() -> None:
    import random

    rng = random.Random(0)
    sentences = [filler_sentence(rng) for _ in range(300)]
    assert len(set(sentences)) > 290
    assert not any("magic" in sentence for sentence in sentences)
    assert all(sentence[0].isupper() and sentence.endswith(".") for sentence in sentences)


def test_single_needle_rejects_bad_depth() -> None:
    with pytest.raises(ValueError):
        single_needle(100, tiny_tokenizer(), seed=0, depth=1.5)


# ---------------------------------------------------------------------------- quoref parsing
PASSAGES = {
    "lake": "Anna Berg rowed across Lake Vättern in 1931. Her brother Olof waited on the shore.",
    "mill": "The mill was built by Jonas Ek. Later, his daughter Greta ran it for forty years.",
    "ship": "Captain Hale sailed the Osprey to Lisbon. The first mate, Ruiz, kept the log.",
    "band": "Nora and Pim formed a duo in 2007. Their singles were G.L.O.W. and Superchrist.",
    "farm": "Old Tomas kept goats on the hill. His neighbour Lena grew barley in the valley.",
}


def _task() -> dict[str, object]:
    """A BIG-bench task in the Natural Instructions Quoref format, in miniature."""

    def example(key: str, question: str, targets: object) -> dict[str, object]:
        return {"input": f"Passage: {PASSAGES[key]} \nQuestion: {question}", "target": targets}

    return {
        "name": "subtask002_quoref_answer_generation",
        "task_prefix": "Definition: answer the question.",
        "examples": [
            example("lake", "What is the first name of the person who rowed?", ["Anna."]),
            example("mill", "Who ran the mill?", "Greta."),  # a bare string target
            example("ship", "What is the name of the first mate?", ["Ruiz."]),
            example("band", "What are the names of the two singles?", ["G.L.O.W.", "Superchrist."]),
            example("farm", "Who grew barley?", ["Lena."]),
            {"input": "no passage marker here", "target": ["x."]},  # malformed: skipped
        ],
    }


def test_parse_quoref_splits_passage_question_and_cleans_answers() -> None:
    examples = parse_quoref(_task())
    assert len(examples) == 5
    first = examples[0]
    assert first == QuorefExample(
        question="What is the first name of the person who rowed?",
        passage=PASSAGES["lake"],
        answers=("Anna",),
    )
    assert examples[1].answers == ("Greta",)
    band = examples[3]
    assert band.multi_span and band.answers == ("G.L.O.W", "Superchrist")


def test_parse_quoref_splits_at_the_last_question_marker() -> None:
    task = {"examples": [{"input": "Passage: A line.\nQuestion: fake\nmore text.\nQuestion: Real?", "target": ["A."]}]}
    (example,) = parse_quoref(task)
    assert example.question == "Real?"
    assert example.passage == "A line.\nQuestion: fake\nmore text."


def test_parse_quoref_rejects_non_tasks() -> None:
    with pytest.raises(QuorefDataError):
        parse_quoref({"name": "x"})
    with pytest.raises(QuorefDataError):
        parse_quoref({"examples": [{"input": "nothing"}]})


def test_load_quoref_reads_a_given_file(tmp_path: Path) -> None:
    path = tmp_path / "task.json"
    path.write_text(json.dumps(_task()), encoding="utf-8")
    assert load_quoref(path) == parse_quoref(_task())


# ---------------------------------------------------------------------------- multi-doc items
def test_multi_doc_items_are_deterministic_and_clean() -> None:
    examples = parse_quoref(_task())
    items = multi_doc_items(4, seed=1, distractors=2, examples=examples)
    assert items == multi_doc_items(4, seed=1, distractors=2, examples=examples)
    assert len({item.question for item in items}) == 4
    assert all(not ex.multi_span or ex.question not in {i.question for i in items} for ex in examples)
    for item in items:
        assert isinstance(item, MultiDocItem)
        assert len(item.documents) == 3 and len(set(item.documents)) == 3
        assert answer_contained(item.gold_document, item.answers)
        for index, document in enumerate(item.documents):
            if index != item.gold_index:
                assert not answer_contained(document, item.answers)


def test_multi_doc_items_balance_or_fix_the_gold_position() -> None:
    examples = parse_quoref(_task())
    positions = [item.gold_index for item in multi_doc_items(4, seed=3, distractors=1, examples=examples)]
    assert sorted(positions) == [0, 0, 1, 1]
    fixed = multi_doc_items(3, seed=3, distractors=2, gold_position=2, examples=examples)
    assert all(item.gold_index == 2 for item in fixed)
    with pytest.raises(ValueError):
        multi_doc_items(2, seed=0, distractors=2, gold_position=3, examples=examples)


def test_multi_doc_items_reports_shortages() -> None:
    examples = parse_quoref(_task())
    with pytest.raises(ValueError, match="usable questions"):
        multi_doc_items(5, seed=0, distractors=1, examples=examples)  # one is multi-span
    with pytest.raises(ValueError, match="distractor"):
        multi_doc_items(1, seed=0, distractors=5, examples=examples)


# ---------------------------------------------------------------------------- fetching
def _fake_sdist(path: Path, payload: bytes) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in (
            ("bigbench-1.0.0/README.md", b"readme"),
            (f"bigbench-1.0.0/{quoref.QUOREF_MEMBER_SUFFIX}", payload),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def fake_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolate the cache and replace pip with a copy of a tiny sdist; return the sdist."""
    monkeypatch.setenv("SPECRAG_HOME", str(tmp_path / "home"))
    sdist = _fake_sdist(tmp_path / "bigbench-1.0.0.tar.gz", json.dumps(_task()).encode())

    def download(dest: Path) -> Path:
        copy = dest / sdist.name
        copy.write_bytes(sdist.read_bytes())
        return copy

    monkeypatch.setattr(quoref, "_pip_download", download)
    return sdist


def test_fetch_refuses_a_wrong_checksum_and_caches_nothing(fake_pip: Path) -> None:
    with pytest.raises(QuorefChecksumError):
        quoref.fetch_bigbench(progress=False)
    assert not quoref.quoref_cache_path().exists()
    assert not any((quoref.quoref_cache_path().parents[1] / "tmp").iterdir())


def test_fetch_extracts_only_the_task_and_reuses_the_cache(fake_pip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quoref, "BIGBENCH_SHA256", quoref._sha256(fake_pip))
    path = quoref.fetch_bigbench(progress=False)
    assert path == quoref.quoref_cache_path()
    assert json.loads(path.read_text(encoding="utf-8")) == _task()
    assert sorted(p.name for p in path.parent.iterdir()) == ["quoref.json"]
    monkeypatch.setattr(quoref, "_pip_download", lambda dest: pytest.fail("downloaded again"))
    assert quoref.fetch_bigbench(progress=False) == path
    assert len(load_quoref()) == 5
