"""SpecPC: prompt compression with a draft model's attention (framework-free).

Modules: :mod:`.compressor` (the :class:`SpecPC` engine and its draft passes),
:mod:`.settings`, :mod:`.ranking` (the ranking steps), :mod:`.selection` (budget filling and
span building), :mod:`.result` (what a call returns).
"""

from .compressor import DEFAULT_DRAFT, ScoredContext, SpecPC
from .result import CompressedDocument, CompressionResult
from .settings import SpecPCSettings

__all__ = [
    "DEFAULT_DRAFT",
    "CompressedDocument",
    "CompressionResult",
    "ScoredContext",
    "SpecPC",
    "SpecPCSettings",
]
