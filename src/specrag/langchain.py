"""LangChain integration (``specrag.langchain``): see :mod:`specrag.integrations.langchain`.

Kept at this path so code written against specrag 0.1 keeps importing from it.
"""

from .integrations.langchain import *  # noqa: F403
from .integrations.langchain import __all__ as __all__
