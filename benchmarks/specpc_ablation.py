#!/usr/bin/env python
"""What each part of a SpecPC variant buys, on the benchmark's Quoref items.

Why this script
---------------
The benchmark found SpecPC with the SmolLM2 draft level with the MiniLM sentence filter on
Quoref (docs/benchmarks.md). The ideas for getting ahead of it are lookahead queries (the
draft's own answer), snapping kept spans to whole sentences, and fusing the draft's attention
with embedding relevance. Each needs only the draft's per-token scores and the sentences'
similarities, so this script computes those once per item (cached in a pickle, resumable)
and then evaluates every combination under the benchmark's own target-token selector
(:func:`specrag.bench.budget.select`), on exactly the items ``specrag bench`` uses.

Usage::

    .venv/bin/python benchmarks/specpc_ablation.py --limit 50 --cache ablation.pkl
"""

from __future__ import annotations

import argparse
import pickle
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from specrag.bench.budget import Units, select, target_units, unit_positions
from specrag.bench.methods_pc import DraftAttention, SentenceSimilarity
from specrag.bench.metrics import answer_contained
from specrag.bench.tasks import BenchItem, build_items
from specrag.core.bundles import bundle_dir
from specrag.core.embeddings import embed
from specrag.core.models import load_model
from specrag.core.specpc.ranking import fuse_ranks, snap_to_sentences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draft", default="smollm2-135m")
    parser.add_argument("--target-tokenizer", default="qwen2.5-coder-1.5b")
    parser.add_argument("--lookahead", type=int, default=16)
    parser.add_argument("--cache", type=Path, default=Path("ablation.pkl"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budgets", default="0.1,0.25,0.5")
    parser.add_argument("--eval-only", action="store_true", help="Tabulate the cached items only.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    budgets = [float(b) for b in args.budgets.split(",")]

    tokenizer = AutoTokenizer.from_pretrained(bundle_dir(args.target_tokenizer))
    items = build_items(["quoref"], [args.length], args.limit, args.seed, tokenizer)
    cache: dict[str, dict[str, object]] = pickle.loads(args.cache.read_bytes()) if args.cache.exists() else {}
    if args.eval_only:
        items = [item for item in items if f"{args.draft}|{item.item_id}" in cache]
    draft = load_model(args.draft, "cpu")
    plain = DraftAttention("specpc", draft)
    # The draft answers in its own chat frame, so its lookahead tokens are an answer.
    chat = DraftAttention(
        "specpc_chat", draft, lookahead=args.lookahead, chat=True, question_template="\n\nQuestion: {question}"
    )
    sentence = SentenceSimilarity(embed)
    started = time.perf_counter()
    for item in tqdm(items, desc="score"):
        key = f"{args.draft}|{item.item_id}"
        if key in cache:
            continue
        units = target_units(tokenizer, item.documents)
        cache[key] = {
            # SpecPC's primary ranking key per target unit, exactly as the bench computes it.
            "plain": plain.score(item, units)[0],
            "chat": chat.score(item, units)[0],
            "sentence": sentence.score(item, units)[0],
        }
        args.cache.write_bytes(pickle.dumps(cache))
    print(f"scored in {time.perf_counter() - started:.0f} s; {platform.processor() or platform.machine()}")

    variants: dict[str, Callable[[dict[str, object], Units, BenchItem], list[list[np.ndarray]]]] = {}

    def positions(units: Units) -> list[np.ndarray]:
        return unit_positions(units)

    def sentence_max(units: Units, scores: list[np.ndarray]) -> list[np.ndarray]:
        return [
            snap_to_sentences(text, units.tokens[index].unit_char_starts, scores[index])
            for index, text in enumerate(units.documents)
        ]

    variants["sentence"] = lambda c, u, i: [c["sentence"], positions(u)]
    variants["specpc"] = lambda c, u, i: [c["plain"], positions(u)]
    variants["specpc+chat lookahead"] = lambda c, u, i: [c["chat"], positions(u)]
    variants["specpc, sentence-snapped"] = lambda c, u, i: [sentence_max(u, c["plain"]), c["plain"], positions(u)]
    variants["specpc+chat lookahead, snapped"] = lambda c, u, i: [sentence_max(u, c["chat"]), c["chat"], positions(u)]
    for weight in (0.5, 1.0, 2.0):
        variants[f"fused w={weight:g}"] = lambda c, u, i, w=weight: [
            fuse_ranks([c["plain"], c["sentence"]], [1.0, w]),
            positions(u),
        ]
        variants[f"fused w={weight:g}, snapped"] = lambda c, u, i, w=weight: [
            sentence_max(u, fuse_ranks([c["plain"], c["sentence"]], [1.0, w])),
            c["plain"],
            positions(u),
        ]
        variants[f"fused chat w={weight:g}, snapped"] = lambda c, u, i, w=weight: [
            sentence_max(u, fuse_ranks([c["chat"], c["sentence"]], [1.0, w])),
            c["chat"],
            positions(u),
        ]
        variants[f"fused chat w={weight:g}"] = lambda c, u, i, w=weight: [
            fuse_ranks([c["chat"], c["sentence"]], [1.0, w]),
            positions(u),
        ]

    rows = []
    for name, build in variants.items():
        hits: dict[tuple[float, str], list[bool]] = {}
        for item in items:
            units = target_units(tokenizer, item.documents)
            keys = build(cache[f"{args.draft}|{item.item_id}"], units, item)
            for budget in budgets:
                kept = select(units, keys, budget)
                got = answer_contained("\n\n".join(kept.texts), item.answers)
                for group in ("all", str(item.meta["qtype"])):
                    hits.setdefault((budget, group), []).append(got)
        rows.append((name, hits))
    groups = ("all", "coref", "lexical")
    header = "| variant | " + " | ".join(f"{g} @{b:g}" for b in budgets for g in groups) + " |"
    print(header)
    print("|" + "---|" * (1 + len(budgets) * len(groups)))
    for name, hits in rows:
        cells = []
        for budget in budgets:
            for group in groups:
                got = hits.get((budget, group), [])
                cells.append(f"{sum(got) / max(1, len(got)):.2f} ({len(got)})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
