"""SpecPC: prompt compression with a draft model's attention (framework-free).

Modules: :mod:`.compressor` (the :class:`SpecPC` engine and its draft passes),
:mod:`.settings`, :mod:`.ranking` (the ranking steps), :mod:`.grouping` (sentence and clause
units), :mod:`.costs` (what a unit costs: draft or target tokens), :mod:`.selection` (budget
filling and span building), :mod:`.batching` (many requests per draft forward),
:mod:`.result` (what a call returns).
"""

from .batching import CompressRequest
from .compressor import DEFAULT_DRAFT, ScoredContext, SpecPC
from .result import CompressedDocument, CompressionResult
from .settings import SpecPCSettings

__all__ = [
    "DEFAULT_DRAFT",
    "CompressRequest",
    "CompressedDocument",
    "CompressionResult",
    "ScoredContext",
    "SpecPC",
    "SpecPCSettings",
]
