#!/usr/bin/env python
"""Which bench items a draft can read whole: their indices, for ``specrag bench --items``.

Why this script
---------------
SpecKV refuses a prompt its draft cannot read plus the lookahead, rather than cut it (a cut
prompt would score the cache from a draft that never saw the end of the documents). Quoref
items have a fixed number of distractor passages per length, so their prompts vary: at
``--lengths 8192`` they run from about 6.6k to 9.9k target tokens, and the 135M SmolLM2
draft reads at most 8192 positions. A run of every row on those items would stop at the
first one the draft cannot read. This picks the items every row can run, by the same rule
the engine applies (the draft's own tokens of the prompt plus the lookahead, within its
positions), so that the full cache, window-only eviction, SpecKV and kvpress's presses are
compared on the same items. The selection depends on the prompts' lengths only, never on
any answer. It prints how many items it dropped, then the comma list on the last line.
``--refused`` prints the other indices instead: the items to run with a draft that has a
longer window, so that the two runs together cover every item once.

Usage::

    .venv/bin/python benchmarks/draft_fits.py --tasks quoref --lengths 8192 --limit 40 \\
        --draft smollm2-135m
    .venv/bin/python benchmarks/draft_fits.py --tasks quoref --lengths 8192 --limit 40 \\
        --draft smollm2-135m --refused
"""

from __future__ import annotations

import argparse
import sys

from specrag import load_model
from specrag.bench.runner import answer_tokens, kv_prompt_messages
from specrag.bench.tasks import build_items
from specrag.core.models import load_tokenizer
from specrag.core.speckv.decoding import render_prompt
from specrag.core.speckv.policies.speckv import DraftAttention


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    parser.add_argument("--tasks", default="quoref")
    parser.add_argument("--lengths", default="8192")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", default="qwen2.5-coder-1.5b")
    parser.add_argument("--draft", default="smollm2-135m")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument(
        "--refused", action="store_true", help="Print the indices the draft cannot read instead of those it can."
    )
    args = parser.parse_args()

    target_tokenizer = load_tokenizer(args.target)
    draft = load_model(args.draft, "cpu")
    limit = draft.max_positions
    if limit is None:
        print(f"draft {args.draft!r} states no position limit: every item fits", file=sys.stderr)
    policy = DraftAttention()
    tasks = [task.strip() for task in args.tasks.split(",")]
    lengths = [int(length) for length in args.lengths.split(",")]
    items = build_items(tasks, lengths, args.limit, args.seed, target_tokenizer)
    fits: set[int] = set(range(args.limit))
    for item in items:
        index = int(item.item_id.rsplit("-", 1)[1])
        needed = len(render_prompt(draft.tokenizer, kv_prompt_messages(item), f"draft {args.draft!r}"))
        needed += policy.lookahead_tokens(answer_tokens(item, args.max_new_tokens))
        if limit is not None and needed > limit:
            fits.discard(index)  # one task or length the draft cannot read drops the index for all
            print(f"{item.item_id}: the draft needs {needed} positions of its {limit}", file=sys.stderr)
    print(f"{len(fits)} of {args.limit} item indices fit every task and length", file=sys.stderr)
    chosen = set(range(args.limit)) - fits if args.refused else fits
    print(",".join(str(index) for index in sorted(chosen)))
    return 0 if chosen else 1


if __name__ == "__main__":
    raise SystemExit(main())
