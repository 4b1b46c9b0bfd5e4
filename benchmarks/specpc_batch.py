#!/usr/bin/env python
"""Requests per second of ``SpecPC.compress_batch`` at several batch sizes, and agreement.

Why this script
---------------
A server compresses many requests at once; ``compress_batch`` runs their draft passes as
left-padded micro-batches. This times the same requests (bench multi-hop items, questions
and documents as a RAG pipeline sends them) at batch sizes 1 / 4 / 8 / 16 with the real
draft and the default settings, and checks that every batched result keeps exactly the text
batch size 1 keeps (on the real draft, in its own dtype, padding changes the summation order
of the attention kernels, so agreement is measured rather than assumed). One warm-up batch
runs first; each size is timed ``--repeats`` times and the median is reported.

Usage::

    .venv/bin/python benchmarks/specpc_batch.py --requests 16 --length 1024
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from specrag import CompressRequest, SpecPC
from specrag.bench.tasks import build_items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--length", type=int, default=1024, help="Context tokens per request (draft tokenizer).")
    parser.add_argument("--sizes", default="1,4,8,16")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--draft", default="smollm2-135m")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--task", default="multihop", help="Bench task of the requests (RULER ones reach any length).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pc = SpecPC(args.draft, device=args.device, progress=False)
    items = build_items([args.task], [args.length], args.requests, args.seed, pc.draft.tokenizer)
    requests = [CompressRequest(documents=list(item.documents), question=item.question) for item in items]
    pc.compress_batch(requests[:2], batch_size=2)  # warm-up: kernels, MiniLM load
    reference = None
    print(
        f"# {len(requests)} {args.task} requests of ~{args.length} tokens; draft {pc.draft.name} on {pc.draft.device} "
    )
    print(
        f"# ({pc.draft.model.dtype}); {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads\n"
    )
    cuda = pc.draft.device.type == "cuda"
    print(
        "| batch size | seconds (median) | requests/s | vs batch 1 | same kept text as batch 1 |"
        + (" peak MiB |" if cuda else "")
    )
    print("|---|---|---|---|---|" + ("---|" if cuda else ""))
    base_rate = None
    for size in [int(s) for s in args.sizes.split(",")]:
        times = []
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.repeats):
            started = time.perf_counter()
            results = pc.compress_batch(requests, batch_size=size)
            times.append(time.perf_counter() - started)
        texts = [r.texts for r in results]
        reference = reference or texts
        same = sum(a == b for a, b in zip(texts, reference, strict=True))
        seconds = statistics.median(times)
        rate = len(requests) / seconds
        base_rate = base_rate or rate
        peak = f" {torch.cuda.max_memory_allocated() / 2**20:.0f} |" if cuda else ""
        print(f"| {size} | {seconds:.2f} | {rate:.2f} | {rate / base_rate:.2f}x | {same}/{len(requests)} |" + peak)


if __name__ == "__main__":
    main()
