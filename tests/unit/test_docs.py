"""Every ```python block in README.md and docs/*.md runs, so the docs cannot rot silently.

Conventions, for whoever writes docs:

- The blocks of one file run in order in one namespace, as a reader pasting them would run
  them; each file gets a fresh namespace and an empty working directory.
- Prefer ``build_tiny_model()`` (instant, no download) and say so in the text.
- A file whose code names an offline bundle in a string (``SpecPC("smollm2-135m")``) needs
  that real model: its test is marked ``real`` and runs with the real-model tests.
- ``<!-- skip-test -->`` on the line before a block leaves it out. Only for blocks that need
  a *target* model (the 1.5B one): a test below enforces that.

Tracebacks point into the Markdown file: code is compiled under ``docs/NAME.md`` with its
own line numbers.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from specrag.core.bundles import BUNDLES

ROOT = Path(__file__).resolve().parents[2]
SKIP_MARK = "<!-- skip-test -->"
_FENCE = re.compile(r"^```python[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_TARGETS = {name for name, spec in BUNDLES.items() if spec.role == "target"}


@dataclass(frozen=True)
class Block:
    """One fenced python block: where it starts (1-based line of its first code line)."""

    path: Path
    line: int
    code: str
    skipped: bool


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip().splitlines()
        found.append(
            Block(
                path=path,
                line=text.count("\n", 0, match.start("code")) + 1,
                code=match.group("code"),
                skipped=bool(before) and before[-1].strip() == SKIP_MARK,
            )
        )
    return found


def bundles_named(code: str) -> set[str]:
    """Offline bundle names that appear as string literals in ``code`` (comments ignored).

    Code that does not parse names none here; running it reports the syntax error in the
    test of its file rather than breaking collection of every file.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in BUNDLES
    }


def _cases() -> list[object]:
    cases = []
    for path in doc_files():
        runnable = [block for block in blocks(path) if not block.skipped]
        if not runnable:
            continue
        needs_real = any(bundles_named(block.code) for block in runnable)
        cases.append(
            pytest.param(
                path,
                id=str(path.relative_to(ROOT)),
                marks=[pytest.mark.real] if needs_real else [],
            )
        )
    return cases


@pytest.mark.parametrize("path", _cases())
def test_code_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"doc_{path.stem}"}
    for block in blocks(path):
        if block.skipped:
            continue
        padded = "\n" * (block.line - 1) + block.code  # line numbers as in the Markdown file
        exec(compile(padded, str(path.relative_to(ROOT)), "exec"), namespace)


def test_skip_mark_is_only_for_target_models() -> None:
    for path in doc_files():
        for block in blocks(path):
            if block.skipped:
                assert bundles_named(block.code) & _TARGETS, (
                    f"{path.name}:{block.line} is marked {SKIP_MARK} but loads no target model; "
                    "use build_tiny_model() so it runs"
                )


def test_blocks_are_found() -> None:
    """The fence pattern finds the docs' code (guards against a silently empty test)."""
    found = {path.name: len(blocks(path)) for path in doc_files()}
    assert found["quickstart.md"] >= 1
    assert found["langchain.md"] >= 3
    assert found["llama_index.md"] >= 2
    assert found["agent_trimming.md"] >= 3
