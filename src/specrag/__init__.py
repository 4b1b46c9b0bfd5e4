"""specrag: draft-model approximate inference for RAG pipelines.

SpecPC compresses retrieved documents with a small draft model's attention; the result is
plain text that any LLM can read. SpecKV generates inside a fixed KV-cache budget, guided
by a draft's approximate answer. See https://arxiv.org/abs/2506.08373 for the methods.

Layers: :mod:`specrag.core` (framework-free), :mod:`specrag.integrations` (LangChain,
LlamaIndex; also importable as :mod:`specrag.langchain` and :mod:`specrag.llama_index`),
and on the outside :mod:`specrag.cli`, :mod:`specrag.demo`, :mod:`specrag.render`,
:mod:`specrag.bench`.
"""

from .core.bundles import BUNDLES, list_bundles, pull_bundle
from .core.models import LoadedModel, build_tiny_model, load_model, load_tokenizer
from .core.speckv import POLICIES, EvictionPolicy, GenerationOptions, SpecKV, SpecKVResult, SpecKVSettings
from .core.specpc import (
    CompressedDocument,
    CompressionResult,
    CompressRequest,
    ScoredContext,
    SpecPC,
    SpecPCSettings,
)

__version__ = "0.2.0.dev0"
"""The package version: the one place it is written (``pyproject.toml`` reads it)."""

__all__ = [
    "BUNDLES",
    "POLICIES",
    "CompressRequest",
    "CompressedDocument",
    "CompressionResult",
    "EvictionPolicy",
    "GenerationOptions",
    "LoadedModel",
    "ScoredContext",
    "SpecKV",
    "SpecKVResult",
    "SpecKVSettings",
    "SpecPC",
    "SpecPCSettings",
    "__version__",
    "build_tiny_model",
    "list_bundles",
    "load_model",
    "load_tokenizer",
    "pull_bundle",
]
