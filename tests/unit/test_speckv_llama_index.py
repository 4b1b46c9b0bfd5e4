"""SpecKVLLM on tiny random models: the LlamaIndex LLM interface, Settings, query engines."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.embeddings import MockEmbedding

from specrag import LoadedModel, SpecKV, build_tiny_model
from specrag.llama_index import SpecKVLLM

QUESTION = (
    "The capital of France is Paris. The river Seine flows through the city. "
    "Mount Everest is the highest mountain on Earth. In 1969 two astronauts walked on the "
    "Moon. What is the capital of France?"
)
TEXTS = [
    "The capital of France is Paris. The river Seine flows through the city towards the sea.",
    "Mount Everest is the highest mountain on Earth, and the Pacific is the largest ocean.",
    "In 1969 two astronauts walked on the Moon while a third one waited in orbit above them.",
]


@pytest.fixture(scope="module")
def target() -> LoadedModel:
    return build_tiny_model("llama")


@pytest.fixture(scope="module")
def engine(target) -> SpecKV:
    return SpecKV(target, build_tiny_model("llama", num_hidden_layers=2), budget=40, window=8)


@pytest.fixture
def llm(engine) -> SpecKVLLM:
    return SpecKVLLM(engine=engine, max_new_tokens=10)


@pytest.fixture
def restore_settings() -> Iterator[None]:
    saved_llm, saved_embed = Settings._llm, Settings._embed_model
    yield
    Settings._llm, Settings._embed_model = saved_llm, saved_embed


def test_metadata_describes_a_local_chat_model(llm, target):
    metadata = llm.metadata
    assert metadata.is_chat_model and not metadata.is_function_calling_model
    assert metadata.context_window == target.max_positions
    assert metadata.num_output == 10 and metadata.model_name == "tiny-llama"
    assert SpecKVLLM(engine=llm.engine, context_window=2048).metadata.context_window == 2048


def test_complete_and_chat_return_the_engine_answers(llm, engine):
    completion = llm.complete(QUESTION)
    expected = engine.generate(QUESTION, max_new_tokens=10)
    assert completion.text == expected.text
    assert completion.additional_kwargs == {
        "prompt_tokens": expected.prompt_tokens,
        "completion_tokens": len(expected.token_ids),
        "total_tokens": expected.prompt_tokens + len(expected.token_ids),
    }
    assert completion.raw["prefill_cache_entries"] == [40] * 4
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="Be brief."),
        ChatMessage(role=MessageRole.USER, content=QUESTION),
    ]
    chat = llm.chat(messages)
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
    assert chat.message.role == MessageRole.ASSISTANT
    assert chat.message.content == engine.generate(turns, max_new_tokens=10).text


def test_streams_grow_to_the_full_answer(llm):
    completion = llm.complete(QUESTION).text
    pieces = list(llm.stream_complete(QUESTION))
    assert "".join(piece.delta for piece in pieces) == completion == pieces[-1].text
    assert pieces[-1].raw["finish_reason"] in {"length", "eos", "stop"}
    messages = [ChatMessage(role=MessageRole.USER, content=QUESTION)]
    chats = list(llm.stream_chat(messages))
    assert "".join(chat.delta for chat in chats) == chats[-1].message.content
    assert chats[-1].message.content == llm.chat(messages).message.content


def test_per_call_options_and_completion_to_prompt(engine):
    llm = SpecKVLLM(engine=engine, max_new_tokens=10, completion_to_prompt=lambda p: f"Q: {p}\nA:")
    short = llm.complete(QUESTION, max_new_tokens=2)
    assert short.additional_kwargs["completion_tokens"] == 2
    wrapped = engine.generate(f"Q: {QUESTION}\nA:", max_new_tokens=10).text
    assert llm.complete(QUESTION).text == wrapped
    assert llm.complete(QUESTION, formatted=True).text == engine.generate(QUESTION, max_new_tokens=10).text
    seeded = [llm.complete(QUESTION, temperature=1.0, seed=3).text for _ in range(2)]
    assert seeded[0] == seeded[1]
    with pytest.raises(TypeError, match="unsupported"):
        llm.complete(QUESTION, tools=[])


def test_stop_strings(engine):
    full = SpecKVLLM(engine=engine, max_new_tokens=20).complete(QUESTION).text
    stop = full[3:6]
    cut = SpecKVLLM(engine=engine, max_new_tokens=20, stop=[stop]).complete(QUESTION)
    assert cut.text == full[: full.index(stop)] and cut.raw["finish_reason"] == "stop"


def test_settings_llm_drives_a_query_engine(engine, restore_settings):
    Settings.llm = SpecKVLLM(engine=engine, max_new_tokens=8)
    Settings.embed_model = MockEmbedding(embed_dim=8)
    index = VectorStoreIndex.from_documents([Document(text=text) for text in TEXTS])
    response = index.as_query_engine(similarity_top_k=2).query("What is the capital of France?")
    assert isinstance(response.response, str)
    assert len(response.source_nodes) == 2


def test_query_engine_with_an_explicit_llm_and_streaming(engine):
    index = VectorStoreIndex.from_documents(
        [Document(text=text) for text in TEXTS], embed_model=MockEmbedding(embed_dim=8)
    )
    llm = SpecKVLLM(engine=engine, max_new_tokens=8)
    answer = index.as_query_engine(llm=llm).query("What is the capital of France?")
    streamed = index.as_query_engine(llm=llm, streaming=True).query("What is the capital of France?")
    assert "".join(streamed.response_gen) == answer.response


def test_async_methods_do_not_block_the_event_loop(llm):
    expected = llm.complete(QUESTION).text
    messages = [ChatMessage(role=MessageRole.USER, content=QUESTION)]
    expected_chat = llm.chat(messages).message.content

    async def main() -> tuple[str, str, str, str, int]:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        completed = (await llm.acomplete(QUESTION)).text
        streamed = "".join([r.delta async for r in await llm.astream_complete(QUESTION)])
        chatted = (await llm.achat(messages)).message.content
        chat_streamed = "".join([r.delta async for r in await llm.astream_chat(messages)])
        done = True
        await task
        return completed, streamed, chatted, chat_streamed, ticks

    completed, streamed, chatted, chat_streamed, ticks = asyncio.run(main())
    assert completed == streamed == expected
    assert chatted == chat_streamed == expected_chat
    assert ticks > 3


def test_non_text_blocks_are_refused(llm):
    message = ChatMessage(
        role=MessageRole.USER,
        blocks=[TextBlock(text="What is this?"), ImageBlock(url="https://example.com/a.png")],
    )
    with pytest.raises(ValueError, match="text only"):
        llm.chat([message])


def test_construction_is_lazy_and_validated(target):
    llm = SpecKVLLM(target=target, budget=64, settings={"window": 16}, max_new_tokens=2)
    assert llm._engine is None
    assert llm.complete("Hello").additional_kwargs["completion_tokens"] <= 2
    assert llm._engine is not None and llm._engine.draft is None
    assert llm.to_dict()["target"] == "tiny-llama"
    with pytest.raises(ValueError, match="budget"):
        SpecKVLLM(target=target)
    with pytest.raises(ValueError, match="budget"):
        SpecKVLLM(target=target, budget=8)
    with pytest.raises(ValueError, match="settings"):
        SpecKVLLM(target=target, budget=64, settings={"lookahed": 3})
    with pytest.raises(ValueError, match="engine"):
        SpecKVLLM(engine=llm._engine, target=target)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SpecKVLLM(target=target, budget=64, max_new_tokens=0)
