#!/usr/bin/env python
"""What a truncated-depth draft writes: the draft's first k layers, then its own head.

Why this script
---------------
SpecPC scores with a truncated draft (its first layers' attention), so "a truncated-depth
draft" is the obvious way to cut SpecKV's draft cost too. SpecKV, however, needs the draft to
*write* an answer whose tokens the target then reads, and a draft cut after k layers writes
through a final norm and head trained on layer 30's output. This prints, for each item of a
benchmark task, what the first ``k`` layers write (greedy, ``--new-tokens``), whether the
gold answer is in it, and the time, so the question can be settled by looking.

Usage::

    .venv/bin/python benchmarks/draft_early_exit.py --task niah_multikey --length 2048 --items 6 --depths 16,20,24,30
"""

from __future__ import annotations

import argparse
import time

import torch

from specrag import load_model, load_tokenizer
from specrag.bench.metrics import answer_contained
from specrag.bench.runner import DOCUMENT_TEMPLATE, INSTRUCTION
from specrag.bench.tasks import build_items


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--draft", default="smollm2-135m")
    parser.add_argument("--target", default="qwen2.5-coder-1.5b", help="Its tokenizer sets the items' lengths.")
    parser.add_argument("--task", default="niah_multikey")
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--depths", default="16,20,24,30")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    draft = load_model(args.draft)
    items = build_items([args.task], [args.length], args.items, 0, load_tokenizer(args.target))
    layers = draft.model.model.layers
    depths = [min(int(value), len(layers)) for value in args.depths.split(",")]
    hits = dict.fromkeys(depths, 0)
    print("| item | gold | " + " | ".join(f"first {k} layers" for k in depths) + " |")
    print("|---" * (2 + len(depths)) + "|")
    try:
        for item in items:
            user = DOCUMENT_TEMPLATE.format(context="\n\n".join(item.documents), question=item.question)
            messages = [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": user}]
            ids = draft.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"].to(draft.device)
            cells = []
            for depth in depths:
                draft.model.model.layers = layers[:depth]
                draft.model.config.num_hidden_layers = depth
                started = time.perf_counter()
                with torch.inference_mode():
                    out = draft.model.generate(ids, max_new_tokens=args.new_tokens, do_sample=False)
                text = draft.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
                hit = answer_contained(text, item.answers, require_all=item.require_all)
                hits[depth] += hit
                shown = " ".join(text.split())[:40].replace("|", "/").replace("`", "'")
                cells.append(f"{'**yes**' if hit else 'no'} `{shown}` {time.perf_counter() - started:.1f} s")
            print(f"| {item.item_id} | {item.answers[0]} | " + " | ".join(cells) + " |", flush=True)
    finally:
        draft.model.model.layers = layers
        draft.model.config.num_hidden_layers = len(layers)
    print("\ngold answer written: " + ", ".join(f"{k} layers {hits[k]}/{len(items)}" for k in depths))


if __name__ == "__main__":
    main()
