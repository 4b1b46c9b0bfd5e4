"""ChatSpecKV on tiny random models: LangChain's standard unit suite plus real behaviour.

The standard suite checks the LangChain contract; the tests below check that what comes
out is what the SpecKV engine produces (text, usage, stop strings, streaming, async).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_tests.unit_tests import ChatModelUnitTests

from chat_standard import ChatSpecKVDeclarations
from specrag import SpecKV, build_tiny_model
from specrag.langchain import ChatSpecKV

TARGET = build_tiny_model("llama")
DRAFT = build_tiny_model("llama", num_hidden_layers=2)
QUESTION = (
    "The capital of France is Paris. The river Seine flows through the city. "
    "Mount Everest is the highest mountain on Earth. In 1969 two astronauts walked on the "
    "Moon. What is the capital of France?"
)


class TestChatSpecKVStandard(ChatSpecKVDeclarations, ChatModelUnitTests):
    """LangChain's own contract tests, with what ChatSpecKV does not do declared."""

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"target": TARGET, "draft": DRAFT, "budget": 64}


@pytest.fixture(scope="module")
def engine() -> SpecKV:
    return SpecKV(TARGET, DRAFT, budget=40, window=8)


@pytest.fixture
def chat(engine) -> ChatSpecKV:
    return ChatSpecKV(engine=engine, max_tokens=12)


def test_invoke_returns_the_engine_answer_with_usage(chat, engine):
    message = chat.invoke([SystemMessage("Be brief."), HumanMessage(QUESTION)])
    expected = engine.generate(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}],
        max_new_tokens=12,
    )
    assert isinstance(message, AIMessage)
    assert message.content == expected.text
    assert message.usage_metadata == {
        "input_tokens": expected.prompt_tokens,
        "output_tokens": len(expected.token_ids),
        "total_tokens": expected.prompt_tokens + len(expected.token_ids),
    }
    figures = message.response_metadata["speckv"]
    assert message.response_metadata["finish_reason"] == expected.finish_reason
    assert figures["evicted"] and figures["prefill_cache_entries"] == [40] * 4


def test_stream_joins_to_invoke_and_ends_with_usage(chat):
    chunks = list(chat.stream(QUESTION))
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert total.content == chat.invoke(QUESTION).content
    assert chunks[-1].chunk_position == "last" and chunks[-1].usage_metadata is not None
    assert total.usage_metadata["output_tokens"] == 12


def test_streaming_flag_routes_invoke_through_the_stream(engine):
    streaming = ChatSpecKV(engine=engine, max_tokens=6, streaming=True)
    assert streaming.invoke(QUESTION).content == ChatSpecKV(engine=engine, max_tokens=6).invoke(QUESTION).content


def test_stop_sequences_and_per_call_options(chat):
    full = chat.invoke(QUESTION).content
    assert len(full) > 6
    stop = full[3:6]
    cut = chat.invoke(QUESTION, stop=[stop])
    assert cut.content == full[: full.index(stop)]
    assert cut.response_metadata["finish_reason"] == "stop"
    defaulted = chat.model_copy(update={"stop": [stop]})
    assert defaulted.invoke(QUESTION).content == cut.content
    short = chat.invoke(QUESTION, max_tokens=3)
    assert short.usage_metadata["output_tokens"] == 3
    sampled = [chat.invoke(QUESTION, temperature=1.0, seed=5).content for _ in range(2)]
    assert sampled[0] == sampled[1]
    with pytest.raises(TypeError, match="tools"):
        chat.invoke(QUESTION, tools=[{"name": "x"}])


def test_non_text_content_is_refused(chat):
    image = {"type": "image", "url": "https://example.com/cat.png"}
    with pytest.raises(ValueError, match="text only"):
        chat.invoke([HumanMessage(content=[{"type": "text", "text": "What is it?"}, image])])


def test_in_an_lcel_chain(chat):
    prompt = ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("human", "{q}")])
    answer = (prompt | chat | StrOutputParser()).invoke({"q": QUESTION})
    assert isinstance(answer, str)
    assert answer == chat.invoke([SystemMessage("Answer briefly."), HumanMessage(QUESTION)]).content


def test_async_paths_do_not_block_the_event_loop(chat):
    expected = chat.invoke(QUESTION).content

    async def main() -> tuple[str, str, int]:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        invoked = await chat.ainvoke(QUESTION)
        streamed = "".join([str(chunk.content) async for chunk in chat.astream(QUESTION)])
        done = True
        await task
        return str(invoked.content), streamed, ticks

    invoked, streamed, ticks = asyncio.run(main())
    assert invoked == expected == streamed
    assert ticks > 3


def test_construction_is_lazy_and_validated():
    chat = ChatSpecKV(target=TARGET, draft=DRAFT, budget=64, settings={"window": 16})
    assert chat._engine is None  # nothing built until the first call
    assert chat.invoke("Hello", max_tokens=2).usage_metadata["output_tokens"] <= 2
    assert chat._engine is not None and chat._engine.budget == 64
    assert chat.model_dump()["target"] == "tiny-llama"  # serialises names, not networks
    assert "tiny-llama" in repr(chat)
    with pytest.raises(ValueError, match="budget"):
        ChatSpecKV(target=TARGET)
    with pytest.raises(ValueError, match="budget"):
        ChatSpecKV(target=TARGET, budget=8)  # below the default window of 32
    with pytest.raises(ValueError, match="settings"):
        ChatSpecKV(target=TARGET, budget=64, settings={"windoww": 3})
    with pytest.raises(ValueError, match="target"):
        ChatSpecKV(budget=64)
    with pytest.raises(ValueError, match="api_key"):
        ChatSpecKV(target=TARGET, budget=64, api_key="secret")
    with pytest.raises(ValueError, match="engine"):
        ChatSpecKV(engine=SpecKV(TARGET, None, budget=64), budget=32)


def test_ls_params_name_the_target(chat):
    params = chat._get_ls_params(stop=["x"])
    assert params["ls_provider"] == "specrag" and params["ls_model_name"] == "tiny-llama"
    assert params["ls_max_tokens"] == 12 and params["ls_stop"] == ["x"]
