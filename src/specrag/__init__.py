"""specrag: draft-model approximate inference for RAG pipelines.

SpecPC compresses retrieved documents with a small draft model's attention; the result is
plain text that any LLM can read. See https://arxiv.org/abs/2506.08373 for the method.
"""

from .bundles import BUNDLES, list_bundles, pull_bundle
from .models import LoadedModel, build_tiny_model, load_model
from .result import CompressedDocument, CompressionResult
from .speckv import SpecKV, SpecKVResult
from .specpc import ScoredContext, SpecPC, SpecPCSettings

__version__ = "0.1.0"

__all__ = [
    "BUNDLES",
    "CompressedDocument",
    "CompressionResult",
    "LoadedModel",
    "ScoredContext",
    "SpecKV",
    "SpecKVResult",
    "SpecPC",
    "SpecPCSettings",
    "__version__",
    "build_tiny_model",
    "list_bundles",
    "load_model",
    "pull_bundle",
]
