"""Trim a tool-using agent's history with SpecPC before the next model call.

    python examples/agent_trimming.py                     # budget 300 draft tokens
    python examples/agent_trimming.py --max-tokens 150

An agent's context fills up with tool outputs it has already used. ``SpecPCMessageTrimmer``
keeps the system prompt and the latest turn verbatim and compresses the older messages
against the latest question, so what the next question needs survives. It never touches what
a chat API validates: message types, ids, ``tool_calls`` and each ToolMessage's
``tool_call_id`` come through unchanged, so the trimmed history is still a valid
conversation. No LLM is called here; in a chain the trimmer sits before the chat model:
``prompt | trimmer | chat_model``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from _common import Corpus, load_corpus
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)

from specrag import SpecPC
from specrag.core.specpc import DEFAULT_DRAFT
from specrag.langchain import SpecPCMessageTrimmer

FINAL_QUESTION = "Before I go: which port must our firewall open so the Larkspur agents reach the server?"
EVIDENCE = "7412"  # stated only in the first tool output, many messages back


def _search_output(corpus: Corpus, prefix: str) -> str:
    """What a ``search_docs`` tool returns: every passage whose id starts with ``prefix``."""
    return "\n\n".join(f"[{p.id}] {p.title}\n{p.text}" for p in corpus.passages if p.id.startswith(prefix))


def _call(call_id: str, name: str, **args: str) -> ToolCall:
    return ToolCall(name=name, args=args, id=call_id, type="tool_call")


def conversation(corpus: Corpus) -> list[BaseMessage]:
    """A lab assistant's session: three topics, four tool calls, long tool outputs."""
    return [
        SystemMessage("You are a lab assistant. Use search_docs to look things up; cite passage ids."),
        HumanMessage("Our Larkspur agents keep failing uploads. How is the server set up?"),
        AIMessage("", tool_calls=[_call("call_1", "search_docs", query="Larkspur server setup")]),
        ToolMessage(_search_output(corpus, "larkspur"), tool_call_id="call_1", name="search_docs"),
        AIMessage(
            "The server is configured in larkspur.toml [larkspur-config]; agents retry five "
            "times before marking a file stale."
        ),
        HumanMessage("Thanks. Unrelated: how long is Vell cheese aged? I'm planning a tasting."),
        AIMessage("", tool_calls=[_call("call_2", "search_docs", query="Vell cheese ageing")]),
        ToolMessage(_search_output(corpus, "cheese"), tool_call_id="call_2", name="search_docs"),
        AIMessage("Vell is aged for eleven months in limestone caves [cheese-vell]."),
        HumanMessage("And the Calder Telescope: how big is its mirror, and can we visit?"),
        AIMessage(
            "",
            tool_calls=[
                _call("call_3", "search_docs", query="Calder Telescope mirror"),
                _call("call_4", "visitor_info", site="Tamsin Ridge Observatory"),
            ],
        ),
        ToolMessage(_search_output(corpus, "obs"), tool_call_id="call_3", name="search_docs"),
        ToolMessage(
            "Tamsin Ridge Observatory: guided tours on Saturdays at 14:00 from May to September; "
            "book a week ahead. The road closes after snowfall.",
            tool_call_id="call_4",
            name="visitor_info",
        ),
        AIMessage("Its primary mirror is 2.4 metres across [obs-calder]; tours run on Saturdays."),
        HumanMessage(FINAL_QUESTION),
    ]


def _tokens(pc: SpecPC, message: BaseMessage) -> int:
    """Draft tokens of a message's text: what the trimmer's budget counts (string contents)."""
    return len(pc.draft.tokenizer.encode(message.text, add_special_tokens=False))


def _label(message: BaseMessage) -> str:
    """Message type plus what pairs tool calls with their results."""
    if isinstance(message, AIMessage) and message.tool_calls:
        return f"ai -> {', '.join(call['id'] or '?' for call in message.tool_calls)}"
    if isinstance(message, ToolMessage):
        return f"tool <- {message.tool_call_id}"
    return message.type


def pairing_intact(before: Sequence[BaseMessage], after: Sequence[BaseMessage]) -> bool:
    """Same types, same tool calls and every ToolMessage answering an earlier call, as before."""
    requested: set[str] = set()
    for old, new in zip(before, after, strict=True):
        if type(old) is not type(new):
            return False
        if getattr(old, "tool_calls", None) != getattr(new, "tool_calls", None):
            return False
        if isinstance(new, AIMessage):
            requested.update(call["id"] or "" for call in new.tool_calls)
        answers_a_call = not isinstance(new, ToolMessage) or (
            new.tool_call_id == getattr(old, "tool_call_id", None) and new.tool_call_id in requested
        )
        if not answers_a_call:
            return False
    return True


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Trim an agent's history with SpecPC.")
    parser.add_argument("--max-tokens", type=int, default=300, help="budget for all message text")
    parser.add_argument("--draft", default=DEFAULT_DRAFT, help="SpecPC draft model")
    args = parser.parse_args(argv)

    messages = conversation(load_corpus())
    pc = SpecPC(args.draft, progress=False)  # shared: the trimmer scores with it, we count with it
    trimmer = SpecPCMessageTrimmer(compressor=pc, max_tokens=args.max_tokens)
    trimmed = trimmer.invoke(messages)

    print(f"Budget: {args.max_tokens} draft tokens of message text ({pc.draft.name} tokenizer)")
    print(f"{'#':>2}  {'message':<22} {'before':>6} {'after':>6}")
    for position, (old, new) in enumerate(zip(messages, trimmed, strict=True)):
        same = "" if new is old else "  trimmed"
        print(f"{position:>2}  {_label(new):<22} {_tokens(pc, old):>6} {_tokens(pc, new):>6}{same}")
    total_before = sum(_tokens(pc, message) for message in messages)
    total_after = sum(_tokens(pc, message) for message in trimmed)
    print(f"Total: {total_before} -> {total_after} draft tokens")
    print(f"Tool-call pairing intact: {'yes' if pairing_intact(messages, trimmed) else 'NO'}")
    print("\nFirst tool output after trimming (the final question's evidence is in it):\n----")
    print(trimmed[3].text)
    print("----")
    kept = any(EVIDENCE in message.text for message in trimmed[:-1])
    print(f"Evidence {EVIDENCE!r} for the final question kept: {'yes' if kept else 'no'}")


if __name__ == "__main__":
    main()
