"""Shared test configuration.

Under CI (``CI`` set) Hypothesis runs derandomized, so a green build stays green and a
failure reproduces; locally it explores new examples on every run.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


# ---------------------------------------------------------------------------- tiny models
# Built from configs in code (random weights, instant); module-scoped so a test module that
# changes one (e.g. a chat template on its tokenizer) cannot leak into another module.
import pytest  # noqa: E402

from specrag import LoadedModel, build_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def llama() -> LoadedModel:
    """A tiny random Llama: the default model of most unit tests."""
    return build_tiny_model("llama")


@pytest.fixture(scope="module")
def qwen2() -> LoadedModel:
    """A tiny random Qwen2 (its greedy answer to the SpecKV tests' prompt runs 40 tokens
    without EOS, which decode tests need)."""
    return build_tiny_model("qwen2")


@pytest.fixture(scope="module")
def draft(llama: LoadedModel) -> LoadedModel:
    """The draft of SpecPC unit tests: the tiny Llama (modules may override it)."""
    return llama


@pytest.fixture(scope="session")
def draft_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny Llama saved as a model folder, for code that loads a draft by path (the CLI,
    a Ray Serve replica in another process)."""
    folder = tmp_path_factory.mktemp("tiny-draft")
    tiny = build_tiny_model("llama")
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    return str(folder)
