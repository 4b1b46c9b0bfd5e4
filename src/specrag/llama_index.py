"""LlamaIndex integration (``specrag.llama_index``): see :mod:`specrag.integrations.llama_index`.

Kept at this path so code written against specrag 0.1 keeps importing from it.
"""

from .integrations.llama_index import *  # noqa: F403
from .integrations.llama_index import __all__ as __all__
