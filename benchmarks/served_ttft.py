"""Time to first token on the served path: compress here, then ask the server, against asking it directly.

The answering model sits behind an OpenAI-compatible server (``transformers serve``, vLLM,
SGLang, TGI, a hosted API); SpecPC runs in this process with its own draft. Per repeat:

* ``full``: a streamed chat request with every passage of the bundled corpus as context;
  the time from sending it to the first content token;
* ``compressed path``: ``SpecPC.compress`` on the same passages (keep ratio
  ``--keep-ratio``), then the same streamed request with the compressed context; the time
  from starting compression to the first content token. Its two parts are printed too.

Both requests use the same system instruction and question, greedy decoding and at most
four new tokens; the server's own ``usage`` gives the prompt tokens each one read. One
warm-up of each comes first (draft load, server caches), and the two orders alternate
between repeats so that drift in the machine's load hits both alike. What compression buys
depends on the target: it pays when the target's prefill of the removed tokens costs more
than the draft's pass over all of them, so on a target as small as the draft it cannot win.

Usage::

    MODEL=$(python -c 'from specrag import pull_bundle; print(pull_bundle("smollm2-135m", progress=False))')
    OMP_NUM_THREADS=1 transformers serve "$MODEL" --host 127.0.0.1 --port 8000 --device cpu --dtype float32 &
    python benchmarks/served_ttft.py --base-url http://127.0.0.1:8000/v1 --model "$MODEL" --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from openai import OpenAI
from openai.types.chat import (
    ChatCompletionMessageParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionUserMessageParam,
)

from specrag import SpecPC, load_model
from specrag.core.specpc import DEFAULT_DRAFT
from specrag.demo import DEFAULT_INSTRUCTION, load_corpus

MAX_NEW_TOKENS = 4


@dataclass(frozen=True)
class Reply:
    """One streamed request: seconds to its first content token, and what the server counted."""

    first_token_s: float
    prompt_tokens: int | None
    text: str


def messages(context: str, question: str) -> list[ChatCompletionMessageParam]:
    """The chat the server reads: the same framing as ``examples/served_target.py``."""
    return [
        ChatCompletionSystemMessageParam(role="system", content=DEFAULT_INSTRUCTION),
        ChatCompletionUserMessageParam(role="user", content=f"Documents:\n\n{context}\n\nQuestion: {question}"),
    ]


def stream(client: OpenAI, model: str, chat: list[ChatCompletionMessageParam], started: float) -> Reply:
    """Send ``chat`` streamed; time the first non-empty content delta from ``started``.

    The stream is read to its end (a few tokens) so that the usage chunk arrives.
    """
    first: float | None = None
    prompt_tokens: int | None = None
    pieces: list[str] = []
    response = client.chat.completions.create(
        model=model,
        messages=chat,
        max_tokens=MAX_NEW_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in response:
        if chunk.usage is not None:
            prompt_tokens = chunk.usage.prompt_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                if first is None:
                    first = time.perf_counter() - started
                pieces.append(choice.delta.content)
    if first is None:
        raise RuntimeError("the server streamed no content token; is the model name right?")
    return Reply(first, prompt_tokens, "".join(pieces))


def summary(values: Sequence[float]) -> str:
    """Median and range, in seconds."""
    return f"{statistics.median(values):6.3f} s  [{min(values):.3f} - {max(values):.3f}]"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="API root of the server, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", required=True, help="model name the server knows (see its /v1/models)")
    parser.add_argument("--api-key", default="none")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep-ratio", type=float, default=0.25)
    parser.add_argument("--draft", default=DEFAULT_DRAFT)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the draft in this process")
    parser.add_argument("--question", "-q", default=None, help="default: the corpus's first question")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    corpus = load_corpus()
    question = args.question or corpus.questions[0].question
    documents = [passage.text for passage in corpus.passages]
    pc = SpecPC(load_model(args.draft, progress=False), keep_ratio=args.keep_ratio, progress=False)
    client = OpenAI(base_url=args.base_url, api_key=args.api_key, timeout=args.timeout, max_retries=0)
    full_chat = messages("\n\n".join(documents), question)

    def full() -> tuple[Reply, float]:
        return stream(client, args.model, full_chat, time.perf_counter()), 0.0

    def compressed() -> tuple[Reply, float]:
        started = time.perf_counter()
        result = pc.compress(documents=documents, question=question, instruction=DEFAULT_INSTRUCTION)
        spent = time.perf_counter() - started
        context = "\n\n".join(text for text in result.texts if text)
        return stream(client, args.model, messages(context, question), started), spent

    runs: dict[str, Callable[[], tuple[Reply, float]]] = {"full": full, "compressed": compressed}
    seen: dict[str, list[tuple[Reply, float]]] = {"full": [], "compressed": []}
    for name in runs:
        runs[name]()  # warm-up, not counted
    for repeat in range(args.repeats):
        order = ["full", "compressed"] if repeat % 2 == 0 else ["compressed", "full"]
        for name in order:
            seen[name].append(runs[name]())

    full_replies = [reply for reply, _ in seen["full"]]
    comp = seen["compressed"]
    print(f"Server: {args.base_url} model {args.model}")
    print(
        f"Machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs; draft threads "
        f"{torch.get_num_threads()}; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(f"Context: {len(documents)} passages of the bundled corpus; question: {question}")
    print(
        f"Prompt tokens (server usage): full {full_replies[0].prompt_tokens}, "
        f"compressed {comp[0][0].prompt_tokens} (keep ratio {args.keep_ratio}, draft {args.draft})"
    )
    print(f"Time to first token, median [min - max] of {args.repeats}:")
    rows = {
        "full prompt": [r.first_token_s for r in full_replies],
        "compressed path (compress + TTFT)": [r.first_token_s for r, _ in comp],
        "  compression": [spent for _, spent in comp],
        "  server TTFT, compressed prompt": [r.first_token_s - spent for r, spent in comp],
    }
    for label, values in rows.items():
        print(f"  {label:<36}{summary(values)}")
    print(f"First tokens: full {full_replies[0].text!r}, compressed {comp[0][0].text!r}")


if __name__ == "__main__":
    main()
