"""The framework-free core: models and bundles, attention capture, SpecPC, SpecKV.

Everything here works on plain strings and token ids and imports nothing from the outside
layers (``specrag.integrations``, the CLI, the demo, rendering, the bench); a test reads
the imports and fails on any that point outward.

Layout
------
``models``, ``bundles``     loading drafts and targets; verified offline bundles
``attention``               scoped attention capture (no global patching)
``segmentation``, ``sentences``   word units with character offsets; sentence boundaries
``embeddings``              sentence relevance (offline MiniLM, any embedder)
``budget``, ``validation``  budget arithmetic and the meaning of every budget; input checks
``trimming``                fitting a chat history to a token budget (plain strings)
``specpc/``                 prompt compression: engine, ranking steps, selection, result
``speckv/``                 KV-cache eviction: engine, policies (one file each), cache
"""

from .models import LoadedModel, build_tiny_model, load_model
from .speckv import SpecKV, SpecKVResult
from .specpc import CompressedDocument, CompressionResult, ScoredContext, SpecPC, SpecPCSettings

__all__ = [
    "CompressedDocument",
    "CompressionResult",
    "LoadedModel",
    "ScoredContext",
    "SpecKV",
    "SpecKVResult",
    "SpecPC",
    "SpecPCSettings",
    "build_tiny_model",
    "load_model",
]
