"""LlamaIndex postprocessor on real LlamaIndex objects and tiny random drafts.

The draft is random, so these tests check plumbing and invariants (verbatim text, budgets,
ids/metadata/relationships, non-mutation, errors), not which words a trained draft keeps.
"""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import (
    ImageNode,
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)

import specrag.integrations.llama_index as li
from specrag import SpecPC
from specrag.llama_index import METADATA_KEY, SpecPCPostprocessor

TEXTS = [
    "The capital of France is Paris. The river Seine flows through the city towards the sea.",
    "Mount Everest is the highest mountain on Earth, and the Pacific is the largest ocean.",
    "In 1969 two astronauts walked on the Moon while a third one waited in orbit above them.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen in green leaves.",
    "A recipe: mix flour, sugar, eggs and butter, then bake the cake for thirty minutes.",
]
QUERY = "What is the capital of France?"


@pytest.fixture(scope="module")
def pc(draft) -> SpecPC:
    return SpecPC(draft, keep_ratio=0.5, window=8, pool_kernel=4, neighbourhood=2, progress=False)


def make_nodes() -> list[NodeWithScore]:
    nodes = [
        TextNode(
            id_=f"node-{index}",
            text=text,
            metadata={"source": f"doc{index}.txt", "page": index, "tags": ["a", "b"]},
            excluded_llm_metadata_keys=["page"],
            relationships={
                NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"doc-{index}", metadata={"kind": "pdf"}),
            },
        )
        for index, text in enumerate(TEXTS)
    ]
    for previous, following in itertools.pairwise(nodes):
        previous.relationships[NodeRelationship.NEXT] = RelatedNodeInfo(node_id=following.node_id)
        following.relationships[NodeRelationship.PREVIOUS] = RelatedNodeInfo(node_id=previous.node_id)
    return [NodeWithScore(node=node, score=1.0 - 0.1 * index) for index, node in enumerate(nodes)]


def snapshot(nodes: list[NodeWithScore]) -> list[dict]:
    return [item.model_dump() for item in nodes]


def assert_verbatim(node: TextNode, original: str, separator: str = " … ") -> None:
    spans = node.metadata[METADATA_KEY]["spans"]
    assert separator.join(original[start:end] for start, end in spans) == node.text
    previous = 0
    for start, end in spans:
        assert previous <= start < end <= len(original)
        previous = end


def assert_compressed_copy(new: NodeWithScore, old: NodeWithScore) -> None:
    assert new is not old and new.node is not old.node
    assert new.node.node_id == old.node.node_id
    assert new.node.relationships == old.node.relationships
    assert {k: v for k, v in new.node.metadata.items() if k != METADATA_KEY} == old.node.metadata
    assert_verbatim(new.node, old.node.text)
    assert METADATA_KEY in new.node.excluded_llm_metadata_keys
    assert METADATA_KEY in new.node.excluded_embed_metadata_keys
    assert METADATA_KEY not in new.node.get_content(metadata_mode=MetadataMode.LLM)
    assert METADATA_KEY not in new.node.get_content(metadata_mode=MetadataMode.EMBED)


def test_all_is_exported() -> None:
    for name in li.__all__:
        assert hasattr(li, name), name


def test_postprocess_node_list(pc: SpecPC) -> None:
    nodes = make_nodes()
    before = snapshot(nodes)
    out = SpecPCPostprocessor(compressor=pc, keep_ratio=0.3).postprocess_nodes(nodes, query_str=QUERY)

    assert snapshot(nodes) == before  # caller's nodes untouched
    assert out
    by_id = {item.node.node_id: item for item in nodes}
    assert [o.node.node_id for o in out] == [
        n.node.node_id for n in nodes if n.node.node_id in {o.node.node_id for o in out}
    ]
    kept = 0
    for item in out:
        original = by_id[item.node.node_id]
        assert_compressed_copy(item, original)
        assert item.score == original.score  # set_score=False keeps the retriever's score
        figures = item.node.metadata[METADATA_KEY]
        assert set(figures) == {"original_tokens", "kept_tokens", "relevance", "spans"}
        kept += figures["kept_tokens"]
    total = sum(len(pc.draft.tokenizer.encode(t, add_special_tokens=False)) for t in TEXTS)
    assert 0 < kept <= round(0.3 * total)


def test_non_text_nodes_pass_through(pc: SpecPC) -> None:
    nodes = make_nodes()[:2]
    image = NodeWithScore(node=ImageNode(id_="img", image="aGVsbG8=", metadata={"kind": "png"}), score=0.5)
    mixed = [nodes[0], image, nodes[1]]
    out = SpecPCPostprocessor(compressor=pc, keep_ratio=1.0).postprocess_nodes(mixed, query_str=QUERY)
    assert [o.node.node_id for o in out] == ["node-0", "img", "node-1"]
    assert out[1] is image and METADATA_KEY not in image.node.metadata
    assert out[0].node.text == TEXTS[0]  # keep_ratio=1.0 keeps all text
    only_images = [image]
    assert SpecPCPostprocessor(compressor=pc).postprocess_nodes(only_images, query_str=QUERY) == only_images


def test_drop_empty_and_set_score(pc: SpecPC) -> None:
    nodes = make_nodes()
    everything = SpecPCPostprocessor(compressor=pc, max_tokens=3, drop_empty=False).postprocess_nodes(
        nodes, query_str=QUERY
    )
    assert [o.node.node_id for o in everything] == [n.node.node_id for n in nodes]
    emptied = [o for o in everything if o.node.metadata[METADATA_KEY]["kept_tokens"] == 0]
    assert emptied and all(o.node.text == "" for o in emptied)
    kept = SpecPCPostprocessor(compressor=pc, max_tokens=3).postprocess_nodes(nodes, query_str=QUERY)
    assert [o.node.node_id for o in kept] == [o.node.node_id for o in everything if o not in emptied]

    scored = SpecPCPostprocessor(compressor=pc, set_score=True).postprocess_nodes(nodes, query_str=QUERY)
    for item in scored:
        assert item.score == item.node.metadata[METADATA_KEY]["relevance"]
        assert 0.0 <= item.score <= 1.0
    assert [n.score for n in nodes] == [1.0 - 0.1 * i for i in range(len(nodes))]


def test_no_query_is_a_clear_error(pc: SpecPC) -> None:
    processor = SpecPCPostprocessor(compressor=pc)
    with pytest.raises(ValueError, match="needs the query"):
        processor.postprocess_nodes(make_nodes())
    with pytest.raises(ValueError, match="needs the query"):
        asyncio.run(processor.apostprocess_nodes(make_nodes()))
    with pytest.raises(ValueError, match="non-empty query_str"):
        processor.postprocess_nodes(make_nodes(), query_bundle=QueryBundle(query_str="  "))
    with pytest.raises(TypeError, match="NodeWithScore"):
        processor.postprocess_nodes([TextNode(text="bare node")], query_str=QUERY)  # type: ignore[list-item]
    assert processor.postprocess_nodes([], query_str=QUERY) == []


class ThreadRecordingSpecPC(SpecPC):
    """Records which thread compressed, to show the async path leaves the loop free."""

    threads: list[int]

    def compress(self, *args, **kwargs):  # type: ignore[override]
        self.threads.append(threading.get_ident())
        return super().compress(*args, **kwargs)


def test_async_runs_off_the_event_loop(draft) -> None:
    recording = ThreadRecordingSpecPC(draft, keep_ratio=0.5, window=8, progress=False)
    recording.threads = []
    processor = SpecPCPostprocessor(compressor=recording)
    nodes = make_nodes()

    async def main() -> tuple[list[NodeWithScore], int]:
        return await processor.apostprocess_nodes(nodes, query_str=QUERY), threading.get_ident()

    out, loop_thread = asyncio.run(main())
    assert recording.threads and loop_thread not in recording.threads
    sync = processor.postprocess_nodes(nodes, query_str=QUERY)
    assert [(o.node.node_id, o.node.text, o.score) for o in out] == [
        (o.node.node_id, o.node.text, o.score) for o in sync
    ]


def build_index() -> VectorStoreIndex:
    return VectorStoreIndex([item.node for item in make_nodes()], embed_model=MockEmbedding(embed_dim=8))


def test_in_query_engine(pc: SpecPC) -> None:
    index = build_index()
    stored = {node_id: index.docstore.get_node(node_id).model_dump() for node_id in index.docstore.docs}
    plain = index.as_query_engine(llm=MockLLM(), similarity_top_k=4).query(QUERY)
    engine = index.as_query_engine(
        node_postprocessors=[SpecPCPostprocessor(compressor=pc, keep_ratio=0.3)],
        llm=MockLLM(),
        similarity_top_k=4,
    )
    response = engine.query(QUERY)

    originals = {item.node.node_id: item for item in plain.source_nodes}
    assert response.source_nodes
    for item in response.source_nodes:
        assert_compressed_copy(item, originals[item.node.node_id])
        assert item.score == originals[item.node.node_id].score
    # MockLLM echoes its prompt: the LLM read the compressed text, not the figures.
    answer = str(response)
    assert all(item.node.text in answer for item in response.source_nodes)
    assert METADATA_KEY not in answer and "spans" not in answer
    assert len(answer) < len(str(plain))
    assert {i: index.docstore.get_node(i).model_dump() for i in index.docstore.docs} == stored

    async_response = asyncio.run(engine.aquery(QUERY))
    assert [(n.node.node_id, n.node.text) for n in async_response.source_nodes] == [
        (n.node.node_id, n.node.text) for n in response.source_nodes
    ]


def test_in_retriever_query_engine(draft) -> None:
    index = build_index()
    processor = SpecPCPostprocessor(draft=draft, keep_ratio=0.5, set_score=True, settings={"window": 8})
    engine = RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=3), llm=MockLLM(), node_postprocessors=[processor]
    )
    response = engine.query(QUERY)
    assert response.source_nodes
    for item in response.source_nodes:
        assert item.score == item.node.metadata[METADATA_KEY]["relevance"]
        assert item.node.relationships == index.docstore.get_node(item.node.node_id).relationships


def test_construction_is_lazy_and_validated(draft, pc: SpecPC) -> None:
    lazy = SpecPCPostprocessor(draft="no-such-draft-model-anywhere")  # nothing loaded yet
    assert lazy.postprocess_nodes([], query_str=QUERY) == []
    with pytest.raises(ValueError, match="not both"):
        SpecPCPostprocessor(draft=draft, keep_ratio=0.5, max_tokens=10)
    with pytest.raises(ValueError, match="invalid SpecPC settings(.|\n)*windo"):
        SpecPCPostprocessor(draft=draft, settings={"windo": 8})
    with pytest.raises(ValueError, match="compressor is ready-made"):
        SpecPCPostprocessor(compressor=pc, draft=draft)
    with pytest.raises(ValueError, match="set_scor"):
        SpecPCPostprocessor(draft=draft, set_scor=True)  # type: ignore[call-arg]
    processor = SpecPCPostprocessor(draft=draft, keep_ratio=0.5)
    assert processor.to_dict()["draft"] == "tiny-llama"
    assert "tiny-llama" in repr(processor) and "LlamaForCausalLM" not in repr(processor)


def test_huge_node_goes_through_in_pieces(draft) -> None:
    text = (" ".join(TEXTS) * 200)[:20_000]
    processor = SpecPCPostprocessor(draft=draft, keep_ratio=0.1, settings={"max_draft_tokens": 512})
    (out,) = processor.postprocess_nodes([NodeWithScore(node=TextNode(id_="big", text=text))], query_str=QUERY)
    figures = out.node.metadata[METADATA_KEY]
    assert figures["original_tokens"] > 4 * 512
    assert 0 < figures["kept_tokens"] <= round(0.1 * figures["original_tokens"])
    assert_verbatim(out.node, text)
