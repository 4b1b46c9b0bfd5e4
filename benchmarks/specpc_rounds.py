#!/usr/bin/env python
"""Does a second scoring round (the bridge) or calibrated attention beat the sentence filter?

Why this script
---------------
The sentence filter keeps what resembles the question; a multi-hop answer also needs a fact
that shares nothing with it. Two ideas from the SpecPC issue, measured before any default
changes, on a *development* seed (never the reported items):

- ``bridge``: a second draft pass whose question is prefixed by the round-1 best sentence and
  the two after it (where "He works for X" follows "Y is a violin maker"), so the draft's
  attention can follow the bridge entity to the second fact. The two rounds' keys are fused
  as percentile ranks. Here it costs a second full draft pass; with the documents' KV cached
  (the production issue) it costs only the new question tokens.
- ``calibrated``: the draft's attention divided by its attention under a content-free
  question (log ratio), removing what the draft attends to whatever is asked (sinks at
  document starts, frequent tokens).

Every variant is scored on target-tokenizer units and selected by the bench's own selector,
so rows compare with ``specrag bench`` rows. Scores are cached per item (resumable).

Usage::

    .venv/bin/python benchmarks/specpc_rounds.py --tasks multihop,vt --limit 24 --seed 1
"""

from __future__ import annotations

import argparse
import pickle
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from specrag import SpecPC
from specrag.bench.budget import Units, select, target_units, token_scores_to_units, unit_positions
from specrag.bench.methods_pc import SentenceSimilarity
from specrag.bench.metrics import answer_contained
from specrag.bench.report import sign_test
from specrag.bench.tasks import BenchItem, build_items
from specrag.core.bundles import bundle_dir
from specrag.core.embeddings import embed, sentence_relevance
from specrag.core.models import load_model
from specrag.core.sentences import sentence_spans
from specrag.core.specpc.ranking import fuse_ranks, snap_to_sentences

NULL_QUESTION = "What does the text say?"


def _bridge_text(document: str, scores: np.ndarray, starts: np.ndarray, follow: int = 2) -> str:
    """The best-scored sentence of ``document`` and the ``follow`` sentences after it."""
    spans = sentence_spans(document)
    if not spans or scores.size == 0:
        return ""
    best = int(np.argmax(scores))
    char = int(starts[best])
    index = max(i for i, (a, _) in enumerate(spans) if a <= char) if char >= spans[0][0] else 0
    chosen = spans[index : index + 1 + follow]
    return " ".join(document[a:b].strip() for a, b in chosen)


def _draft_scores(pc: SpecPC, item: BenchItem, question: str) -> tuple[list[np.ndarray], list[np.ndarray], Any]:
    scored = pc.score(list(item.documents), question)
    keys = pc.token_keys(scored)
    finals = [k[0] if k is not None else np.zeros(0) for k in keys]
    raws = [np.asarray(s, dtype=np.float64) for s in scored.scores]
    return finals, raws, scored


def compute(item: BenchItem, pcs: dict[str, SpecPC]) -> dict[str, Any]:
    """Per-token keys of every variant for one item (draft tokenizer positions)."""
    fused_final, raw, scored = _draft_scores(pcs["fused"], item, item.question)
    starts = [doc.token_starts if doc is not None else np.zeros(0, dtype=np.int64) for doc in scored.tokenized]
    # The round-1 best document decides the bridge: its best sentence and the two after it.
    best_doc = int(np.argmax([f.max() if f.size else -np.inf for f in fused_final]))
    bridge = _bridge_text(item.documents[best_doc], fused_final[best_doc], starts[best_doc])
    _, raw2, _ = _draft_scores(pcs["attention"], item, f"{bridge}\n{item.question}")
    _, raw_null, _ = _draft_scores(pcs["attention"], item, NULL_QUESTION)
    return {
        "starts": starts,
        "fused": fused_final,
        "raw": raw,
        "raw2": raw2,
        "raw_null": raw_null,
        "relevance": list(scored.relevance) if scored.relevance is not None else None,
        "bridge": bridge,
    }


def variants(cached: dict[str, Any], item: BenchItem) -> dict[str, list[np.ndarray]]:
    """Per-token primary keys of each variant (snapped to sentences)."""
    docs = item.documents
    starts = cached["starts"]

    def snap(values: list[np.ndarray]) -> list[np.ndarray]:
        return [snap_to_sentences(d, s, v) if v.size else v for d, s, v in zip(docs, starts, values)]

    def pooled(values: list[np.ndarray]) -> list[np.ndarray]:
        from specrag.core.specpc.ranking import centred_max_pool

        return [centred_max_pool(centred_max_pool(v, 32), 32).astype(np.float64) if v.size else v for v in values]

    present = [i for i, v in enumerate(cached["raw"]) if v.size]

    def fuse(signals: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
        out = [np.zeros(0) for _ in docs]
        fused = fuse_ranks([[signal[i] for i in present] for signal in signals], weights)
        for i, values in zip(present, fused):
            out[i] = values
        return out

    relevance = cached["relevance"]
    attention2 = pooled(cached["raw2"])
    eps = 1e-6
    calibrated = [np.log(r + eps) - np.log(n + eps) if r.size else r for r, n in zip(cached["raw"], cached["raw_null"])]

    def max_fuse(signals: list[list[np.ndarray]]) -> list[np.ndarray]:
        """Each signal as percentile ranks over the call's tokens; a token keeps its best:
        the top of every signal competes for the budget, so no signal's picks are drowned."""
        ranked = [fuse([signal], [1.0]) for signal in signals]
        return [np.maximum.reduce([r[i] for r in ranked]) if docs[i] and i in present else np.zeros(0)
                for i in range(len(docs))]  # fmt: skip

    attention1 = pooled(cached["raw"])
    # Round 2 without a second draft pass: the sentences' similarity to the bridge + question.
    bridged = sentence_relevance(embed, f"{cached['bridge']} {item.question}", list(docs), starts)
    result = {
        "max_fuse_bridge_rel": snap(max_fuse([attention1, relevance, bridged])),
        "fused_bridge_rel": snap(fuse([cached["fused"], bridged], [1.0, 1.0])),
        "max_fuse": snap(max_fuse([attention1, relevance])),
        "max_fuse_bridge": snap(max_fuse([attention1, relevance, attention2])),
        "max_fuse_calibrated": snap(max_fuse([pooled(calibrated), relevance])),
        "fused": cached["fused"],
        "bridge_w0.5": snap(fuse([cached["fused"], attention2], [1.0, 0.5])),
        "bridge_w1": snap(fuse([cached["fused"], attention2], [1.0, 1.0])),
        "calibrated": snap(fuse([pooled(calibrated), relevance], [1.0, 0.5])),
        "calibrated_bridge": snap(fuse([pooled(calibrated), relevance, attention2], [1.0, 0.5, 0.5])),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="multihop,vt,niah_multivalue")
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=1, help="1 = the development items; reports use seed 0.")
    parser.add_argument("--draft", default="smollm2-135m")
    parser.add_argument("--target-tokenizer", default="qwen2.5-coder-1.5b")
    parser.add_argument("--cache", type=Path, default=Path("rounds.pkl"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budgets", default="0.1,0.25")
    parser.add_argument("--eval-only", action="store_true", help="Tabulate the cached items only.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    budgets = [float(b) for b in args.budgets.split(",")]
    tokenizer = AutoTokenizer.from_pretrained(bundle_dir(args.target_tokenizer))
    items = build_items(args.tasks.split(","), [args.length], args.limit, args.seed, tokenizer)
    cache: dict[str, Any] = pickle.loads(args.cache.read_bytes()) if args.cache.exists() else {}
    draft = load_model(args.draft)
    pcs = {
        "fused": SpecPC(draft, progress=False, embedder=embed, snap="sentence"),
        "attention": SpecPC(draft, progress=False, snap="sentence"),
    }
    sentence = SentenceSimilarity(embed)
    if args.eval_only:
        items = [item for item in items if item.item_id in cache]
    for item in tqdm(items, desc="items"):
        if item.item_id not in cache:
            cache[item.item_id] = compute(item, pcs)
            args.cache.write_bytes(pickle.dumps(cache))
    hits: dict[tuple[str, str, float], list[bool]] = {}
    for item in items:
        units: Units = target_units(tokenizer, item.documents)
        cached = cache[item.item_id]
        rows = {"sentence": sentence.score(item, units)}
        for name, values in variants(cached, item).items():
            keys = [
                token_scores_to_units(units, i, cached["starts"][i], v)
                if v.size
                else np.zeros(units.tokens[i].num_units)
                for i, v in enumerate(values)
            ]
            rows[name] = [keys, unit_positions(units)]
        evidence = item.evidence or item.answers
        need_all = bool(item.evidence) or item.require_all
        for name, keys in rows.items():
            for budget in budgets:
                text = "\n\n".join(select(units, keys, budget).texts)
                hits.setdefault((item.task, name, budget), []).append(
                    answer_contained(text, evidence, require_all=need_all)
                )
    print(f"seed {args.seed}, N={len(items)} items, {platform.processor() or platform.machine()}")
    print("| task | method | " + " | ".join(f"keep {b}" for b in budgets) + " | vs sentence at first budget |")
    print("|---|---|" + "---|" * (len(budgets) + 1))
    for task in args.tasks.split(","):
        names = sorted({name for t, name, _ in hits if t == task})
        for name in names:
            cells = [f"{np.mean(hits[(task, name, b)]):.2f}" for b in budgets]
            mine, ref = hits[(task, name, budgets[0])], hits[(task, "sentence", budgets[0])]
            wins = sum(a and not b for a, b in zip(mine, ref))
            losses = sum(b and not a for a, b in zip(mine, ref))
            print(
                f"| {task} | {name} | " + " | ".join(cells) + f" | +{wins}/-{losses} p={sign_test(wins, losses):.3f} |"
            )


if __name__ == "__main__":
    main()
