"""kvpress side by side: export the KV rows' prompts, import kvpress's answers as bench rows.

kvpress runs in its own environment (:mod:`~specrag.bench.kvpress_worker` says why), so the
comparison goes through files, in three steps that keep both sides on exactly the same
inputs:

1. :func:`export_kv_prompts` writes, per bench item, the token ids SpecKV's rows read
   (:func:`~.runner.kv_prompt_ids`), each budget's cache entries per layer
   (:func:`~.methods_kv.kv_entries`), the decoding limits, and what scoring needs.
2. The worker answers them under each press (greedy, same stop rule).
3. :func:`import_kvpress` scores the answers with the bench's own metrics
   (:func:`~.runner.scored_answer`) and appends them to the bench's result file as ``kv``
   rows named ``kvpress_<press>``, with the same fields as SpecKV's rows, so every table
   and paired test of ``specrag bench`` covers both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..core.models import LoadedModel
from ..core.speckv import SpecKV
from .budget import target_units
from .kvpress_worker import EARLIER_FIRST_TOKEN, METHOD_PREFIX, PRESSES
from .methods_kv import NO_EVICTION, kv_entries
from .runner import (
    ANSWER_STOP,
    SuiteConfig,
    answer_tokens,
    dtype_name,
    kv_prompt_ids,
    load_records,
    result_key,
    scored_answer,
)

KVPRESS_METHODS = tuple(f"{METHOD_PREFIX}{name}" for name in PRESSES)
"""Bench rows the worker can fill (``kvpress_snapkv``, ...)."""

_FIGURES = ("ttft_s", "prefill_s", "draft_s", "decode_tok_s", "kv_bytes_end", "kv_bytes_full", "kv_bytes_peak")
_REQUIRED = (
    "key",
    "item",
    "press",
    "budget",
    "entries",
    "prediction",
    "prompt_tokens",
    "visible_entries",
    "cache_entries",
    "peak_memory_bytes",
    *_FIGURES,
)
"""Every field the worker writes that a row is made of: a line without one is refused,
never filled with a plausible default."""


def export_kv_prompts(config: SuiteConfig, target: LoadedModel, path: Path) -> int:
    """Write one JSON line per item of ``config`` (its tasks, lengths, limit, seed, budgets,
    ``max_new_tokens``) for the kvpress worker; returns how many were written."""
    items = config.items(target.tokenizer)
    engine = SpecKV(target, None, budget=NO_EVICTION)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for item in items:
            ids = kv_prompt_ids(engine, item)
            line = {
                "item_id": item.item_id,
                "task": item.task,
                "length": item.length,
                "qtype": item.meta.get("qtype"),
                "target": target.name,
                "target_dtype": dtype_name(target.dtype),
                "total_tokens": target_units(target.tokenizer, item.documents).total_tokens,
                "n_answers": len(item.answers),
                "answers": list(item.answers),
                "require_all": item.require_all,
                "input_ids": ids,
                "entries": {f"{budget:g}": kv_entries(len(ids), budget) for budget in config.budgets},
                "max_new_tokens": answer_tokens(item, config.max_new_tokens),
                "stop": list(ANSWER_STOP),
            }
            handle.write(json.dumps(line) + "\n")
    return len(items)


def kvpress_records(lines: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bench ``kv`` records from the worker's output lines (see the module notes).

    Raises
    ------
    ValueError
        For a line the worker did not write (a missing field), naming the field.
    """
    records = []
    for number, line in enumerate(lines, 1):
        missing = [field for field in _REQUIRED if field not in line]
        if missing:
            raise ValueError(f"kvpress result line {number} lacks {missing}: is it the worker's output?")
        item, budget, prompt_tokens = line["item"], float(line["budget"]), int(line["prompt_tokens"])
        # What attention reads after the prompt, per layer on average: a masking press
        # (KVzip) keeps its hidden entries in memory, but its budget is what it lets be read.
        visible = line["visible_entries"]
        kept = round(sum(visible) / len(visible))
        method = f"{METHOD_PREFIX}{line['press']}"
        record = {
            "task": item["task"],
            "item_id": item["item_id"],
            "length": item["length"],
            "qtype": item.get("qtype"),
            "target": item["target"],
            "target_dtype": item.get("target_dtype"),
            "total_tokens": item["total_tokens"],
            "n_answers": item["n_answers"],
            **scored_answer(line["prediction"], item["answers"], bool(item["require_all"])),
            "key": result_key(item["item_id"], method, None, item["target"], budget),
            "method": method,
            "kind": "kv",
            "draft": None,
            "budget": budget,
            "budget_tokens": min(int(line["entries"]), prompt_tokens),
            "kept_tokens": kept,
            "kept_fraction": kept / prompt_tokens,
            "full_prompt_tokens": prompt_tokens,
            "compression_s": 0.0,  # the press scores inside the prefill: it is in prefill_s
            "peak_memory_bytes": int(line["peak_memory_bytes"]),
            **{field: line[field] for field in _FIGURES},
            "prompt_tokens": prompt_tokens,
            "cache_entries": line["cache_entries"],
            "first_token": line.get("first_token", EARLIER_FIRST_TOKEN),
        }
        record["versions"] = {name: line[name] for name in ("kvpress", "transformers", "torch") if name in line}
        records.append(record)
    return records


def import_kvpress(results: Sequence[Path], out: Path) -> int:
    """Append the worker's answers in ``results`` to the bench file ``out`` as ``kv`` rows;
    rows already there (same key) are skipped. Returns how many were added."""
    lines: list[dict[str, Any]] = []
    for path in results:
        if not Path(path).exists():
            raise FileNotFoundError(f"no kvpress results at {path}: run src/specrag/bench/kvpress_worker.py first")
        texts = Path(path).read_text(encoding="utf-8").splitlines()
        for number, text in enumerate(texts, 1):
            if not text.strip():
                continue
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError:
                if number == len(texts):
                    continue  # a killed worker's truncated last line
                raise ValueError(f"{path}:{number}: not a JSON line; is it the worker's output?") from None
    existing = load_records(out)
    records = kvpress_records(lines)
    for record in records:
        held = existing.get(record["key"])
        if held is None:
            continue
        protocol = held.get("first_token", EARLIER_FIRST_TOKEN)
        if protocol != record["first_token"]:
            raise ValueError(
                f"{out} already holds {record['method']} for {record['item_id']} with first_token "
                f"{protocol!r}, these lines have {record['first_token']!r} "
                "(two worker protocols): import into another --out file"
            )
    added = [record for record in records if record["key"] not in existing]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as handle:
        for record in added:
            handle.write(json.dumps(record) + "\n")
    return len(added)


__all__ = [
    "EARLIER_FIRST_TOKEN",
    "KVPRESS_METHODS",
    "export_kv_prompts",
    "import_kvpress",
    "kvpress_records",
]
