"""SpecPC in front of a served LLM: compress here, answer on any OpenAI-compatible server.

    MODEL=$(python -c 'from specrag import pull_bundle; print(pull_bundle("smollm2-135m", progress=False))')
    transformers serve "$MODEL" --host 127.0.0.1 --port 8000 --dtype float32 &     # or vLLM, SGLang, TGI, ...
    python examples/served_target.py --base-url http://127.0.0.1:8000/v1 --model "$MODEL"
    python examples/served_target.py --base-url URL --model NAME --keep-ratio 0.1 -q "Who founded the Orsa cooperative?"

The answering model is only a URL and a name: SpecPC needs none of its weights, and it
need not share the draft's tokenizer. The script retrieves from the bundled corpus
(all-MiniLM-L6-v2, offline), sends the retrieved passages to the server twice, once as they
are and once compressed by ``SpecPCCompressor``, and prints what was kept, the prompt
tokens the *server* counted for each request (its ``usage``) and both answers.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from _common import DEFAULT_INSTRUCTION, load_corpus, pick_question, print_answer, print_report
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable
from langchain_openai import ChatOpenAI
from langchain_rag import PROMPT, build_store, format_docs
from pydantic import SecretStr

from specrag.core.specpc import DEFAULT_DRAFT
from specrag.langchain import METADATA_KEY, SpecPCCompressor


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The server (``--base-url``, ``--model``) and the compression options."""
    parser = argparse.ArgumentParser(description="SpecPC compression in front of an OpenAI-compatible server.")
    parser.add_argument("--base-url", required=True, help="API root of the server, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", required=True, help="model name the server knows (see its /v1/models)")
    parser.add_argument("--api-key", default="none", help="API key, for hosted APIs (local servers ignore it)")
    parser.add_argument("--keep-ratio", "--keep", type=float, default=0.25, help="share of the context's tokens kept")
    parser.add_argument(
        "--target-tokenizer",
        help="count the budget in the served model's tokens: its bundle name, folder or hub id "
        "(default: --model when it is a local folder, else the draft's tokens)",
    )
    parser.add_argument("--question", "-q", help="question to ask; default a bundled one")
    parser.add_argument("--top-k", type=int, default=4, help="passages to retrieve")
    parser.add_argument("--draft", default=DEFAULT_DRAFT, help="SpecPC draft model (runs here, not on the server)")
    parser.add_argument("--max-tokens", type=int, default=32, help="longest answer")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take")
    return parser.parse_args(argv)


def target_tokenizer(args: argparse.Namespace) -> str | None:
    """Whose tokens the budget counts: the served model's when its tokenizer is at hand."""
    if args.target_tokenizer:
        return str(args.target_tokenizer)
    return str(args.model) if Path(args.model).is_dir() else None


def ask(llm: ChatOpenAI, documents: Sequence[Document], question: str) -> AIMessage:
    """Send the documents and the question to the server; the reply carries its usage."""
    chain: Runnable[dict[str, str], AIMessage] = PROMPT | llm
    return chain.invoke({"context": format_docs(documents), "question": question})


def prompt_tokens(reply: AIMessage) -> int | None:
    """Prompt tokens as the server counted them, or ``None`` if it reports no usage."""
    return reply.usage_metadata["input_tokens"] if reply.usage_metadata else None


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    corpus = load_corpus()
    question = pick_question(corpus, args.question)
    retriever = build_store(corpus.passages).as_retriever(search_kwargs={"k": args.top_k})

    # The answering model: any OpenAI-compatible endpoint. Only base_url and model change
    # between transformers serve, vLLM, SGLang, TGI or a hosted API.
    llm = ChatOpenAI(
        base_url=args.base_url,
        api_key=SecretStr(args.api_key),
        model=args.model,
        max_tokens=args.max_tokens,
        temperature=0,
        timeout=args.timeout,
        max_retries=1,
    )
    # The drop-in: the retriever you had, wrapped; the draft runs here, before the request.
    compressing = ContextualCompressionRetriever(
        base_compressor=SpecPCCompressor(
            draft=args.draft,
            keep_ratio=args.keep_ratio,
            instruction=DEFAULT_INSTRUCTION,
            target_tokenizer=target_tokenizer(args),
        ),
        base_retriever=retriever,
    )

    retrieved = retriever.invoke(question.text)
    compressed = compressing.invoke(question.text)
    full_reply = ask(llm, retrieved, question.text)
    compressed_reply = ask(llm, compressed, question.text)

    kept = {d.id or "": d.metadata[METADATA_KEY]["kept_tokens"] for d in compressed}
    print_report(
        question,
        [(d.id or "", d.metadata["title"], d.page_content) for d in retrieved],
        kept,
        format_docs(compressed),
        args.draft,
        target_tokenizer(args),
    )
    before, after = prompt_tokens(full_reply), prompt_tokens(compressed_reply)
    if before is None or after is None:
        print("Prompt tokens (server): not reported by this server")
    else:
        print(f"Prompt tokens (server): {before} full -> {after} compressed ({after / before:.0%})")
    print(f"Answer with the full context: {full_reply.text.strip()}")
    print_answer(args.model, compressed_reply.text.strip())


if __name__ == "__main__":
    main()
