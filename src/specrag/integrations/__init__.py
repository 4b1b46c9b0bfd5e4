"""Framework adapters: thin LangChain and LlamaIndex classes over :mod:`specrag.core`.

``sources`` holds what both share (building an engine lazily from validated fields); the
two framework modules never import each other. Import them as ``specrag.langchain`` and
``specrag.llama_index`` (each needs its framework installed).
"""
