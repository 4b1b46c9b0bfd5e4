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
        validate_encodable(f"documents[{position}]", document)
    return list(documents)


def validate_text(name: str, value: object, *, allow_empty: bool) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ValueError(f"{name} must not be empty")
    return validate_encodable(name, value)


def validate_encodable(name: str, value: str) -> str:
    """``value`` if it is valid Unicode text, else a one-line error naming where it is not.

    A lone surrogate (U+D800..U+DFFF, what ``errors="surrogateescape"`` decoding or a bad
    JSON escape leaves behind) cannot be encoded as UTF-8, so tokenizers fail on it deep
    inside with an opaque ``TypeError``; this names the argument and the position instead.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(value[error.start])
        raise ValueError(
            f"{name} has a lone surrogate U+{code:04X} at character {error.start}, which no tokenizer "
            "can encode; decode the source with errors='replace' or remove it"
        ) from None
    return value
