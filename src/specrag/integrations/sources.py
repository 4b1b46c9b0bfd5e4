"""Where a framework adapter gets its SpecPC or SpecKV from: shared by both frameworks.

LangChain and LlamaIndex components are both pydantic models, configured by fields and
built cheaply (at import time, when copied, when serialised). Loading a model is not cheap,
so every adapter takes either a ready engine or the fields to build one, validates those
fields at construction without loading anything, and builds the engine once, lazily, on
first use. These mixins hold that logic once; the framework modules only add their
framework's interface on top.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    InstanceOf,
    PrivateAttr,
    ValidationError,
    field_serializer,
    model_validator,
)

from ..core.models import LoadedModel
from ..core.speckv import SpecKV, resolve_config, validate_budget
from ..core.speckv.engine import check_draft
from ..core.specpc import DEFAULT_DRAFT, SpecPC, SpecPCSettings

_BUILD_LOCK = threading.Lock()  # one lazy model build at a time: loading is slow and memory-hungry


def _named(value: Any) -> Any:
    """A LoadedModel is identified by its name in reprs and serialised configs."""
    return value.name if isinstance(value, LoadedModel) else value


def _refuse_clash(owner: str, ready: str, fields_set: set[str], fields: set[str]) -> None:
    clashing = sorted(fields & fields_set)
    if clashing:
        raise ValueError(
            f"{owner}: {ready} is ready-made, so {', '.join(clashing)} would be ignored; give "
            f"either {ready} or {'/'.join(sorted(fields))}, not both"
        )


class _ModelNames(BaseModel):
    # Misspelt field names must fail loudly, not fall back to defaults.
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    def __repr_args__(self) -> Any:
        # A LoadedModel's repr prints the whole network; its name is what identifies it.
        for name, value in super().__repr_args__():
            yield name, _named(value)


class SpecPCSource(_ModelNames):
    """A ready :class:`~specrag.SpecPC` (``compressor``), or a draft and settings to build one."""

    draft: InstanceOf[LoadedModel] | str = Field(
        DEFAULT_DRAFT, description="Draft model: a LoadedModel, bundle name, local folder or hub id."
    )
    compressor: InstanceOf[SpecPC] | None = Field(
        None, exclude=True, description="A ready SpecPC to use instead of draft/settings."
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="SpecPCSettings fields passed to SpecPC (window, ...)."
    )
    device: str = Field("auto", description="Where to load draft when it is given by name.")
    dtype: str = Field("auto", description="Weights dtype when draft is given by name.")
    progress: bool = Field(False, description="Show SpecPC's progress bar on inputs that need several draft passes.")
    target_tokenizer: Any = Field(
        None,
        exclude=True,
        description="Count the budget in the answering model's tokens: a fast tokenizer, a model "
        "name or folder, or a function str -> int (see SpecPC); None: the draft's tokens.",
    )

    _specpc: SpecPC | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_specpc_source(self) -> SpecPCSource:
        owner = type(self).__name__
        if self.compressor is not None:
            _refuse_clash(
                owner, "compressor", self.model_fields_set, {"draft", "settings", "device", "dtype", "target_tokenizer"}
            )
            return self
        try:  # fail at construction, not on the first query, and without loading a model
            SpecPCSettings(**self.settings)
        except ValidationError as error:
            raise ValueError(f"{owner}: invalid SpecPC settings: {error}") from None
        return self

    @field_serializer("draft")
    def _draft_name(self, draft: LoadedModel | str) -> str:
        return _named(draft)

    def get_specpc(self) -> SpecPC:
        """The SpecPC this component uses: the ready one, or one built on first need.

        Public so callers can reach its tokenizer (``get_specpc().draft.tokenizer``) to
        count tokens the way the budget does.
        """
        if self.compressor is not None:
            return self.compressor
        if self._specpc is None:
            with _BUILD_LOCK:
                if self._specpc is None:
                    self._specpc = SpecPC(
                        self.draft,
                        device=self.device,
                        dtype=self.dtype,
                        progress=self.progress,
                        target_tokenizer=self.target_tokenizer,
                        **self.settings,
                    )
        return self._specpc

    async def aget_specpc(self) -> SpecPC:
        """:meth:`get_specpc` without blocking the event loop on a first model load."""
        if self.compressor is not None:
            return self.compressor
        if self._specpc is not None:
            return self._specpc
        return await asyncio.to_thread(self.get_specpc)


class SpecKVSource(_ModelNames):
    """A ready :class:`~specrag.SpecKV` (``engine``), or target, draft, budget and settings."""

    target: InstanceOf[LoadedModel] | str | None = Field(
        None, description="Target model: a LoadedModel, bundle name, local folder or hub id."
    )
    draft: InstanceOf[LoadedModel] | str | None = Field(
        None, description="Draft model; None evicts from the prompt's last tokens only."
    )
    engine: InstanceOf[SpecKV] | None = Field(
        None, exclude=True, description="A ready SpecKV instead of target/draft/budget/settings."
    )
    budget: int | None = Field(None, description="Cache entries kept per layer after prefill.")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="SpecKV settings: policy and its settings, window, rescore_every, ..."
    )
    device: str = Field("auto", description="Where to load models given by name.")
    dtype: str = Field("auto", description="Weights dtype for models given by name.")

    _engine: SpecKV | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_speckv_source(self) -> SpecKVSource:
        owner = type(self).__name__
        if self.engine is not None:
            _refuse_clash(
                owner, "engine", self.model_fields_set, {"target", "draft", "budget", "settings", "device", "dtype"}
            )
            return self
        if self.target is None:
            raise ValueError(f"{owner} needs a target model (or a ready engine)")
        if self.budget is None:
            raise ValueError(f"{owner} needs a budget (cache entries per layer) or an engine")
        try:
            settings, policy = resolve_config(self.settings, has_draft=self.draft is not None)
            validate_budget(self.budget, settings, policy)
            check_draft(policy, self.draft)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{owner}: {error}") from None
        return self

    @field_serializer("target", "draft")
    def _model_name(self, model: LoadedModel | str | None) -> str | None:
        return _named(model)

    @property
    def target_name(self) -> str:
        """Name of the target model (what traces and metadata report)."""
        if self.engine is not None:
            return self.engine.target.name
        return str(_named(self.target))

    def get_engine(self) -> SpecKV:
        """The SpecKV this component uses: the ready one, or one built on first need."""
        if self.engine is not None:
            return self.engine
        if self._engine is None:
            with _BUILD_LOCK:
                if self._engine is None:
                    assert self.target is not None and self.budget is not None
                    self._engine = SpecKV(
                        self.target,
                        self.draft,
                        budget=self.budget,
                        device=self.device,
                        dtype=self.dtype,
                        **self.settings,
                    )
        return self._engine

    async def aget_engine(self) -> SpecKV:
        """:meth:`get_engine` without blocking the event loop on a first model load."""
        if self.engine is not None:
            return self.engine
        if self._engine is not None:
            return self._engine
        return await asyncio.to_thread(self.get_engine)
