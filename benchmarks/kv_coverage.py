#!/usr/bin/env python
"""Where an answer's cache entries go: per layer and KV head, which answer values survived.

Why this script
---------------
An evicted answer that goes wrong says only *that* something needed was dropped. This shows
*what* and *where*: for every item of a benchmark task (a development seed: the report's
items are seed 0), several SpecKV rows answer from one shared target prefill, and for every
expected answer value the script finds its target tokens in the prompt and records, for each
budgeted (layer, KV head), whether the eviction kept all of them. It prints what each row
answered, what its draft wrote (``SpecKVResult.draft_answer``) and the share of (layer, KV
head) pairs that kept each value whole, by quarter of the model's depth.

Rows: ``speckv`` (the default), ``speckv_mean`` (``reduction="mean"``), ``oracle`` (the target
writes its own lookahead: a perfect draft, at the cost of the target's decoding) and
``snapkv`` (window only, no draft).

Usage::

    .venv/bin/python benchmarks/kv_coverage.py --tasks niah_multivalue --length 4096 --limit 4 \\
        --budgets 0.1 --out kv-coverage.jsonl
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from _dev_items import dev_run

from specrag import LoadedModel, SpecKV, load_model
from specrag.bench.methods_kv import NO_EVICTION, kv_entries
from specrag.bench.runner import ANSWER_STOP, answer_tokens, kv_prompt_ids, question_messages, scored_answer
from specrag.bench.tasks import BenchItem
from specrag.core.speckv.policies import DraftAttention, EntryScorer, SnapKV
from specrag.core.speckv.shared_prefill import generate_shared_prefill

ROWS = ("speckv", "speckv_mean", "oracle", "snapkv")


def _record(kept: dict[int, torch.Tensor], layer: int, indices: torch.Tensor) -> torch.Tensor:
    """Remember the entries ``layer`` kept (the batch's first row) and pass them on."""
    kept[layer] = indices[0].cpu()
    return indices


@dataclass(frozen=True)
class RecordedSpecKV(DraftAttention):
    """SpecKV's default policy, remembering the entries each layer kept."""

    kept: dict[int, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    def select(
        self, layer: int, keys: torch.Tensor, keep: int, window: int, observer: EntryScorer | None
    ) -> torch.Tensor:
        return _record(self.kept, layer, super().select(layer, keys, keep, window, observer))


@dataclass(frozen=True)
class RecordedSnapKV(SnapKV):
    """Window-only eviction, remembering the entries each layer kept."""

    kept: dict[int, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    def select(
        self, layer: int, keys: torch.Tensor, keep: int, window: int, observer: EntryScorer | None
    ) -> torch.Tensor:
        return _record(self.kept, layer, super().select(layer, keys, keep, window, observer))


def value_positions(tokenizer: Any, ids: list[int], values: Sequence[str]) -> dict[str, list[int]]:
    """For each of ``values``, the prompt positions of the tokens covering every occurrence
    of it ([] if none). The prompt is decoded and re-encoded with offsets once."""
    text = tokenizer.decode(ids)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if encoded["input_ids"] != ids:
        raise SystemExit("the prompt does not re-encode to its own ids; cannot map values to tokens")
    offsets = encoded["offset_mapping"]
    found: dict[str, list[int]] = {}
    for value in values:
        positions: list[int] = []
        start = text.find(value)
        while start >= 0:
            end = start + len(value)
            positions += [index for index, (a, b) in enumerate(offsets) if a < end and b > start]
            start = text.find(value, end)
        found[value] = positions
    return found


def coverage(kept: dict[int, torch.Tensor], positions: list[int]) -> str:
    """One character per (layer, KV head), layers in order: 1 = every position kept."""
    wanted = torch.tensor(positions, dtype=torch.long)
    marks = []
    for layer in sorted(kept):
        for head in kept[layer]:
            marks.append("1" if bool(torch.isin(wanted, head).all()) else "0")
    return "".join(marks)


def rows_for(target: LoadedModel, draft: LoadedModel, budget: int) -> dict[str, tuple[SpecKV, Any]]:
    policies: dict[str, tuple[LoadedModel | None, Any]] = {
        "speckv": (draft, RecordedSpecKV()),
        "speckv_mean": (draft, RecordedSpecKV(reduction="mean")),
        "oracle": (target, RecordedSpecKV()),
        "snapkv": (None, RecordedSnapKV()),
    }
    return {
        name: (SpecKV(target, model, budget=budget, policy=policy), policy)
        for name, (model, policy) in policies.items()
    }


def run_item(item: BenchItem, target: LoadedModel, draft: LoadedModel, ratio: float) -> dict[str, Any]:
    full = SpecKV(target, None, budget=NO_EVICTION)
    ids = kv_prompt_ids(full, item)
    budget = kv_entries(len(ids), ratio)
    rows = rows_for(target, draft, budget)
    results = generate_shared_prefill(
        [engine for engine, _ in rows.values()] + [full],
        question_messages(item),
        documents=list(item.documents),
        max_new_tokens=answer_tokens(item, 16),
        stop=list(ANSWER_STOP),
    )
    record: dict[str, Any] = {
        "item": item.item_id,
        "budget": budget,
        "prompt_tokens": len(ids),
        "answers": item.answers,
    }
    positions = value_positions(target.tokenizer, ids, item.answers)
    for (name, (_, policy)), result in zip([*rows.items(), ("full", (None, None))], results, strict=True):
        scored = scored_answer(result.text.strip(), item.answers, item.require_all)
        row: dict[str, Any] = {"prediction": scored["prediction"], "right": scored["answer_contained"]}
        if policy is not None:
            row["draft_answer"] = result.draft_answer
            row["kept"] = {value: coverage(policy.kept, where) for value, where in positions.items() if where}
        record[name] = row
    return record


def by_quarter(marks: str, heads: int) -> list[float]:
    """Share of kept marks in each quarter of the layers."""
    layers = len(marks) // heads
    quarters = [range(q * layers // 4, (q + 1) * layers // 4) for q in range(4)]
    return [
        sum(marks[layer * heads : (layer + 1) * heads].count("1") for layer in quarter) / (len(quarter) * heads)
        for quarter in quarters
    ]


def report(record: dict[str, Any], heads: int) -> None:
    """Print one item: each row's answer and draft, and where each value was kept whole."""
    print(f"{record['item']}  answers {', '.join(record['answers'])}")
    for name in (*ROWS, "full"):
        row = record[name]
        line = f"  {name:<12} {'right' if row['right'] else 'WRONG'}  {row['prediction'][:60]!r}"
        if row.get("draft_answer"):
            line += f"  draft: {row['draft_answer'][:40]!r}"
        print(line, flush=True)
        for value, marks in row.get("kept", {}).items():
            quarters = " ".join(f"{share:.2f}" for share in by_quarter(marks, heads))
            print(f"      {value}: whole in {marks.count('1')}/{len(marks)} (layer quarters {quarters})", flush=True)


def main() -> None:
    run = dev_run((__doc__ or "").splitlines()[0], tasks="niah_multivalue", budgets="0.1", limit=4, out_option=True)
    out = Path(run.args.out) if run.args.out else None
    target = load_model(run.args.target, "cpu", progress=False)
    heads = int(getattr(target.model.config, "num_key_value_heads", 1))
    records = []
    for item in run.items:
        record = run_item(item, target, run.draft, run.budgets[0])
        records.append(record)
        report(record, heads)
        if out is not None:
            with out.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
    for name in ROWS:
        right = sum(record[name]["right"] for record in records)
        marks = "".join(m for record in records for m in record[name]["kept"].values())
        share = marks.count("1") / max(1, len(marks))
        print(f"{name:<12} right {right}/{len(records)}  values whole per (layer, KV head): {share:.2f}")


if __name__ == "__main__":
    main()
