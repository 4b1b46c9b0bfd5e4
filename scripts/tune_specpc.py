#!/usr/bin/env python
"""Sweep SpecPC settings on Quoref multi-document items and report answer retention.

Why this metric
---------------
A compressor cannot answer; the target can only answer if the answer span survives in the
compressed text. So each setting is scored by the share of items whose gold answer is
contained in the kept text, at two budgets (keep 10 % and 25 % of the document tokens),
with 95 % Wilson intervals and paired wins/losses against the current defaults (the same
items are used for every row, so paired counts are more telling than overlapping
intervals). Two trivial baselines give the numbers a floor: truncation (keep the first
tokens) and a random contiguous span.

Why it is cheap
---------------
One draft pass per item records, per layer, the attention of every window size and of
every lookahead step; ``start_layer``, ``window`` and ``lookahead`` are then just different
reductions of that record, and ``pool_kernel``, ``neighbourhood`` and the budget only change
selection. The record is checked against :meth:`SpecPC._score` on the first items, so the
reuse cannot drift from what ``SpecPC.compress`` does.

Usage::

    .venv/bin/python scripts/tune_specpc.py --n 100 --holdout 100 --out docs/tuning.md
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from specrag.bench.metrics import answer_contained
from specrag.bench.quoref import MultiDocItem, load_quoref, multi_doc_items
from specrag.core.attention import AttentionCapture, capture_attention, window_attention_scores
from specrag.core.budget import resolve_budget
from specrag.core.models import LoadedModel, load_model
from specrag.core.segmentation import DocumentTokens, tokenize_document
from specrag.core.specpc import ScoredContext, SpecPC

RATIOS = (0.1, 0.25)


# ---------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """One point of the sweep; ``label`` names the axis it varies (for the table)."""

    window: int = 64
    lookahead: int = 1
    start_layer: int = 10
    pool_kernel: int = 32
    neighbourhood: int = 32
    suppress_eos: bool = False  # diagnostic only: SpecPC stops lookahead at EOS
    label: str = "default"

    def describe(self) -> str:
        eos = ", no EOS stop" if self.suppress_eos else ""
        return (
            f"w={self.window} la={self.lookahead} sl={self.start_layer} "
            f"pk={self.pool_kernel} nb={self.neighbourhood}{eos}"
        )


def axis_settings(default: Setting, num_layers: int) -> list[Setting]:
    """The default plus one-axis-at-a-time variations (the brief's sweep, not a grid)."""
    axes: dict[str, Iterable[int]] = {
        "start_layer": [s for s in (0, 5, 10, 15, 20, 25) if s < num_layers],
        "window": (16, 64),
        "pool_kernel": (1, 8, 32),
        "neighbourhood": (1, 8, 32),
        "lookahead": (1, 4),
    }
    settings = [default]
    for axis, values in axes.items():
        for value in values:
            if getattr(default, axis) != value:
                settings.append(replace(default, **{axis: value}, label=f"{axis}={value}"))
    # Diagnostic: what lookahead would give if the draft were not allowed to stop at EOS.
    settings.append(replace(default, lookahead=4, suppress_eos=True, label="lookahead=4*"))
    return settings


# ---------------------------------------------------------------------------- draft record
class RecordingCapture(AttentionCapture):
    """Keeps per-layer scores for several window sizes and each lookahead step separately.

    SpecPC's own capture folds everything into one max; keeping the parts lets every
    (start_layer, window, lookahead) combination be derived from a single draft pass.
    """

    def __init__(self, num_keys: int, windows: Sequence[int], num_layers: int):
        super().__init__(num_keys=num_keys, window=max(windows), start_layer=0)
        self.windows = tuple(windows)
        self.prefill = {w: np.zeros((num_layers, num_keys), np.float32) for w in self.windows}
        self.steps: list[np.ndarray] = []
        self._num_layers = num_layers
        self._last_layer = num_layers

    def observe(self, layer_idx: int, query: torch.Tensor, key: torch.Tensor, scaling: float | None) -> None:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        q_len = query.shape[2]
        if q_len == 1:  # a lookahead step; layers restart at 0 on each new token
            if layer_idx <= self._last_layer:
                self.steps.append(np.zeros((self._num_layers, self.num_keys), np.float32))
            self._last_layer = layer_idx
            ones = torch.ones(1, device=query.device)
            self.steps[-1][layer_idx] = self._scores(query, key, scale, ones)
            return
        for window in self.windows:
            n = min(window, q_len)
            weights = torch.linspace(0.0, 1.0, n, device=query.device) if n > 1 else torch.ones(1)
            self.prefill[window][layer_idx] = self._scores(query[:, :, q_len - n :], key, scale, weights)

    def _scores(self, query: torch.Tensor, key: torch.Tensor, scale: float, weights: torch.Tensor) -> np.ndarray:
        scores = window_attention_scores(query, key, scaling=scale, query_weights=weights, chunk=self.query_chunk)
        return scores[0, : self.num_keys].float().cpu().numpy()


@dataclass
class ItemRecord:
    """Tokenized documents plus every per-layer score needed to derive any setting."""

    item: MultiDocItem
    tokenized: list[DocumentTokens]
    prefill: dict[int, np.ndarray]  # window -> (layers, total tokens)
    steps: np.ndarray  # (lookahead steps, layers, total tokens), generated without EOS stop
    eos_stop: int  # lookahead steps SpecPC itself takes before its draft emits EOS
    question_tokens: int

    @property
    def total(self) -> int:
        return sum(doc.num_tokens for doc in self.tokenized)


@torch.inference_mode()
def _run_piece(pc: SpecPC, ids: list[int], capture: RecordingCapture, lookahead: int) -> int:
    """The draft calls of :meth:`SpecPC._score_piece`, with our capture active instead.

    Generation never stops at EOS (the next-best token is taken instead); the number of
    steps SpecPC would have taken is returned. Up to that step both generate the same
    tokens, so SpecPC's lookahead is a prefix of the recorded one.
    """
    model = pc.draft.model
    input_ids = torch.tensor([ids], dtype=torch.long, device=pc.draft.device)
    eos = pc.draft.tokenizer.eos_token_id
    stop = lookahead - 1
    with capture_attention(capture):
        output = model(input_ids, use_cache=True, logits_to_keep=1)
        for step in range(lookahead - 1):
            logits = output.logits[:, -1].clone()
            if eos is not None:
                if int(logits.argmax(dim=-1)) == eos:
                    stop = min(stop, step)
                logits[:, eos] = float("-inf")
            token = logits.argmax(dim=-1, keepdim=True)
            output = model(token, past_key_values=output.past_key_values, use_cache=True, logits_to_keep=1)
    return stop


def record_item(pc: SpecPC, item: MultiDocItem, windows: Sequence[int], lookahead: int) -> ItemRecord:
    """Run the draft once over ``item`` and keep per-layer, per-window, per-step scores."""
    tokenized = [tokenize_document(pc.draft.tokenizer, text, pc.settings.max_unit_tokens) for text in item.documents]
    total = sum(doc.num_tokens for doc in tokenized)
    layers = pc.draft.num_layers
    prefill = {w: np.zeros((layers, total), np.float32) for w in windows}
    steps = np.zeros((lookahead - 1, layers, total), np.float32)
    pieces = pc._layout_pieces(list(tokenized), item.question, None)
    if len(pieces) != 1:  # one EOS stop per item keeps derive_scores simple
        raise ValueError(f"item needs {len(pieces)} draft passes; use fewer distractors")
    piece = pieces[0]
    capped = [min(w, piece.question_tokens) for w in windows]
    capture = RecordingCapture(len(piece.ids), sorted(set(capped)), layers)
    stop = _run_piece(pc, piece.ids, capture, lookahead)
    for window, cap in zip(windows, capped):
        prefill[window][:, piece.flat_positions] = capture.prefill[cap][:, piece.piece_positions]
    for step, scores in enumerate(capture.steps):
        steps[step][:, piece.flat_positions] = scores[:, piece.piece_positions]
    return ItemRecord(item, tokenized, prefill, steps, stop, piece.question_tokens)


def derive_scores(record: ItemRecord, setting: Setting) -> np.ndarray:
    """Flat token scores SpecPC would compute for ``setting`` (max over layers >= start)."""
    scores = record.prefill[setting.window][setting.start_layer :].max(axis=0)
    taken = setting.lookahead - 1 if setting.suppress_eos else min(setting.lookahead - 1, record.eos_stop)
    used = record.steps[:taken, setting.start_layer :]
    if used.size:
        scores = np.maximum(scores, used.max(axis=(0, 1)))
    return scores


def split(flat: np.ndarray, tokenized: Sequence[DocumentTokens]) -> list[np.ndarray]:
    bounds = np.cumsum([0] + [doc.num_tokens for doc in tokenized])
    return [flat[bounds[i] : bounds[i + 1]] for i in range(len(tokenized))]


# ---------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class Outcome:
    contained: bool
    kept_fraction: float
    gold_share: float  # share of the kept tokens that come from the gold passage


def evaluate(selector: SpecPC, record: ItemRecord, flat: np.ndarray, ratio: float) -> Outcome:
    """Select under ``selector``'s pool/neighbourhood settings and check the answer."""
    tokenized = record.tokenized
    doc_scores = split(flat, tokenized)
    scored = ScoredContext(
        documents=tuple(record.item.documents),
        question=record.item.question,
        instruction=None,
        tokenized=tuple(tokenized),
        scores=tuple(doc_scores),
        pieces=1,
        seconds=0.0,
    )
    documents = selector.select(scored, keep_ratio=ratio).documents
    kept_tokens = sum(d.kept_tokens for d in documents)
    gold = documents[record.item.gold_index].kept_tokens
    return Outcome(
        contained=answer_contained("\n\n".join(d.text for d in documents), record.item.answers),
        kept_fraction=kept_tokens / record.total,
        gold_share=gold / kept_tokens if kept_tokens else 0.0,
    )


def truncation_scores(total: int) -> np.ndarray:
    """Strictly decreasing scores: with pool and neighbourhood 1, selection = the first tokens."""
    return np.linspace(1.0, 0.5, total, dtype=np.float32)


def contiguous_scores(total: int, ratio: float, rng: random.Random) -> np.ndarray:
    """A random span of the budget's length scores 1, the rest decreasing below it."""
    length = resolve_budget(total, ratio, None)
    start = rng.randrange(0, total - length + 1)
    scores = truncation_scores(total) * 0.5
    scores[start : start + length] = 1.0
    return scores


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial proportion (sane at 0 and n, unlike Wald)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Row:
    name: str
    outcomes: dict[float, list[Outcome]]

    def hits(self, ratio: float) -> list[bool]:
        return [o.contained for o in self.outcomes[ratio]]


def run_rows(
    records: Sequence[ItemRecord],
    settings: Sequence[Setting],
    draft: LoadedModel,
    seed: int,
) -> list[Row]:
    """Evaluate each setting and the two baselines on the recorded items."""
    selectors: dict[tuple[int, int], SpecPC] = {}

    def selector(pool: int, neighbourhood: int) -> SpecPC:
        key = (pool, neighbourhood)
        if key not in selectors:
            selectors[key] = SpecPC(draft, pool_kernel=pool, neighbourhood=neighbourhood, progress=False)
        return selectors[key]

    rows = []
    for setting in settings:
        chosen = selector(setting.pool_kernel, setting.neighbourhood)
        outcomes = {r: [evaluate(chosen, rec, derive_scores(rec, setting), r) for rec in records] for r in RATIOS}
        rows.append(Row(f"{setting.label} ({setting.describe()})", outcomes))
    plain = selector(1, 1)
    rows.append(Row("baseline: truncation (first tokens)", {
        r: [evaluate(plain, rec, truncation_scores(rec.total), r) for rec in records] for r in RATIOS
    }))  # fmt: skip
    rng = random.Random(seed)
    rows.append(Row("baseline: random contiguous span", {
        r: [evaluate(plain, rec, contiguous_scores(rec.total, r, rng), r) for rec in records] for r in RATIOS
    }))  # fmt: skip
    return rows


# ---------------------------------------------------------------------------- output
def _rate(hits: list[bool]) -> str:
    k, n = sum(hits), len(hits)
    low, high = wilson(k, n)
    return f"{k / n:.2f} [{low:.2f}, {high:.2f}]"


def _paired(hits: list[bool], reference: list[bool]) -> str:
    gained = sum(h and not r for h, r in zip(hits, reference))
    lost = sum(r and not h for h, r in zip(hits, reference))
    return f"+{gained}/-{lost}"


def table(rows: Sequence[Row], reference: Row) -> str:
    """Markdown table: rate [95 % CI], paired +gained/-lost vs the reference, kept fraction."""
    header = ["setting"]
    for r in RATIOS:
        header += [f"contained @{r}", f"vs default @{r}", f"kept @{r}", f"gold share @{r}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.name]
        for r in RATIOS:
            outcomes = row.outcomes[r]
            cells += [
                _rate(row.hits(r)),
                "—" if row is reference else _paired(row.hits(r), reference.hits(r)),
                f"{np.mean([o.kept_fraction for o in outcomes]):.3f}",
                f"{np.mean([o.gold_share for o in outcomes]):.2f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def layer_curve(records: Sequence[ItemRecord], default: Setting, draft: LoadedModel, num_layers: int) -> str:
    """Contained rate for every start layer (selection at the default), as a compact table."""
    chosen = SpecPC(draft, pool_kernel=default.pool_kernel, neighbourhood=default.neighbourhood, progress=False)
    lines = ["| start_layer | " + " | ".join(f"@{r}" for r in RATIOS) + " |", "|---|" + "---|" * len(RATIOS)]
    for start in range(num_layers):
        setting = replace(default, start_layer=start)
        rates = [
            np.mean([evaluate(chosen, rec, derive_scores(rec, setting), r).contained for rec in records])
            for r in RATIOS
        ]
        lines.append(f"| {start} | " + " | ".join(f"{v:.2f}" for v in rates) + " |")
    return "\n".join(lines)


def best_per_axis(rows: Sequence[Row], settings: Sequence[Setting], default: Setting) -> Setting:
    """Combine, per axis, the value with the most hits summed over both budgets (ties: default)."""
    score = {s: sum(sum(row.hits(r)) for r in RATIOS) for s, row in zip(settings, rows)}
    best = default
    for axis in ("start_layer", "window", "pool_kernel", "neighbourhood", "lookahead"):
        candidates = [s for s in settings if s.label.startswith(axis + "=") and not s.suppress_eos]
        candidates.append(default)
        winner = max(candidates, key=lambda s: (score[s], s is default))
        best = replace(best, **{axis: getattr(winner, axis)})
    return replace(best, label="per-axis best")


# ---------------------------------------------------------------------------- main
def check_against_specpc(draft: LoadedModel, record: ItemRecord, setting: Setting) -> float:
    """Largest difference between our derived scores and SpecPC's own, for one setting."""
    pc = SpecPC(
        draft,
        window=setting.window,
        lookahead=setting.lookahead,
        start_layer=setting.start_layer,
        progress=False,
    )
    total = record.total
    own, _ = pc._score(list(record.tokenized), record.item.question, None, budget=total, total=total)
    return float(np.abs(np.concatenate(own) - derive_scores(record, setting)).max())


def record_all(
    pc: SpecPC, items: Sequence[MultiDocItem], windows: Sequence[int], lookahead: int, tag: str
) -> list[ItemRecord]:
    records, started = [], time.perf_counter()
    for index, item in enumerate(items, 1):
        records.append(record_item(pc, item, windows, lookahead))
        if index % 10 == 0 or index == len(items):
            print(f"  {tag}: {index}/{len(items)} items, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return records


def summary(records: Sequence[ItemRecord], args: argparse.Namespace, lookahead: int, drift: float) -> str:
    """One paragraph describing the items, the window cap, EOS stops and the reuse check."""
    lengths = [rec.total for rec in records]
    question_tokens = [rec.question_tokens for rec in records]
    stops = [rec.eos_stop for rec in records]
    return (
        f"N = {len(records)} Quoref items (seed {args.seed}), each the gold passage + {args.distractors} "
        f"distractors; draft tokens per item: mean {np.mean(lengths):.0f}, min {min(lengths)}, "
        f"max {max(lengths)}; question suffix tokens (caps the window): mean "
        f"{np.mean(question_tokens):.1f}, max {max(question_tokens)}. Lookahead steps SpecPC "
        f"takes at lookahead={lookahead} before the draft emits EOS: mean {np.mean(stops):.2f}, "
        f"items with none {sum(s == 0 for s in stops)}/{len(stops)} (row `lookahead={lookahead}*` "
        "forbids EOS instead). "
        f"Max |recorded - SpecPC._score| on checked items: {drift:.1e}."
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="tuning items")
    parser.add_argument("--holdout", type=int, default=0, help="fresh items to re-check default vs per-axis best")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distractors", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared machines: keep it low)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", type=Path, help="also write the report (markdown) here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    draft = load_model("smollm2-135m", device="cpu", dtype=args.dtype)
    layers = draft.num_layers
    default = Setting(start_layer=SpecPC(draft, progress=False)._start_layer)
    settings = axis_settings(default, layers)
    windows = sorted({s.window for s in settings})
    lookahead = max(s.lookahead for s in settings)
    recorder = SpecPC(draft, window=max(windows), lookahead=lookahead, progress=False)

    examples = load_quoref(progress=False)
    items = multi_doc_items(args.n, seed=args.seed, distractors=args.distractors, examples=examples)
    records = record_all(recorder, items, windows, lookahead, "tune")
    drift = max(
        check_against_specpc(draft, records[i], s)
        for i in range(min(2, len(records)))
        for s in (default, replace(default, lookahead=lookahead, window=min(windows), start_layer=0))
    )
    assert drift < 1e-5, f"recorded scores differ from SpecPC._score by {drift}"

    rows = run_rows(records, settings, draft, args.seed)
    combined = best_per_axis(rows[: len(settings)], settings, default)
    rows[len(settings) : len(settings)] = run_rows(records, [combined], draft, args.seed)[:1]
    reference = rows[0]
    report = [
        summary(records, args, lookahead, drift),
        "",
        table(rows, reference),
        "",
        "Contained rate by start layer (other settings at the default):",
        "",
        layer_curve(records, default, draft, layers),
    ]
    if args.holdout and replace(combined, label=default.label) == default:
        report += ["", "Held-out check skipped: the per-axis best is the default."]
    elif args.holdout:
        used = {item.question for item in items}
        fresh = [e for e in examples if e.question not in used]
        held_items = multi_doc_items(args.holdout, seed=args.seed + 1, distractors=args.distractors, examples=fresh)
        held = record_all(recorder, held_items, windows, lookahead, "holdout")
        held_rows = run_rows(held, [default, combined], draft, args.seed + 1)
        report += [
            "",
            f"Held-out check: N = {len(held)} different questions (seed {args.seed + 1}):",
            "",
            table(held_rows, held_rows[0]),
        ]
    elapsed = time.perf_counter() - started
    machine = platform.processor() or platform.machine()
    report += [
        "",
        f"Wall time: {elapsed / 60:.1f} min ({torch.get_num_threads()} torch thread(s), {draft.dtype}, {machine}).",
    ]
    text = "\n".join(report)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
