#!/usr/bin/env python
"""What the 0.2 default ranking costs next to the draft's attention alone, in one process.

Why this script
---------------
The default adds MiniLM sentence relevance and the bridge round to the draft pass. Timings
taken in separate benchmark runs on a shared 2-core CPU are not comparable, so this times both
configurations on the same items in one process, alternating their order, and reports the
per-item ratio (default / attention alone), i.e. the cost in draft-pass units.

Usage::

    .venv/bin/python benchmarks/specpc_default_cost.py --tasks multihop,quoref --limit 8
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from transformers import AutoTokenizer

from specrag import SpecPC
from specrag.bench.tasks import build_items
from specrag.core.bundles import bundle_dir
from specrag.core.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="multihop,quoref")
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(str(bundle_dir("qwen2.5-coder-1.5b")))
    items = build_items(args.tasks.split(","), [args.length], args.limit, args.seed, tokenizer)
    draft = load_model("smollm2-135m", "cpu")
    configs = {
        "attention alone": SpecPC(draft, keep_ratio=0.1, progress=False, embedder=None, snap="word"),
        "0.2 default": SpecPC(draft, keep_ratio=0.1, progress=False),
    }
    for pc in configs.values():  # warm-up: weights, MiniLM, allocator
        pc.compress(list(items[0].documents), items[0].question)
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    for index, item in enumerate(items):
        order = list(configs) if index % 2 == 0 else list(reversed(configs))
        for name in order:
            started = time.perf_counter()
            configs[name].compress(list(item.documents), item.question)
            seconds[name].append(time.perf_counter() - started)
    ratios = [d / a for d, a in zip(seconds["0.2 default"], seconds["attention alone"], strict=True)]
    print(f"# {len(items)} items ({args.tasks}, {args.length} target tokens), smollm2-135m draft, keep 0.1,")
    print(f"# {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)")
    for name, values in seconds.items():
        print(f"{name}: median {statistics.median(values):.2f} s, range {min(values):.2f}-{max(values):.2f}")
    middle, low, high = statistics.median(ratios), min(ratios), max(ratios)
    print(f"ratio default / attention alone: median {middle:.2f}, range {low:.2f}-{high:.2f}")


if __name__ == "__main__":
    main()
