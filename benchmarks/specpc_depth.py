#!/usr/bin/env python
"""Which draft layers carry SpecPC's signal, and what a truncated draft (``draft_layers``) costs.

Why this script
---------------
SpecPC reads attention and never the draft's logits, so the layers after the last scored one
(and the LM head) are wasted work. ``SpecPC(draft_layers=k)`` stops the forward after layer
``k - 1``. This measures, on a *development* seed (never the reported items), what each layer
range keeps next to the full depth, for the plain attention ranking and for the fused ranking
(MiniLM relevance, ``fusion="max"``, ``bridge=True``, sentence units), and how long the draft
pass takes. Items and selection are the bench's own (target-token budgets, the shared
selector), so figures compare with ``specrag bench`` rows.

Usage::

    .venv/bin/python benchmarks/specpc_depth.py --tasks multihop,quoref --limit 20 --seed 1
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any

from _dev_items import dev_run
from tqdm.auto import tqdm

from specrag.bench.budget import target_units
from specrag.bench.methods_pc import DraftAttention, compress_at_budgets
from specrag.bench.metrics import answer_contained
from specrag.bench.report import sign_test
from specrag.core.embeddings import embed

RANKINGS: dict[str, dict[str, Any]] = {
    "attention": {"snap": "word"},
    "fused": {"snap": "sentence", "fusion": "max", "bridge": True},
}


def layer_ranges(layers: int) -> dict[str, dict[str, int]]:
    """Full depth (scoring from a third of it) and truncations of it, for a ``layers``-deep draft."""
    third = layers // 3
    return {
        f"{third}-{layers} (full)": {},
        f"{third}-{2 * layers // 3}": {"draft_layers": 2 * layers // 3},
        f"{third // 2}-{layers // 2}": {"start_layer": third // 2, "draft_layers": layers // 2},
        f"{third // 3}-{third}": {"start_layer": third // 3, "draft_layers": third},
    }


def main() -> None:
    run = dev_run(__doc__.splitlines()[0], tasks="multihop,quoref", budgets="0.1,0.25")
    args, budgets, tokenizer, draft, items = run.args, run.budgets, run.tokenizer, run.draft, run.items
    ranges = layer_ranges(draft.num_layers)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    kept: dict[tuple[str, str, float], list[bool]] = {}
    seconds: dict[str, list[float]] = {name: [] for name in ranges}
    for item in tqdm(items, desc="items"):
        units = target_units(tokenizer, item.documents)
        wanted = item.evidence or item.answers
        for range_name, layer_settings in ranges.items():
            shared: dict[tuple[Any, ...], Any] = {}
            for ranking, ranking_settings in RANKINGS.items():
                embedder = embed if ranking == "fused" else None
                method = DraftAttention(ranking, draft, embedder, shared, **layer_settings, **ranking_settings)
                started = time.perf_counter()
                out = compress_at_budgets(method, item, units, budgets, count)
                if ranking == "attention":  # the one draft pass of this range
                    seconds[range_name].append(time.perf_counter() - started)
                for budget, (selection, _) in out.items():
                    hit = answer_contained("\n\n".join(selection.texts), wanted, require_all=bool(item.evidence))
                    kept.setdefault((range_name, ranking, budget), []).append(hit)

    full = next(iter(ranges))
    print(f"# {len(items)} items ({args.tasks}, {args.length} tokens, seed {args.seed}); draft {args.draft}, ")
    print(f"# {draft.num_layers} layers; {platform.processor() or platform.machine()}, {args.threads} thread(s)\n")
    header = " | ".join(f"kept @{b}" for b in budgets)
    print(f"| layers scored | ranking | {header} | vs full @{budgets[0]} (paired) | draft s (median) |")
    print("|---|---|" + "---|" * len(budgets) + "---|---|")
    for range_name in ranges:
        for ranking in RANKINGS:
            cells = [f"{sum(kept[(range_name, ranking, b)]) / len(items):.2f}" for b in budgets]
            base, this = kept[(full, ranking, budgets[0])], kept[(range_name, ranking, budgets[0])]
            wins = sum(t and not f for t, f in zip(this, base))
            losses = sum(f and not t for t, f in zip(this, base))
            paired = f"+{wins}/-{losses} p={sign_test(wins, losses):.2f}" if range_name != full else "-"
            median = statistics.median(seconds[range_name])
            print(f"| {range_name} | {ranking} | " + " | ".join(cells) + f" | {paired} | {median:.2f} |")


if __name__ == "__main__":
    main()
