"""SpecKV's eviction policies, registered by name.

=============  ==========================================  ==========  =================
name           class                                       draft       observes
=============  ==========================================  ==========  =================
``speckv``     :class:`~.speckv.DraftAttention`            yes         window + answer
``snapkv``     :class:`~.snapkv.SnapKV`                    no          window queries
``streaming``  :class:`~.streaming.StreamingLLM`           no          nothing
``knorm``      :class:`~.knorm.KeyNorm`                    no          nothing (keys)
=============  ==========================================  ==========  =================

``"attention"`` (the default, as in 0.1) is ``speckv``, which scores like ``snapkv`` when
SpecKV has no draft (its own or its compressor's) or ``lookahead=0``. Naming ``speckv``
explicitly without a draft is refused.

Adding a policy: one file here with one dataclass (see :mod:`.base`), then its class in
:data:`POLICIES` below; ``CONTRIBUTING.md`` has the recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .base import EntryScorer, EvictionPolicy, Phase, ScoredPolicy
from .knorm import KeyNorm
from .snapkv import SnapKV
from .speckv import DraftAttention
from .streaming import StreamingLLM

POLICIES: dict[str, type[EvictionPolicy]] = {
    policy.name: policy
    for policy in (
        DraftAttention,
        SnapKV,
        StreamingLLM,
        KeyNorm,
    )
}
"""Every registered policy, by name."""

ATTENTION = "attention"
"""Alias of ``speckv`` that also accepts no draft (then it scores like ``snapkv``)."""


def policy_class(name: str, *, has_draft: bool) -> type[EvictionPolicy]:
    """The class registered as ``name`` (resolving the ``"attention"`` alias).

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones.
    """
    if name == ATTENTION:
        return DraftAttention
    if name == DraftAttention.name and not has_draft:
        raise ValueError(
            "policy 'speckv' needs a draft (draft=... or a compressor); without one use "
            "policy='snapkv', or the default policy"
        )
    if name not in POLICIES:
        known = ", ".join(sorted([*POLICIES, ATTENTION]))
        raise ValueError(f"unknown policy {name!r}; known policies: {known}")
    return POLICIES[name]


def policy_fields(policy: type[EvictionPolicy]) -> frozenset[str]:
    """Names of a policy's own settings."""
    return frozenset(field.name for field in dataclasses.fields(policy))


def make_policy(name: str, settings: Mapping[str, Any] | None = None, *, has_draft: bool) -> EvictionPolicy:
    """Build policy ``name`` with ``settings`` (its own fields only).

    Raises
    ------
    ValueError
        For an unknown policy or a setting that is not one of the policy's.
    """
    cls = policy_class(name, has_draft=has_draft)
    settings = dict(settings or {})
    unknown = sorted(set(settings) - policy_fields(cls))
    if unknown:
        own = ", ".join(sorted(policy_fields(cls))) or "none"
        raise ValueError(f"{', '.join(unknown)}: not a setting of policy {cls.name!r} (its settings: {own})")
    return cls(**settings)


__all__ = [
    "ATTENTION",
    "POLICIES",
    "DraftAttention",
    "EntryScorer",
    "EvictionPolicy",
    "KeyNorm",
    "Phase",
    "ScoredPolicy",
    "SnapKV",
    "StreamingLLM",
    "make_policy",
    "policy_class",
    "policy_fields",
]
