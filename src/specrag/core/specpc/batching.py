"""Batched compression: many requests' draft passes as padded micro-batches.

Why batch
---------
A server compresses many requests at once. One draft forward over a batch of prompts uses a
GPU far better than the same prompts one by one (the draft is small: one prompt leaves most
of the device idle). Pieces of all requests (a long request may need several draft passes)
are sorted by length, so each micro-batch pads little, and cut into micro-batches of at most
``batch_size`` prompts and ``max_batch_tokens`` padded tokens, which bounds memory. Prompts
are padded on the left, so every row's question ends at the same position and the window
queries line up; the capture masks padding keys and weighs each row's own window
(:class:`~specrag.core.attention.AttentionCapture`), so a row scores as it would alone, up to
floating-point summation order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..validation import validate_documents, validate_text


class CompressRequest(BaseModel):
    """One request of :meth:`~specrag.SpecPC.compress_batch`: what :meth:`~specrag.SpecPC.compress` takes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    documents: list[str] = Field(description="The retrieved documents, in order.")
    question: str = Field(description="What the kept context must answer.")
    instruction: str | None = Field(default=None, description="Placed before the documents; never cut.")

    @model_validator(mode="after")
    def _usable(self) -> CompressRequest:
        # The checks compress() makes, at construction: a served batch refuses one bad
        # request on its own instead of failing the requests batched with it.
        validate_documents(self.documents)
        validate_text("question", self.question, allow_empty=False)
        if self.instruction is not None:
            validate_text("instruction", self.instruction, allow_empty=True)
        return self


def as_request(value: CompressRequest | Mapping[str, Any], position: int) -> CompressRequest:
    """``value`` as a :class:`CompressRequest`; a ``TypeError`` (not a request) or a
    ``ValueError`` (a bad field) naming the request otherwise."""
    if isinstance(value, CompressRequest):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(
            f"request {position}: expected a CompressRequest or a dict with documents, question "
            f"(and instruction), got {type(value).__name__}"
        )
    try:
        return CompressRequest(**value)
    except ValidationError as error:
        raise ValueError(f"request {position}: {describe(error)}") from None


def describe(error: ValidationError) -> str:
    """A pydantic error as one line: each problem as ``field: message``."""
    problems = []
    for problem in error.errors():
        cause = problem.get("ctx", {}).get("error")  # our own validators' one-line message
        message = str(cause) if cause is not None else problem["msg"]
        problems.append(f"{'.'.join(map(str, problem['loc']))}: {message}" if problem["loc"] else message)
    return "; ".join(problems)


def micro_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int) -> Iterator[list[int]]:
    """Indices into ``lengths``, longest first, in groups of at most ``batch_size`` whose
    padded size (longest times count) stays within ``max_batch_tokens`` (a prompt longer
    than that runs alone)."""
    if batch_size < 1 or max_batch_tokens < 1:
        raise ValueError(f"batch_size and max_batch_tokens must be >= 1, got {batch_size}, {max_batch_tokens}")
    order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
    group: list[int] = []
    for index in order:
        width = lengths[group[0]] if group else lengths[index]  # longest first: the first sets the width
        if group and (len(group) == batch_size or width * (len(group) + 1) > max_batch_tokens):
            yield group
            group = []
        group.append(index)
    if group:
        yield group


def pad_left(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of ``rows`` padded on the left to the longest."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for position, row in enumerate(rows):
        ids[position, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
        mask[position, width - len(row) :] = 1
    return ids.to(device), mask.to(device)
