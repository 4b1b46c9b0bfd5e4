"""SpecPC as a Ray Serve deployment: many compressor replicas behind one HTTP route.

Why Ray Serve
-------------
Users outgrow one machine by running many compressor replicas next to (or far from) the
answering LLM. Ray Serve already does replicas, autoscaling, HTTP and request batching;
this module only adds a deployment whose batched method is :meth:`SpecPC.compress_batch`,
fed by ``@serve.batch``: concurrent requests to one replica share draft forwards.

Each request is one JSON object, ``{"documents": [...], "question": "...", "instruction":
null, "keep_ratio": null, "max_tokens": null}`` (``keep_ratio``/``max_tokens`` override the
deployment's budget for that request); the reply is the :class:`~specrag.CompressionResult`
as JSON, with ``texts`` and ``batched_with`` (how many requests shared its batch) added. A
bad request gets HTTP 422 and a one-line ``error``; it never fails the requests batched with
it.

Examples
--------
>>> from ray import serve  # doctest: +SKIP
>>> from specrag.integrations.ray_serve import specpc_app
>>> serve.run(specpc_app(keep_ratio=0.25), route_prefix="/compress")  # doctest: +SKIP
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import ValidationError
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..core.budget import resolve_call_budget
from ..core.specpc import DEFAULT_DRAFT, CompressRequest, SpecPC
from ..core.specpc.batching import describe

_BUDGET_FIELDS = ("keep_ratio", "max_tokens")


@serve.deployment
class SpecPCDeployment:
    """One replica: a SpecPC built once, compressing batches of concurrent requests.

    Parameters
    ----------
    draft, keep_ratio, max_tokens, embedder, target_tokenizer, settings
        As :class:`~specrag.SpecPC` (``settings``: its :class:`~specrag.SpecPCSettings`).
    device
        Where the draft runs in the replica (``"auto"``: its GPU when Ray gave it one).
    max_batch_size, batch_wait_timeout_s
        ``@serve.batch``: at most this many requests per batch, waiting at most this long
        for a batch to fill.
    """

    def __init__(
        self,
        draft: str = DEFAULT_DRAFT,
        *,
        keep_ratio: float | None = None,
        max_tokens: int | None = None,
        embedder: str | None = "minilm",
        target_tokenizer: str | None = None,
        device: str = "auto",
        settings: dict[str, Any] | None = None,
        max_batch_size: int = 8,
        batch_wait_timeout_s: float = 0.01,
    ) -> None:
        self.specpc = SpecPC(
            draft,
            keep_ratio=keep_ratio,
            max_tokens=max_tokens,
            device=device,
            embedder=embedder,
            target_tokenizer=target_tokenizer,
            progress=False,
            **(settings or {}),
        )
        # @serve.batch wraps the method in an object with these setters; its stubs say otherwise.
        self.compress_many.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self.compress_many.set_batch_wait_timeout_s(batch_wait_timeout_s)  # type: ignore[attr-defined]

    async def __call__(self, http_request: Request) -> JSONResponse:
        """HTTP entry: validate one request alone, then join a batch."""
        try:
            body = await http_request.json()
        except ValueError:
            return JSONResponse({"error": "the body must be one JSON object"}, status_code=422)
        try:
            request, budget = parse_request(body)
        except ValueError as error:
            return JSONResponse({"error": str(error)}, status_code=422)
        result: dict[str, Any] = await self.compress_many((request, budget))
        return JSONResponse(result)

    async def compress(self, body: dict[str, Any]) -> dict[str, Any]:
        """Deployment-handle entry (``handle.compress.remote(body)``): the same as HTTP, but
        a bad request raises ``ValueError``."""
        return await self.compress_many(parse_request(body))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def compress_many(
        self, batch: list[tuple[CompressRequest, tuple[float | None, int | None]]]
    ) -> list[dict[str, Any]]:
        """One :meth:`SpecPC.acompress_batch` per budget among the batched requests."""
        groups: dict[tuple[float | None, int | None], list[int]] = defaultdict(list)
        for position, (_, budget) in enumerate(batch):
            groups[budget].append(position)
        out: list[dict[str, Any]] = [{} for _ in batch]
        for (keep_ratio, max_tokens), positions in groups.items():
            results = await self.specpc.acompress_batch(
                [batch[p][0] for p in positions], keep_ratio=keep_ratio, max_tokens=max_tokens
            )
            for position, result in zip(positions, results, strict=True):
                out[position] = {**result.model_dump(mode="json"), "texts": result.texts, "batched_with": len(batch)}
        return out


def parse_request(body: object) -> tuple[CompressRequest, tuple[float | None, int | None]]:
    """A request body as a :class:`CompressRequest` and its own budget (``(None, None)``:
    the deployment's); a one-line ``ValueError`` otherwise."""
    if not isinstance(body, dict):
        raise ValueError(f"the body must be a JSON object, got {type(body).__name__}")
    fields = {key: value for key, value in body.items() if key not in _BUDGET_FIELDS}
    try:
        request = CompressRequest(**fields)
    except ValidationError as error:
        raise ValueError(describe(error)) from None
    keep_ratio, max_tokens = body.get("keep_ratio"), body.get("max_tokens")
    if keep_ratio is None and max_tokens is None:
        return request, (None, None)
    try:
        return request, resolve_call_budget(keep_ratio, max_tokens)
    except (TypeError, ValueError) as error:
        raise ValueError(str(error)) from None


def specpc_app(draft: str = DEFAULT_DRAFT, *, num_replicas: int = 1, **options: Any) -> serve.Application:
    """The deployment bound to its arguments, ready for ``serve.run``; ``options`` as
    :class:`SpecPCDeployment` (``ray_actor_options``, autoscaling and the rest through
    ``SpecPCDeployment.options(...)`` when more is needed)."""
    # @serve.deployment turns the class into a Deployment; mypy still sees the class.
    deployment: Any = SpecPCDeployment
    return deployment.options(num_replicas=num_replicas).bind(draft, **options)


_NUMBERS: dict[str, type] = {
    "keep_ratio": float,
    "max_tokens": int,
    "num_replicas": int,
    "max_batch_size": int,
    "batch_wait_timeout_s": float,
}
_TEXTS = ("draft", "device", "target_tokenizer", "embedder")


def builder_options(args: dict[str, str]) -> dict[str, Any]:
    """``serve run`` arguments (all strings) as :func:`specpc_app` keywords; ``embedder=none``
    means attention alone. A one-line ``ValueError`` names an unknown or malformed argument."""
    options: dict[str, Any] = {}
    for name, text in args.items():
        if name in _NUMBERS:
            try:
                options[name] = _NUMBERS[name](text)
            except ValueError:
                kind = "an integer" if _NUMBERS[name] is int else "a number"
                raise ValueError(f"{name}={text!r} is not {kind}") from None
        elif name in _TEXTS:
            options[name] = None if name == "embedder" and text.strip().lower() == "none" else text
        else:
            raise ValueError(f"unknown argument {name!r}; expected some of {sorted([*_NUMBERS, *_TEXTS])}")
    return options


def app_builder(args: dict[str, str]) -> serve.Application:
    """The application for Ray's CLI: ``serve run specrag.integrations.ray_serve:app_builder
    keep_ratio=0.25 num_replicas=2`` (arguments as :func:`builder_options` reads them)."""
    return specpc_app(**builder_options(args))
