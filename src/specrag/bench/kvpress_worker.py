"""Run NVIDIA kvpress presses on the bench's exported prompts, in kvpress's own environment.

Why a separate process
----------------------
kvpress 0.5.5 requires ``transformers<5.3``; specrag is tested on newer transformers, so the
two cannot share a virtual environment. ``specrag bench --export-kv-prompts`` writes the
exact token ids SpecKV's rows read (chat template, documents, question), their cache budgets
and decoding limits; this file, run by path with kvpress's interpreter, answers each prompt
under each press and writes one JSON line per (prompt, press, budget); ``specrag bench
--import-kvpress`` scores those answers with the bench's metrics and adds them to the same
result file as the SpecKV rows. Build the environment with ``benchmarks/kvpress_env.sh``.

It therefore imports only the standard library, torch and transformers at module level
(kvpress only when a press is built), and nothing from specrag: the protocol below is also
importable in specrag's environment, where the tests run it without a press against
SpecKV's full-cache answer.

The protocol is SpecKV's, with kvpress's presses: the whole prompt is prefilled inside
``press(model)`` (the press prunes every layer's cache right after that layer's attention has
read all of it; KVzip replays the context after the prefill), the first answer token comes
from that prefill's last position, and decoding is greedy from there over the pruned cache,
with explicit positions because the pruned cache is shorter than the text. So, as in
SpecKV's rows, the prompt is read whole once and only what follows the first answer token
reads the budget (``budget`` entries per layer after the prompt). The question is part of
the compressed prompt, so window-based presses see it. Each line says so in
``first_token``: ``"full_prompt"``. (The committed 2k rows predate this and were prefilled
without their last token, which then read the pruned cache; docs/kvpress.md.)

Usage (in the kvpress environment)::

    .venv-kvpress/bin/python src/specrag/bench/kvpress_worker.py --model MODEL_DIR \\
        --prompts kv-prompts.jsonl --presses snapkv,expected_attention --out kvpress.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PRESSES: dict[str, tuple[str, dict[str, Any]]] = {
    "snapkv": ("SnapKVPress", {}),
    "expected_attention": ("ExpectedAttentionPress", {}),
    "streaming_llm": ("StreamingLLMPress", {}),
    "tova": ("TOVAPress", {}),
    "knorm": ("KnormPress", {}),
    "kvzip": ("KVzipPress", {}),
}
"""Row name -> (kvpress class, keyword arguments besides ``compression_ratio``): kvpress's
defaults throughout (SnapKV's 64-token window, StreamingLLM's 4 sinks, ...)."""

METHOD_PREFIX = "kvpress_"
"""Bench rows are named ``kvpress_<press>``."""


FIRST_TOKEN = "full_prompt"
"""What the first answer token reads, written on every line: the whole prompt, as in SpecKV."""
EARLIER_FIRST_TOKEN = "pruned_cache"
"""``first_token`` of lines from the worker before it wrote that field: it prefilled all but
the last prompt token under the press, so the first answer token read the pruned cache.
Such rows are labelled apart, never mixed with the others."""


def compression_ratio(prompt_tokens: int, entries: int) -> float:
    """kvpress's ``compression_ratio`` (the fraction removed) that leaves ``entries`` of the
    ``prompt_tokens`` prefilled ones per layer, SpecKV's budget; 0 when nothing needs removing.

    kvpress keeps ``int(n * (1 - ratio))`` entries, a floor: aiming half an entry above the
    wanted count keeps float rounding from costing one (``1 - 116/1169`` keeps 115).
    """
    keep = min(prompt_tokens, max(1, entries))
    if prompt_tokens <= 0 or keep >= prompt_tokens:
        return 0.0
    return 1.0 - (keep + 0.5) / prompt_tokens


def build_press(name: str, ratio: float) -> Any:
    """The kvpress press behind row ``name`` at ``ratio``; a clear error for an unknown name."""
    if name not in PRESSES:
        raise SystemExit(f"unknown press {name!r}; expected some of {', '.join(PRESSES)}")
    import kvpress  # only in kvpress's environment

    class_name, options = PRESSES[name]
    return getattr(kvpress, class_name)(compression_ratio=ratio, **options)


def _with_cache(module: Any, cache: Any) -> dict[str, Any]:
    """The cache keyword ``module.forward`` takes: ``cache`` from transformers 5.x's rename on,
    ``past_key_values`` before it (kvpress's transformers, whose presses read that name).
    The same rule as :func:`specrag.core.models.cache_argument`, restated because this file
    must not import specrag."""
    name = "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"
    return {name: cache}


def _stopped(text: str, stop: Sequence[str]) -> str | None:
    """``text`` cut before its first stop string, or None when none occurs yet."""
    cuts = [text.index(s) for s in stop if s and s in text]
    return text[: min(cuts)] if cuts else None


def _effective_entries(model: Any, cache: Any) -> list[float]:
    """Entries per layer that attention can still see, averaged over key-value heads.

    Most presses remove entries from the cache; head-wise ones (KVzip with its default
    uneven layers, AdaKV, ...) leave them in place and list the hidden ones per head in
    ``self_attn.masked_key_indices``, which kvpress's attention patch masks while decoding.
    """
    counts = []
    for layer, held in zip(model.model.layers, cache.layers, strict=False):
        masked = getattr(layer.self_attn, "masked_key_indices", None)
        hidden = int(masked[0].numel()) if masked is not None else 0
        counts.append(held.keys.shape[-2] - hidden / held.keys.shape[1])
    return counts


def _cache_stats(cache: Any) -> tuple[list[int], int]:
    """Entries per layer and bytes held (keys and values) by a transformers cache."""
    entries, total = [], 0
    for layer in cache.layers:
        keys, values = layer.keys, layer.values
        entries.append(int(keys.shape[-2]))
        total += keys.numel() * keys.element_size() + values.numel() * values.element_size()
    return entries, total


@torch.inference_mode()
def answer(
    model: Any,
    tokenizer: Any,
    input_ids: Sequence[int],
    press: Callable[[Any], contextlib.AbstractContextManager[Any]] | None,
    *,
    max_new_tokens: int,
    stop: Sequence[str] = (),
) -> dict[str, Any]:
    """Greedy answer to ``input_ids`` with the cache pruned by ``press`` (None: full cache).

    Returns the prediction (cut at the first stop string), the generated ids, time to first
    token (prefill with compression), decode tokens/s, and the
    cache's entries per layer and bytes at the end, and at their largest (the full prompt).
    ``visible_entries`` are the entries per layer attention reads after the prompt: fewer
    than ``prefill_cache_entries`` for presses that mask entries instead of removing them.
    """
    from transformers import DynamicCache

    if not input_ids:
        raise ValueError("an empty prompt has nothing to prefill")
    device = model.device
    ids = torch.tensor([list(input_ids)], device=device)
    length = ids.shape[1]
    cache = DynamicCache()
    started = time.perf_counter()
    with press(model) if press is not None else contextlib.nullcontext():
        # An index tensor, not logits_to_keep=1: the LM head then reads a fresh row, not a
        # strided slice that torch's bf16 CPU matmul copies the whole head weight for (as in
        # specrag.core.models.last_logits_only; the worker imports nothing of specrag).
        last = torch.tensor([length - 1], device=device)
        logits = model(input_ids=ids, logits_to_keep=last, **_with_cache(model, cache)).logits
    prefill_entries, prefilled_bytes = _cache_stats(cache)
    visible = _effective_entries(model, cache)
    ttft = time.perf_counter() - started

    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    generated: list[int] = []
    text = ""
    started = time.perf_counter()
    forwards = 0
    for step in range(max_new_tokens):
        token = int(logits[0, -1].argmax())
        generated.append(token)
        if token in eos_ids:
            break
        text = tokenizer.decode(generated, skip_special_tokens=True)
        if _stopped(text, stop) is not None or step == max_new_tokens - 1:
            break
        logits = model(
            input_ids=torch.tensor([[token]], device=device),
            position_ids=torch.tensor([[length + step]], device=device),
            **_with_cache(model, cache),
        ).logits
        forwards += 1
    decode_seconds = time.perf_counter() - started
    text = tokenizer.decode(generated, skip_special_tokens=True)
    cut = _stopped(text, stop)
    entries, end_bytes = _cache_stats(cache)
    per_entry = end_bytes / max(1, sum(entries))
    return {
        "prediction": (cut if cut is not None else text).strip(),
        "token_ids": generated,
        "ttft_s": ttft,
        "prefill_s": ttft,
        "draft_s": 0.0,
        "decode_tok_s": forwards / decode_seconds if decode_seconds > 0 else 0.0,
        "prefill_cache_entries": prefill_entries,
        "visible_entries": visible,
        "cache_entries": entries,
        "kv_bytes_end": end_bytes,
        "kv_bytes_prefill": prefilled_bytes,
        "kv_bytes_full": int(per_entry * len(entries) * (length + forwards)),
        "kv_bytes_peak": int(per_entry * len(entries) * length),  # the bench's convention: the full prompt
        "prompt_tokens": length,
    }


def _done(path: Path) -> set[str]:
    """Keys already written (a truncated last line, from a killed run, is ignored)."""
    keys: set[str] = set()
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError, KeyError):
                keys.add(json.loads(line)["key"])
    return keys


def _prompts(path: Path) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as error:
                raise SystemExit(f"{path}:{number}: not a JSON line ({error.msg}); re-export the prompts") from None


def run_prompts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[dict[str, Any]],
    presses: Sequence[str],
    out: Path,
    *,
    make_press: Callable[[str, float], Any] = build_press,
    versions: dict[str, str] | None = None,
) -> int:
    """Answer every prompt under every press and budget not yet in ``out``; returns how many
    lines were appended (one per answer, flushed at once so a killed run loses one at most).

    ``make_press(name, compression_ratio)`` builds a press (kvpress's by default).
    """
    done = _done(out)
    written = 0
    with out.open("a", encoding="utf-8") as handle:
        for index, prompt in enumerate(prompts):
            for name in presses:
                for budget, entries in prompt["entries"].items():
                    key = f"{prompt['item_id']}|{METHOD_PREFIX}{name}|-|{prompt['target']}|{budget}"
                    if key in done:
                        continue
                    ratio = compression_ratio(len(prompt["input_ids"]), int(entries))
                    result = answer(
                        model,
                        tokenizer,
                        prompt["input_ids"],
                        make_press(name, ratio),
                        max_new_tokens=int(prompt["max_new_tokens"]),
                        stop=prompt.get("stop", []),
                    )
                    line = {
                        "key": key,
                        "item": {field: value for field, value in prompt.items() if field != "input_ids"},
                        "item_id": prompt["item_id"],
                        "press": name,
                        "budget": float(budget),
                        "entries": int(entries),
                        "compression_ratio": ratio,
                        "first_token": FIRST_TOKEN,
                        **(versions or {}),
                        **result,
                        "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                    }
                    handle.write(json.dumps(line) + "\n")
                    handle.flush()
                    written += 1
                    print(
                        f"[{index + 1}/{len(prompts)}] {name} @{budget}: {result['prediction']!r} "
                        f"({result['ttft_s']:.1f} s to first token)",
                        file=sys.stderr,
                    )
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """Answer every exported prompt under every requested press and budget (resumable)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", required=True, help="The target's model folder (the bundle's converted folder).")
    parser.add_argument("--prompts", required=True, type=Path, help="From specrag bench --export-kv-prompts.")
    parser.add_argument("--presses", default="snapkv,expected_attention,streaming_llm,tova,kvzip")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="Only the first this many prompts.")
    args = parser.parse_args(argv)
    # The model runs in the dtype the prompts were exported with (SpecKV's rows' dtype).
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [name.strip() for name in args.presses.split(",") if name.strip()]
    for name in names:
        if name not in PRESSES:
            raise SystemExit(f"unknown press {name!r}; expected some of {', '.join(PRESSES)}")

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    prompts = list(_prompts(args.prompts))[: args.limit]
    dtypes = {prompt.get("target_dtype", "float32") for prompt in prompts}
    if len(dtypes) > 1:
        raise SystemExit(f"the prompts were exported from targets in several dtypes ({sorted(dtypes)}); export again")
    dtype = getattr(torch, dtypes.pop() if dtypes else "float32")  # the dtype SpecKV's rows ran in
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).eval()
    versions = {name: metadata.version(name) for name in ("kvpress", "transformers", "torch")}
    written = run_prompts(model, tokenizer, prompts, names, args.out, versions=versions)
    print(f"{written} answers appended to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
