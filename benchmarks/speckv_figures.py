"""SpecKV figures: cache size, decode speed and accuracy against full cache and window-only.

For each item (a ~4k-token multi-document RAG prompt), three generations of the same target
through :class:`specrag.SpecKV`'s public API:

``full``    no eviction (budget above the prompt length).
``speckv``  draft answer as lookahead, budget = ``--budget-ratio`` of the prompt.
``window``  window-only eviction (SnapKV-style: no draft), same budget.

and per method: answer contained in the output, exact match of the output's first line,
KV bytes held at the end, decode tokens/s, draft and prefill seconds. Items come from
``specrag.bench.needle.single_needle`` (a magic number hidden in filler) and
``specrag.bench.quoref.multi_doc_items`` (a Quoref question, its gold passage and
distractors), interleaved. The run stops starting new items after ``--minutes``.

Usage::

    .venv/bin/python benchmarks/speckv_figures.py --minutes 30 --out speckv.jsonl
    .venv/bin/python benchmarks/speckv_figures.py --tiny --n 2   # smoke test, seconds
    .venv/bin/python benchmarks/speckv_figures.py --sweep        # lookahead sweep, minutes

The development machines are shared CPUs: ``--threads 1`` (default) was measured faster
than 2 there, because two torch threads on two busy cores wait on each other.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from specrag import LoadedModel, SpecKV, SpecKVResult, build_tiny_model, load_model
from specrag.bench.metrics import answer_contained, exact_match
from specrag.bench.needle import single_needle
from specrag.bench.quoref import multi_doc_items

METHODS = ("full", "speckv", "window")
NO_EVICTION = 1 << 30
TEMPLATE = (
    "Answer the question with a short phrase taken from the documents. Reply with the "
    "answer only.\n\nDocuments:\n\n{context}\n\nQuestion: {question}"
)


@dataclass(frozen=True)
class Item:
    """One question over several documents, with accepted answers."""

    task: str
    question: str
    documents: tuple[str, ...]
    answers: tuple[str, ...]


def needle_items(n: int, tokenizer: object, prompt_tokens: int) -> list[Item]:
    depths = [0.1, 0.5, 0.9, 0.3, 0.7]
    items = []
    for index in range(n):
        sample = single_needle(prompt_tokens, tokenizer, seed=index, depth=depths[index % 5])  # type: ignore[arg-type]
        items.append(Item("needle", sample.question, sample.documents, (sample.answer,)))
    return items


def quoref_items(n: int, tokenizer: object, prompt_tokens: int) -> list[Item]:
    """Quoref questions with enough distractor passages to reach about ``prompt_tokens``."""
    items = []
    for source in multi_doc_items(n, seed=0, distractors=24):
        documents: list[str] = []
        total = 0
        gold = source.documents[source.gold_index]
        others = [doc for index, doc in enumerate(source.documents) if index != source.gold_index]
        gold_tokens = len(tokenizer.encode(gold, add_special_tokens=False))  # type: ignore[attr-defined]
        for doc in others:
            if total + gold_tokens >= prompt_tokens:
                break
            documents.append(doc)
            total += len(tokenizer.encode(doc, add_special_tokens=False))  # type: ignore[attr-defined]
        documents.insert(min(source.gold_index, len(documents)), gold)
        items.append(Item("quoref", source.question, tuple(documents), source.answers))
    return items


def interleave(*groups: list[Item]) -> list[Item]:
    out = []
    for index in range(max(len(group) for group in groups)):
        out.extend(group[index] for group in groups if index < len(group))
    return out


def engine_for(method: str, target: LoadedModel, draft: LoadedModel, budget: int) -> SpecKV:
    settings = {"document_template": TEMPLATE}
    if method == "full":
        return SpecKV(target, None, budget=NO_EVICTION, **settings)
    if method == "window":
        return SpecKV(target, None, budget=budget, **settings)
    return SpecKV(target, draft, budget=budget, **settings)


def run_item(
    item: Item, target: LoadedModel, draft: LoadedModel, ratio: float, max_new_tokens: int
) -> dict[str, object]:
    """The three methods on one item; the full-cache run fixes the prompt length and budget."""
    messages = [{"role": "user", "content": item.question}]
    row: dict[str, object] = {"task": item.task, "question": item.question}
    row["answers"] = list(item.answers)
    budget = NO_EVICTION
    for method in METHODS:  # "full" first: its prompt length sets the others' budget
        engine = engine_for(method, target, draft, budget)
        result = engine.generate(messages, documents=list(item.documents), max_new_tokens=max_new_tokens)
        if method == "full":
            row["prompt_tokens"] = result.prompt_tokens
            budget = max(32, round(ratio * result.prompt_tokens))
            row["budget"] = budget
        row[method] = _figures(result, item)
    return row


def _figures(result: SpecKVResult, item: Item) -> dict[str, object]:
    first_line = result.text.strip().split("\n")[0]
    return {
        "text": result.text,
        "contained": answer_contained(result.text, item.answers),
        "exact": exact_match(first_line, item.answers),
        "kv_bytes": result.kv_bytes,
        "full_kv_bytes": result.full_kv_bytes,
        "prefill_entries": max(result.prefill_cache_entries),
        "decode_tokens_per_second": result.decode_tokens_per_second,
        "draft_seconds": result.draft_seconds,
        "prefill_seconds": result.prefill_seconds,
        "decode_seconds": result.decode_seconds,
        "output_tokens": result.output_tokens,
        "lookahead_tokens": result.lookahead_tokens,
    }


def summarise(rows: list[dict[str, object]]) -> str:
    """A markdown table: one line per method, means over items."""
    header = "| method | answer contained | exact match | KV MiB at end | decode tok/s | draft s |"
    lines = [header + " prefill s |", "|---|---|---|---|---|---|---|"]
    for method in METHODS:
        figures = [row[method] for row in rows]  # type: ignore[index]

        def mean(key: str, figures: list = figures) -> float:  # type: ignore[type-arg]
            return statistics.fmean(float(f[key]) for f in figures)

        contained = sum(bool(f["contained"]) for f in figures)
        exact = sum(float(f["exact"]) for f in figures)
        lines.append(
            f"| {method} | {contained}/{len(figures)} | {exact:.0f}/{len(figures)} | "
            f"{mean('kv_bytes') / 2**20:.1f} | {mean('decode_tokens_per_second'):.2f} | "
            f"{mean('draft_seconds'):.2f} | {mean('prefill_seconds'):.2f} |"
        )
    return "\n".join(lines)


def lookahead_sweep(args: argparse.Namespace) -> None:
    """Needle found or lost, per lookahead, at a quarter budget (smollm2-135m by default).

    Short prompts (``--sweep-tokens``) keep this to minutes, so the question it answers —
    how many draft tokens does the lookahead need? — can be asked of several seeds.
    """
    model = load_model(args.sweep_model)
    lookaheads = [int(value) for value in args.sweep_lookaheads.split(",")]
    print("| seed | prompt tokens | budget | full | " + " | ".join(f"lookahead {n}" for n in lookaheads) + " |")
    print("|---" * (4 + len(lookaheads)) + "|")
    for seed in range(args.sweep_seeds):
        sample = single_needle(args.sweep_tokens, model.tokenizer, seed=seed + 1, depth=0.5)
        question = f"{sample.question} Answer with the number."
        messages = [{"role": "user", "content": "\n\n".join(sample.documents) + "\n\n" + question}]
        full = SpecKV(model, model, budget=NO_EVICTION).generate(messages, max_new_tokens=20)
        budget = max(32, round(args.budget_ratio * full.prompt_tokens))
        found = [
            sample.answer in SpecKV(model, model, budget=budget, lookahead=n).generate(messages, max_new_tokens=20).text
            for n in lookaheads
        ]
        cells = " | ".join("found" if hit else "lost" for hit in found)
        hit = "found" if sample.answer in full.text else "lost"
        print(f"| {seed + 1} | {full.prompt_tokens} | {budget} | {hit} | {cells} |", flush=True)


def machine() -> dict[str, object]:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "python": sys.version.split()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="qwen2.5-coder-1.5b")
    parser.add_argument("--draft", default="qwen2.5-coder-0.5b")
    parser.add_argument("--tiny", action="store_true", help="tiny random models (smoke test)")
    parser.add_argument("--n", type=int, default=20, help="items per task at most")
    parser.add_argument("--tasks", default="needle,quoref")
    parser.add_argument("--prompt-tokens", type=int, default=4000)
    parser.add_argument("--budget-ratio", type=float, default=0.25)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--minutes", type=float, default=30.0, help="start no item after this")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="JSON lines, one per item")
    parser.add_argument("--sweep", action="store_true", help="lookahead sweep instead")
    parser.add_argument("--sweep-model", default="smollm2-135m", help="target and draft")
    parser.add_argument("--sweep-tokens", type=int, default=300)
    parser.add_argument("--sweep-seeds", type=int, default=3)
    parser.add_argument("--sweep-lookaheads", default="0,8,12,16,20,24")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.sweep:
        print(json.dumps({"machine": machine()}))
        lookahead_sweep(args)
        return
    if args.tiny:
        target, draft = build_tiny_model("qwen2"), build_tiny_model("qwen2", num_hidden_layers=2)
    else:
        target, draft = load_model(args.target), load_model(args.draft)
    tasks = args.tasks.split(",")
    groups = []
    if "needle" in tasks:
        groups.append(needle_items(args.n, target.tokenizer, args.prompt_tokens))
    if "quoref" in tasks:
        groups.append(quoref_items(args.n, target.tokenizer, args.prompt_tokens))
    items = interleave(*groups)

    info = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    print(json.dumps(info), flush=True)
    deadline = time.monotonic() + 60 * args.minutes
    rows = []
    out = args.out.open("w", encoding="utf-8") if args.out else None
    try:
        for item in items:
            if time.monotonic() > deadline:
                break
            started = time.perf_counter()
            row = run_item(item, target, draft, args.budget_ratio, args.max_new_tokens)
            row["seconds"] = time.perf_counter() - started
            rows.append(row)
            if out:
                out.write(json.dumps(row) + "\n")
                out.flush()
            brief = {m: row[m]["contained"] for m in METHODS}  # type: ignore[index]
            print(f"[{len(rows)}] {item.task} {row['prompt_tokens']} tokens {brief}", flush=True)
    finally:
        if out:
            out.close()
    if rows:
        print(f"\nN = {len(rows)} items ({', '.join(sorted({str(r['task']) for r in rows}))})")
        print(summarise(rows))
        print(json.dumps({"load_average_end": os.getloadavg()}))


if __name__ == "__main__":
    main()
