"""What ChatSpecKV declares to LangChain's standard suites (langchain-tests), shared by the
unit suite on tiny models (tests/unit/test_speckv_langchain.py) and the integration suite on
the real smollm2-135m (tests/real/test_speckv_langchain_standard.py).

A mixin, not a test class (its name does not start with ``Test``): each suite combines it
with ``ChatModelUnitTests`` or ``ChatModelIntegrationTests`` and adds its own models.
"""

from __future__ import annotations

from typing import Any

from specrag.langchain import ChatSpecKV


class ChatSpecKVDeclarations:
    """ChatSpecKV's class, and what it does not do (skipped by the suites, not failed)."""

    @property
    def chat_model_class(self) -> type[ChatSpecKV]:
        return ChatSpecKV

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # A local model has no API key, network timeout or retries. ChatSpecKV rejects
        # unknown keywords instead of ignoring them, so the suite's defaults for those
        # three are left out rather than silently accepted.
        params = dict(super().standard_chat_model_params)  # type: ignore[misc]
        for name in ("api_key", "timeout", "max_retries"):
            params.pop(name, None)
        return params

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_audio_inputs(self) -> bool:
        return False

    @property
    def supports_pdf_inputs(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True
