#!/usr/bin/env python
"""What sentence-bounded smoothing and the clause fallback buy, on development seeds.

Why this script
---------------
With sentence units, SpecPC ranks a sentence by its best token after smoothing (a 32-token
max-pool, then a 32-token widening). Pooling across sentence ends lets a peak on a name
lend its rank to one or two unrelated sentences on each side; ``pool_scope="sentence"``
stops it there. And a sentence that no longer fits the budget left used to be skipped for
a shorter, lower-ranked one; selection now offers it again as its clauses. This measures
each part, alone and together, against the MiniLM sentence filter, with the bench's items
and selector (target-token budgets), on a *development* seed: the report's items (seed 0)
are never used to choose a default. All variants share one draft pass per item.

Usage::

    .venv/bin/python benchmarks/specpc_units.py --tasks multihop --seed 1 --limit 20
"""

from __future__ import annotations

import platform
from typing import Any

from _dev_items import dev_run
from tqdm.auto import tqdm

from specrag.bench.budget import select, target_units
from specrag.bench.methods_pc import DraftAttention, SentenceSimilarity
from specrag.bench.metrics import answer_contained
from specrag.bench.report import sign_test
from specrag.bench.tasks import BenchItem
from specrag.core.embeddings import embed

VARIANTS: dict[str, tuple[str, bool]] = {
    "pool across sentences, skip (before the fallback)": ("document", False),
    "pool across sentences, clause fallback (default)": ("document", True),
    "pool within sentences, skip": ("sentence", False),
    "pool within sentences, clause fallback": ("sentence", True),
}
"""Row name: (``pool_scope``, clause fallback)."""


def contains_answer(item: BenchItem, texts: tuple[str, ...]) -> bool:
    """The answer (both facts, where the item has evidence) is in the kept texts."""
    return answer_contained("\n\n".join(texts), item.evidence or item.answers, require_all=bool(item.evidence))


def main() -> None:
    run = dev_run(__doc__.splitlines()[0], tasks="multihop", budgets="0.1,0.25,0.5")
    args, budgets, tokenizer, draft, items = run.args, run.budgets, run.tokenizer, run.draft, run.items
    shared: dict[tuple[Any, ...], Any] = {}
    methods = {
        name: DraftAttention(name, draft, embed, shared, pool_scope=scope) for name, (scope, _) in VARIANTS.items()
    }
    baseline = SentenceSimilarity(embed)

    kept: dict[tuple[str, float], list[bool]] = {}
    for item in tqdm(items, desc="items"):
        units = target_units(tokenizer, item.documents)
        filter_keys = baseline.score(item, units)
        for budget in budgets:
            kept.setdefault(("sentence filter", budget), []).append(
                contains_answer(item, select(units, filter_keys, budget).texts)
            )
        for name, method in methods.items():
            keys = method.score(item, units)
            fallback = VARIANTS[name][1]
            for budget in budgets:
                chosen = select(units, keys, budget, method.sentence_tokens, clause_fallback=fallback)
                kept.setdefault((name, budget), []).append(contains_answer(item, chosen.texts))

    print(f"# {len(items)} items ({args.tasks}, {args.length} tokens, seed {args.seed}); draft {args.draft};")
    print(f"# {platform.processor() or platform.machine()}; kept = answer (both facts on multi-hop) in the context\n")
    header = " | ".join(f"kept @{b}" for b in budgets)
    print(f"| ranking | {header} | " + " | ".join(f"vs filter @{b}" for b in budgets) + " |")
    print("|---|" + "---|" * (2 * len(budgets)))
    for name in ["sentence filter", *VARIANTS]:
        cells = [f"{sum(kept[(name, b)]) / len(items):.2f}" for b in budgets]
        paired = []
        for b in budgets:
            this, base = kept[(name, b)], kept[("sentence filter", b)]
            wins = sum(t and not f for t, f in zip(this, base, strict=True))
            losses = sum(f and not t for t, f in zip(this, base, strict=True))
            paired.append("-" if name == "sentence filter" else f"+{wins}/-{losses} p={sign_test(wins, losses):.2f}")
        print(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(paired) + " |")


if __name__ == "__main__":
    main()
