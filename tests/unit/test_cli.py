"""The ``specrag`` command on a tiny random draft saved to a folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from specrag.cli import app

runner = CliRunner()
DOCS = {
    "a.txt": "The Eiffel Tower was finished in 1889. It is 330 metres tall and made of iron.",
    "b.txt": "東京タワーは1958年に完成した。Cooking pasta takes ten minutes in salted water.",
}


@pytest.fixture()
def files(tmp_path: Path) -> list[str]:
    paths = []
    for name, text in DOCS.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    return paths


def test_compress_prints_verbatim_context(draft_dir: str, files: list[str]) -> None:
    result = runner.invoke(
        app, ["compress", "-q", "When was it finished?", "--keep", "0.5", "--draft", draft_dir, *files]
    )
    assert result.exit_code == 0, result.output
    context = result.stdout.strip()
    assert context
    for piece in context.replace("\n\n", " … ").split(" … "):
        assert any(piece in text for text in DOCS.values()), piece


def test_json_output_is_the_full_result(draft_dir: str, files: list[str]) -> None:
    result = runner.invoke(app, ["compress", "-q", "How tall?", "-n", "10", "-d", draft_dir, "--json", *files])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["budget"] == 10
    assert sum(doc["kept_tokens"] for doc in data["documents"]) == 10
    assert [doc["original"] for doc in data["documents"]] == list(DOCS.values())


def test_stdin_paragraphs_show_and_html(draft_dir: str, tmp_path: Path) -> None:
    page = tmp_path / "kept.html"
    stdin = "\n\n".join(DOCS.values())
    result = runner.invoke(
        app, ["compress", "-q", "Tokyo?", "--paragraphs", "--show", "--html", str(page), "-d", draft_dir], input=stdin
    )
    assert result.exit_code == 0, result.output
    assert "document 1" in result.stdout and "tokens kept" in result.stdout
    html = page.read_text(encoding="utf-8")
    assert html.count('class="doc"') == 2 and 'class="kept"' in html and "東京タワー" in html


def test_sentence_snapping_with_minilm_relevance(draft_dir: str, files: list[str]) -> None:
    result = runner.invoke(
        app,
        [
            "compress",
            "-q",
            "When was it finished?",
            "--keep",
            "0.5",
            "--snap",
            "sentence",
            "--embedder",
            "minilm",
            "--json",
            "-d",
            draft_dir,
            *files,
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert 0 < sum(doc["kept_tokens"] for doc in data["documents"]) <= data["budget"]
    for doc in data["documents"]:
        assert doc["text"] == " … ".join(doc["original"][start:end] for start, end in doc["spans"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compress", "-q", "", "x.txt"], "--question"),
        (["compress", "-q", "Why?", "--keep", "1.5", "DRAFT"], "keep_ratio"),
        (["compress", "-q", "Why?", "--max-tokens", "-2", "DRAFT"], "max_tokens"),
        (["compress", "-q", "Why?", "DRAFT", "no-such-file.txt"], "no such file"),
        (["models", "pull", "no-such-bundle"], "smollm2-135m"),
        (["compress", "-q", "Why?", "--snap", "paragraph", "DRAFT", "x.txt"], "snap"),
        (["compress", "-q", "Why?", "--embedder", "bert", "DRAFT", "x.txt"], "embedder must be"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args: list[str], message: str, draft_dir: str) -> None:
    args = [a for a in args if a != "DRAFT"] + (["-d", draft_dir] if "DRAFT" in args else [])
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_models_list_json_names_every_bundle() -> None:
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    names = {entry["spec"]["name"] for entry in json.loads(result.stdout)}
    assert names == {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "gemma3-270m"}


def test_target_tokenizer_counts_the_budget_in_that_models_tokens(draft_dir: str, files: list[str]) -> None:
    args = ["compress", "-q", "How tall?", "-n", "10", "-d", draft_dir, "--json", "--embedder", "none"]
    result = runner.invoke(app, [*args, "--target-tokenizer", draft_dir, *files])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["counted_in"].startswith("target tokens")
    assert sum(doc["kept_tokens"] for doc in payload["documents"]) <= payload["budget"] == 10
    missing = runner.invoke(app, [*args, "--target-tokenizer", "no-such-model", *files])
    assert missing.exit_code != 0 and "no-such-model" in missing.output
