"""Validators of plain inputs shared by SpecPC, SpecKV and the adapters: one per concept.

Each returns the value it accepts (narrowed) or raises a one-line error that names the
argument and what it must be.
"""

from __future__ import annotations

from collections.abc import Sequence


def validate_documents(documents: object) -> list[str]:
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of strings, got {type(documents).__name__}")
    for position, document in enumerate(documents):
        if not isinstance(document, str):
            raise TypeError(f"documents[{position}] must be a str, got {type(document).__name__}")
    return list(documents)


def validate_text(name: str, value: object, *, allow_empty: bool) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ValueError(f"{name} must not be empty")
    return value
