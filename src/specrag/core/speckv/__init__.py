"""SpecKV: generation inside a fixed KV-cache budget (framework-free).

Modules: :mod:`.engine` (the :class:`SpecKV` engine: forwards, eviction points, decode
loop), :mod:`.settings` (engine settings, generation options, budget validation),
:mod:`.policies` (how entries are picked, one file per policy), :mod:`.attention_scores`
(per-KV-head attention scores), :mod:`.cache` (the budgeted transformers cache),
:mod:`.decoding` (sampling, stop strings, text streams), :mod:`.result`.
"""

from .engine import AsyncSpecKVStream, SpecKV, SpecKVStream
from .policies import POLICIES, EvictionPolicy, make_policy
from .result import SpecKVResult
from .settings import GenerationOptions, SpecKVSettings, resolve_config, validate_budget

__all__ = [
    "POLICIES",
    "AsyncSpecKVStream",
    "EvictionPolicy",
    "GenerationOptions",
    "SpecKV",
    "SpecKVResult",
    "SpecKVSettings",
    "SpecKVStream",
    "make_policy",
    "resolve_config",
    "validate_budget",
]
