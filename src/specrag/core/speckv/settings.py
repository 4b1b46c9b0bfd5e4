"""SpecKV's configuration: engine settings, the eviction policy, generation options.

One function, :func:`resolve_config`, turns what a caller passes (``SpecKV(**settings)``,
an adapter's ``settings`` dict) into validated settings plus a policy, so SpecKV and both
framework adapters accept and refuse exactly the same things, without loading a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from typing_extensions import TypedDict

from .decoding import Sampling
from .policies import ATTENTION, EvictionPolicy, policy_class, policy_fields


class SpecKVSettings(BaseModel):
    """Engine settings of SpecKV, shared by every policy. Unknown names are rejected.

    What is scored and how entries are picked belongs to the policy (its own settings:
    :mod:`specrag.core.speckv.policies`); these govern what every policy shares.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(
        32,
        ge=1,
        description="Most recent prompt entries always kept (the question); attention "
        "policies also score with their queries. A budget is at least this.",
    )
    rescore_every: int | None = Field(
        None,
        ge=1,
        description="Also evict during decoding: every this many tokens, cut every budgeted "
        "layer back so the cache never exceeds the budget. None = evict once after prefill "
        "(the paper's behaviour).",
    )
    overlap_draft: bool | None = Field(
        None,
        description="Write the draft's answer in a worker thread while the target prefills "
        "the prompt, instead of before it: only the scoring forward after the prefill needs "
        "the answer. Tokens are identical either way; time to first token drops by up to the "
        "draft's time when the two really run at once. None = only when draft and target sit "
        "on different devices; True = always (one CUDA device: the draft gets its own stream; "
        "one CPU: both share torch's threads, so it pays only with spare cores); False = never.",
    )
    document_template: str = Field(
        "Documents:\n\n{context}\n\nQuestion: {question}\nAnswer:",
        description="How documents and question form the user turn when documents are given.",
    )

    @field_validator("document_template")
    @classmethod
    def _has_slots(cls, value: str) -> str:
        for slot in ("{context}", "{question}"):
            if slot not in value:
                raise ValueError(f"document_template must contain {slot!r}")
        return value


ENGINE_FIELDS = frozenset(SpecKVSettings.model_fields)


def resolve_config(settings: Mapping[str, Any], *, has_draft: bool) -> tuple[SpecKVSettings, EvictionPolicy]:
    """Split ``settings`` into engine settings and a policy built with its own fields.

    ``settings["policy"]`` is a registered name (default ``"attention"``, see
    :mod:`~specrag.core.speckv.policies`) or a ready :class:`EvictionPolicy`; with a name, the policy's
    fields (``sink_tokens``, ``pool_kernel``, ``lookahead``...) may sit beside it.

    Raises
    ------
    ValueError
        For an unknown policy, a setting neither the engine nor the policy has, or invalid
        values.
    """
    options = dict(settings)
    chosen = options.pop("policy", ATTENTION)
    engine = {name: options.pop(name) for name in list(options) if name in ENGINE_FIELDS}
    if isinstance(chosen, EvictionPolicy):
        if options:
            raise ValueError(
                f"{', '.join(sorted(options))}: give these to the policy object "
                f"({type(chosen).__name__}(...)), not to SpecKV"
            )
        policy = chosen
    elif isinstance(chosen, str):
        cls = policy_class(chosen, has_draft=has_draft)
        unknown = sorted(set(options) - policy_fields(cls))
        if unknown:
            own = ", ".join(sorted(policy_fields(cls))) or "none"
            raise ValueError(
                f"unknown setting(s) {', '.join(unknown)} for SpecKV with policy {cls.name!r}; "
                f"engine settings: {', '.join(sorted(ENGINE_FIELDS))}; policy settings: {own}"
            )
        policy = cls(**options)
    else:
        raise TypeError(f"policy must be a policy name or an EvictionPolicy, got {type(chosen).__name__}")
    try:
        return SpecKVSettings(**engine), policy
    except ValidationError as error:
        raise ValueError(f"invalid SpecKV settings: {error}") from None


def validate_budget(budget: object, settings: SpecKVSettings, policy: EvictionPolicy) -> int:
    """Check a cache budget against the settings and the policy (before any model loads)."""
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise TypeError(f"budget must be an int (cache entries per layer), got {type(budget).__name__}")
    if budget <= 0:
        raise ValueError(f"budget must be > 0, got {budget}")
    if budget < settings.window:
        raise ValueError(
            f"budget ({budget}) must be at least window ({settings.window}): the last window "
            "prompt entries are always kept"
        )
    every = settings.rescore_every
    if every is not None and budget - every < settings.window:
        raise ValueError(
            f"rescore_every ({every}) must leave room for the window: budget - rescore_every "
            f"({budget - every}) < window ({settings.window})"
        )
    described = "budget - rescore_every" if every is not None else "budget"
    policy.check_keep(kept_after_eviction(budget, settings), described)
    return budget


def kept_after_eviction(budget: int, settings: SpecKVSettings) -> int:
    """Entries a budgeted layer holds right after an eviction: the budget, less the room
    re-scoring leaves for the tokens generated until the next one."""
    return budget - (settings.rescore_every or 0)


class GenerationKwargs(TypedDict, total=False):
    """Keyword arguments of every SpecKV generation method (see :class:`GenerationOptions`)."""

    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    stop: str | Sequence[str] | None


@dataclass(frozen=True)
class GenerationOptions:
    """How one generation runs, validated once for ``generate``/``stream``/``agenerate``/
    ``astream`` and the adapters.

    Parameters
    ----------
    max_new_tokens
        Most tokens to generate (> 0).
    temperature, top_p, top_k
        ``temperature=0`` is greedy; otherwise sampling with top-p / top-k cuts.
    seed
        Seeds the call's private ``torch.Generator`` (the global RNG is never touched).
    stop
        Stop strings; generation ends when the text contains one, and it is cut there.
        Stored as a tuple, empty strings dropped.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: str | Sequence[str] | None = None
    sampling: Sampling = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise TypeError(f"max_new_tokens must be an int, got {type(self.max_new_tokens).__name__}")
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be > 0, got {self.max_new_tokens}")
        object.__setattr__(self, "sampling", Sampling(self.temperature, self.top_p, self.top_k))
        object.__setattr__(self, "stop", tuple(_validate_stop(self.stop)))


def _validate_stop(stop: object) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    if not isinstance(stop, Sequence) or not all(isinstance(item, str) for item in stop):
        raise TypeError("stop must be a str or a list of str")
    return [item for item in stop if item]
