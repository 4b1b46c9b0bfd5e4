#!/usr/bin/env python
"""What prefix reuse saves: a follow-up question over the same documents, and an agent's turns.

Why this script
---------------
SpecPC keeps the draft's KV cache of recent prompts (``prefix_cache_mb``), so a second
question over the same documents forwards only the question, and an agent whose history
grew at the end forwards only the new messages. This times, with the real draft and the
default settings, (a) the first compression of bench items (RULER needles: their filler
reaches any length) at several lengths
against a follow-up question over the same documents, checking that the follow-up keeps
exactly what a fresh pass (``prefix_cache_mb=0``) keeps, and (b) the LangChain message
trimmer over an agent history that grows by one tool result per turn, with reuse on and off.

Usage::

    .venv/bin/python benchmarks/specpc_prefix.py --lengths 2048,4096,8192 --items 3 --turns 6
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from specrag import SpecPC, load_model
from specrag.bench.tasks import build_items
from specrag.integrations.langchain import trim_messages_with_specpc


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - started


def follow_ups(cached: SpecPC, fresh: SpecPC, task: str, lengths: list[int], count: int, seed: int) -> None:
    print("| requested length | draft tokens (median) | first s | follow-up s | follow-up / first | same as fresh |")
    print("|---|---|---|---|---|---|")
    for length in lengths:
        items = build_items([task], [length], count + 1, seed, cached.draft.tokenizer)
        firsts, follows, tokens, same = [], [], [], 0
        for item, other in zip(items, items[1:], strict=False):
            cached.prefix_cache.clear()
            docs = list(item.documents)
            opened, first = timed(cached.compress, docs, item.question)
            tokens.append(opened.original_tokens)
            result, follow = timed(cached.compress, docs, other.question)
            same += result.texts == fresh.compress(docs, other.question).texts
            firsts.append(first)
            follows.append(follow)
        a, b = statistics.median(firsts), statistics.median(follows)
        print(f"| {length} | {statistics.median(tokens):.0f} | {a:.2f} | {b:.2f} | {b / a:.2f} | {same}/{count} |")


def agent_turns(cached: SpecPC, fresh: SpecPC, turns: int, seed: int) -> None:
    items = build_items(["multihop"], [512], turns, seed, cached.draft.tokenizer)
    history: list[BaseMessage] = [SystemMessage("You are a research agent. Use the search tool.")]
    print("\n| turn | history tokens | trim s, reuse on | trim s, reuse off | on / off | same messages |")
    print("|---|---|---|---|---|---|")
    for turn, item in enumerate(items, start=1):
        call_id = f"call_{turn}"
        history += [
            HumanMessage(item.question),
            AIMessage("", tool_calls=[{"name": "search", "args": {"q": item.question}, "id": call_id}]),
            ToolMessage("\n\n".join(item.documents), tool_call_id=call_id),
        ]
        ask = [*history, HumanMessage(item.question)]
        tokens = sum(len(cached.draft.tokenizer.encode(str(m.content))) for m in ask)
        on, on_s = timed(trim_messages_with_specpc, ask, compressor=cached, max_tokens=512)
        off, off_s = timed(trim_messages_with_specpc, ask, compressor=fresh, max_tokens=512)
        same = [m.content for m in on] == [m.content for m in off]
        print(f"| {turn} | {tokens} | {on_s:.2f} | {off_s:.2f} | {on_s / off_s:.2f} | {same} |")
        history.append(AIMessage(f"Answer {turn}."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="2048,4096,8192")
    parser.add_argument("--items", type=int, default=3)
    parser.add_argument(
        "--task",
        default="niah_single",
        help="Follow-up items: a RULER task reaches any length (multi-hop stops near 3k).",
    )
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--draft", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    draft = load_model(args.draft)
    cached = SpecPC(draft, progress=False, prefix_cache_mb=2048)
    fresh = SpecPC(draft, progress=False, prefix_cache_mb=0)
    cached.compress(["Warm-up text."], "Warm-up?")
    print(f"# draft {draft.name} on {draft.device} ({draft.model.dtype}); default settings (MiniLM relevance on);")
    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; medians of {args.items}\n"
    )
    follow_ups(cached, fresh, args.task, [int(n) for n in args.lengths.split(",")], args.items, args.seed)
    if args.turns:
        agent_turns(cached, fresh, args.turns, args.seed)


if __name__ == "__main__":
    main()
