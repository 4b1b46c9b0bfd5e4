"""Text in, tokens chosen, text out: everything around SpecKV's decode loop but the model.

Kept apart from the model code because none of it needs a model: prompts become ids through
the tokenizer (chat template or a plain fallback); sampling is a function of logits and a
``torch.Generator`` (never the global RNG, so concurrent generations and the caller's own
seeding do not disturb each other); text assembly is a function of token ids, a tokenizer
and stop strings; and streams hand the deltas to sync or asyncio callers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import (
    AsyncIterator,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import torch
from transformers import PreTrainedTokenizerBase

from ..validation import validate_encodable

_REPLACEMENT = "\ufffd"

Message = Mapping[str, Any]
"""A chat message: ``{"role": "system" | "user" | "assistant" | "tool" | ..., "content": str}``.

Tool use takes the form transformers chat templates read: an assistant message may carry
``"tool_calls": [{"type": "function", "id": str, "function": {"name": str, "arguments":
dict | str}}, ...]``, and a tool result is ``{"role": "tool", "content": str,
"tool_call_id": str, "name": str}`` (the last two optional).
"""

Prompt = str | Sequence[Message]
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen.

    ``temperature == 0`` is greedy (argmax, bit-identical to ``model.generate`` without
    sampling); otherwise logits are divided by ``temperature``, cut to the ``top_k`` best
    (0 = no cut) and to the smallest set whose probability reaches ``top_p`` (1.0 = no cut),
    and a token is drawn with the call's own generator.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)):
            raise TypeError(f"temperature must be a number, got {type(self.temperature).__name__}")
        if not self.temperature >= 0.0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)):
            raise TypeError(f"top_p must be a number, got {type(self.top_p).__name__}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
            raise TypeError(f"top_k must be an int, got {type(self.top_k).__name__}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = no cut), got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def make_generator(device: torch.device, seed: int | None) -> torch.Generator:
    """A private generator on ``device``; seeded from the OS when ``seed`` is None.

    ``Generator.seed()`` draws fresh entropy for this generator only, so unseeded calls
    still never read or advance the global RNG.
    """
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        generator.manual_seed(seed)
    return generator


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set every logit outside the top-k / nucleus to ``-inf``; always keeps the best one."""
    filtered = logits.clone()
    if 0 < top_k < filtered.shape[-1]:
        threshold = torch.topk(filtered, top_k, dim=-1).values[..., -1:]
        filtered = filtered.masked_fill(filtered < threshold, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(filtered, dim=-1, descending=True)
        cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens ranked before it already reach top_p.
        drop_sorted = (cumulative - torch.softmax(ordered, dim=-1)) >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        filtered = filtered.masked_fill(drop, float("-inf"))
    return filtered


def next_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    """Pick the next token id from a ``(vocab,)`` logits row."""
    scores = logits.float()
    if sampling.greedy:
        return int(torch.argmax(scores))
    scores = filter_logits(scores / sampling.temperature, sampling.top_k, sampling.top_p)
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def decode_text(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    """``ids`` as text, special tokens left out (one flat id list decodes to one ``str``;
    the stub's ``list[str]`` is for batches)."""
    return cast(str, tokenizer.decode(list(ids), skip_special_tokens=True))


class IncrementalText:
    """Token ids in, text deltas out, never splitting a multi-byte character.

    Byte-level tokenizers emit a character's bytes over several tokens; decoding a prefix
    then ends in U+FFFD. Deltas are held back until the text decodes cleanly. Decoding always
    restarts a few tokens before the new ones, so tokenizers whose pieces depend on their
    left neighbour (leading-space markers) come out right too.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._prefix = 0  # start of the decoding context
        self._read = 0  # end of what has been emitted

    def _decode(self, ids: Sequence[int]) -> str:
        return decode_text(self.tokenizer, ids)

    def push(self, token: int) -> str:
        """Add one token; return the newly complete text (maybe empty)."""
        self.ids.append(token)
        emitted = self._decode(self.ids[self._prefix : self._read])
        current = self._decode(self.ids[self._prefix :])
        if len(current) > len(emitted) and not current.endswith(_REPLACEMENT):
            delta = current[len(emitted) :]
            self._prefix, self._read = self._read, len(self.ids)
            return delta
        return ""

    def flush(self) -> str:
        """Whatever is still held back at the end (an incomplete character decodes as is)."""
        emitted = self._decode(self.ids[self._prefix : self._read])
        current = self._decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return current[len(emitted) :] if len(current) > len(emitted) else ""


class StopText:
    """Accumulates text, finds stop strings, and says what is safe to show.

    Text that could still become the start of a stop string is held back, so a streamed
    answer never shows part of a stop string that the final answer then cuts off.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [stop for stop in stops if stop]
        self._longest = max((len(stop) for stop in self.stops), default=0)
        self.text = ""
        self.shown = 0
        self.stopped = False

    def add(self, delta: str) -> str:
        """Add decoded text; return the part that can be shown now."""
        if self.stopped or not delta:
            return ""
        search_from = max(0, len(self.text) - self._longest + 1)
        self.text += delta
        hits = [index for stop in self.stops if (index := self.text.find(stop, search_from)) != -1]
        if hits:
            self.stopped = True
            self.text = self.text[: min(hits)]
            return self._show(len(self.text))
        return self._show(len(self.text) - self._held_back())

    def finish(self) -> str:
        """Release the held-back tail at the end of generation."""
        return self._show(len(self.text))

    def _held_back(self) -> int:
        """Length of the longest text suffix that is a proper prefix of a stop string."""
        for size in range(min(self._longest - 1, len(self.text)), 0, -1):
            tail = self.text[-size:]
            if any(stop.startswith(tail) for stop in self.stops):
                return size
        return 0

    def _show(self, upto: int) -> str:
        upto = max(upto, self.shown)
        piece = self.text[self.shown : upto]
        self.shown = upto
        return piece


# ---------------------------------------------------------------------------- prompts
_TOOL_KEYS = ("tool_calls", "tool_call_id", "name")


def render_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, owner: str = "the model") -> list[int]:
    """Token ids for a text prompt or chat messages (see :meth:`specrag.SpecKV.generate`).

    Tool calls and tool results go through the chat template's own tool support. When the
    tokenizer has no template, or its template drops them or refuses them, this raises a
    one-line ``ValueError`` naming ``owner`` (e.g. ``"target 'qwen'"``): the model would
    otherwise answer a history it never saw.
    """
    if isinstance(prompt, str):
        return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    messages = [
        {"role": message["role"], "content": message["content"]}
        | {key: message[key] for key in _TOOL_KEYS if message.get(key) is not None}
        for message in prompt
    ]
    tool_turns = [index for index, message in enumerate(messages) if _is_tool_turn(message)]
    if getattr(tokenizer, "chat_template", None):
        if tool_turns:
            _check_tools_render(tokenizer, messages, tool_turns, owner)
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if tool_turns:
        raise ValueError(
            f"prompt[{tool_turns[0]}] is a tool call or tool result, but {owner} has no chat template to "
            "render tools with; use a chat model whose template supports tools, or send it as plain text"
        )
    lines = "".join(f"{message['role'].capitalize()}: {message['content']}\n" for message in messages)
    return list(tokenizer(f"{lines}Assistant:", add_special_tokens=True)["input_ids"])


def _is_tool_turn(message: Mapping[str, Any]) -> bool:
    return bool(message.get("tool_calls")) or message["role"] == "tool"


def _check_tools_render(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], tool_turns: list[int], owner: str
) -> None:
    """Refuse a template that raises on, or silently drops, a tool call or a tool result.

    The messages are rendered once with every tool call's name and every tool result's
    content replaced by a unique marker; a marker missing from the text is a turn the
    template dropped. Markers (not the real names) so that a name that also occurs in the
    conversation cannot hide a drop.
    """
    from jinja2 import TemplateError  # transformers renders chat templates with jinja2

    probe = [dict(message) for message in messages]
    markers: dict[str, int] = {}
    for index in tool_turns:
        message = probe[index]
        if message.get("tool_calls"):
            calls = []
            for number, call in enumerate(message["tool_calls"]):
                marker = f"specragtoolcall{index}x{number}"
                markers[marker] = index
                calls.append({**call, "function": {**call["function"], "name": marker}})
            message["tool_calls"] = calls
        if message["role"] == "tool":
            marker = f"specragtoolresult{index}"
            markers[marker] = index
            message["content"] = marker
    try:
        text = tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
    except TemplateError as error:
        raise ValueError(
            f"the chat template of {owner} refuses the tool turns (prompt[{tool_turns[0]}]): {error}; use a "
            "model whose template supports tools, or send them as plain text"
        ) from None
    missing = [index for marker, index in markers.items() if marker not in str(text)]
    if missing:
        raise ValueError(
            f"the chat template of {owner} drops the tool call or result in prompt[{missing[0]}] (it has no "
            "tool support); use a model whose template supports tools, or send it as plain text"
        )


def validate_prompt(prompt: object) -> Prompt:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError("prompt must not be empty")
        return validate_encodable("prompt", prompt)
    if isinstance(prompt, bytes) or not isinstance(prompt, Sequence):
        raise TypeError(
            f"prompt must be a str or a list of {{'role', 'content'}} messages, got {type(prompt).__name__}"
        )
    if not prompt:
        raise ValueError("prompt must not be empty: no messages")
    for position, message in enumerate(prompt):
        if not isinstance(message, Mapping):
            raise TypeError(f"prompt[{position}] must be a mapping, got {type(message).__name__}")
        for field in ("role", "content"):
            if not isinstance(message.get(field), str):
                raise TypeError(f"prompt[{position}][{field!r}] must be a str")
        validate_encodable(f"prompt[{position}]['content']", message["content"])
        for field in ("tool_call_id", "name"):
            if message.get(field) is not None and not isinstance(message[field], str):
                raise TypeError(f"prompt[{position}][{field!r}] must be a str")
        if message.get("tool_calls") is not None:
            _validate_tool_calls(f"prompt[{position}]['tool_calls']", message["tool_calls"])
    if not any(message["content"].strip() or message.get("tool_calls") for message in prompt):
        raise ValueError("prompt must not be empty: every message's content is empty")
    return prompt


def _validate_tool_calls(name: str, calls: object) -> None:
    """Tool calls in the transformers form (see :data:`Message`), or a one-line error."""
    if isinstance(calls, (str, bytes, Mapping)) or not isinstance(calls, Sequence):
        raise TypeError(f"{name} must be a list of tool calls, got {type(calls).__name__}")
    for number, call in enumerate(calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise TypeError(
                f"{name}[{number}] must be {{'type': 'function', 'function': {{'name': str, 'arguments': dict}}}}"
            )
        if not isinstance(function.get("arguments", {}), (Mapping, str)):
            raise TypeError(f"{name}[{number}]['function']['arguments'] must be a dict or a JSON str")


# ---------------------------------------------------------------------------- streams
class TextStream(Iterator[str], Generic[ResultT]):
    """Text deltas of one generation; :attr:`result` once it is exhausted.

    Wraps a generator that yields deltas (empty ones are skipped) and *returns* the result.

    Deltas never split a multi-byte character and never show text a stop string will cut.
    Closing the stream early (``close()``, or dropping it) stops generation and frees the
    engine.
    """

    def __init__(self, events: Generator[str, None, ResultT]) -> None:
        self._events = events
        self._result: ResultT | None = None

    def __iter__(self) -> TextStream[ResultT]:
        return self

    def __next__(self) -> str:
        while True:
            try:
                delta = next(self._events)
            except StopIteration as finished:
                self._result = finished.value
                raise
            if delta:
                return delta

    def close(self) -> None:
        """Stop generating now; :attr:`result` stays unavailable."""
        self._events.close()

    @property
    def result(self) -> ResultT:
        """What the finished generation returned."""
        if self._result is None:
            raise RuntimeError("the stream has not finished yet; iterate it to the end first")
        return self._result


_END = object()


class AsyncTextStream(AsyncIterator[str], Generic[ResultT]):
    """:class:`TextStream` for asyncio: generation runs in a worker thread.

    Deltas cross to the event loop through a queue, so the loop never blocks on the model.
    ``aclose()`` (called by ``async for`` wrappers on early exit) stops the worker after its
    current token and waits for it, so the engine is free again when it returns.
    """

    def __init__(self, start: Callable[[], Generator[str, None, ResultT]]) -> None:
        self._start = start
        self._queue: asyncio.Queue[object] | None = None
        self._future: asyncio.Future[None] | None = None
        self._cancel = threading.Event()
        self._result: ResultT | None = None
        self._done = False

    def __aiter__(self) -> AsyncTextStream[ResultT]:
        return self

    def _work(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object]) -> None:
        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                self._cancel.set()

        events = self._start()
        outcome: object = _END
        try:
            while True:
                if self._cancel.is_set():
                    events.close()
                    return
                try:
                    delta = next(events)
                except StopIteration as finished:
                    self._result = finished.value
                    break
                if delta:
                    put(delta)
        except Exception as error:
            outcome = error
        finally:
            if not self._cancel.is_set():
                put(outcome)

    async def __anext__(self) -> str:
        if self._done:
            raise StopAsyncIteration
        if self._queue is None:
            loop = asyncio.get_running_loop()
            self._queue = asyncio.Queue()
            self._future = loop.run_in_executor(None, self._work, loop, self._queue)
        item = await self._queue.get()
        if item is _END:
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item  # type: ignore[return-value]

    async def aclose(self) -> None:
        """Stop the worker after its current token and wait until it has let go."""
        self._cancel.set()
        if self._future is not None:
            await asyncio.shield(self._future)

    @property
    def result(self) -> ResultT:
        if self._result is None:
            raise RuntimeError("the stream has not finished yet; iterate it to the end first")
        return self._result
