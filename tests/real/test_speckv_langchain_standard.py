"""LangChain's standard *integration* suite on ChatSpecKV with the real smollm2-135m.

The unit suite (tests/unit/test_speckv_langchain.py) checks the contract on tiny random
models; this one lets LangChain's own integration tests talk to a trained model: invoke,
stream, batch, async, stop sequences, usage metadata, message histories. What ChatSpecKV
does not do is declared (tools, structured output, multimodal input) and skipped by the
suite itself. smollm2-135m is target and draft at once, budget 256: the prompts are short,
so the cache budget holds and the tests cost seconds each.

Tool-call *histories* are a separate matter from tool calling: an agent may hand over a
conversation that already holds tool calls and results. smollm2-135m's chat template has no
tool support, so such a history must be refused in one line that says so, never rendered
with the calls silently dropped (the unit tests cover a template that supports tools).
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests

from chat_standard import ChatSpecKVDeclarations
from specrag import LoadedModel, load_model
from specrag.langchain import ChatSpecKV

pytestmark = pytest.mark.real


@functools.cache
def _smollm() -> LoadedModel:
    return load_model("smollm2-135m")


class TestChatSpecKVIntegration(ChatSpecKVDeclarations, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"target": _smollm(), "draft": _smollm(), "budget": 256, "max_tokens": 48}


def test_a_tool_call_history_is_refused_in_one_line_by_a_template_without_tools() -> None:
    chat = ChatSpecKV(target=_smollm(), draft=_smollm(), budget=256, max_tokens=8)
    history = [
        HumanMessage("What is the weather in Paris?"),
        AIMessage(content="", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call1"}]),
        ToolMessage(content="18 C and sunny", tool_call_id="call1"),
        HumanMessage("So, shorts or a coat?"),
    ]
    with pytest.raises(ValueError) as caught:
        chat.invoke(history)
    message = str(caught.value)
    assert "\n" not in message and "tool" in message
