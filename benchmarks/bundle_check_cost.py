#!/usr/bin/env python
"""What the bundle hash check adds to a model load (the figure in the README's Models section).

``load_model`` compares a bundle folder with its manifest: file sizes on every call, sha256
digests on the first call per process (per file version). This script times a load of a
bundle both ways in one process, alternating the order: *with* the hash check (the record of
verified files cleared, as in a fresh process) and *without* it (the record kept, so only
sizes are compared). The loaded-model cache is cleared before every load, so each one reads
the weights. The page cache is warmed first: both variants read from memory, which is what
a user's second and later processes see; a cold first read costs the same disk time either
way, since loading reads every byte too.

Usage::

    .venv/bin/python benchmarks/bundle_check_cost.py --bundle smollm2-135m --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from specrag.core import bundles, models
from specrag.core.bundles import bundle_dir, check_bundle


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _timed_load(name: str, *, hashes: bool) -> float:
    models._CACHE.clear()
    if hashes:
        with bundles._VERIFIED_LOCK:
            bundles._VERIFIED.clear()
    start = time.perf_counter()
    models.load_model(name, device="cpu", progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    models.load_model(args.bundle, device="cpu", progress=False)  # pulls, records a missing manifest, warms
    assert check_bundle(args.bundle)[0] == "ok", "the bundle has no manifest to check against"
    size = sum(p.stat().st_size for p in bundle_dir(args.bundle).iterdir())
    timings: dict[bool, list[float]] = {True: [], False: []}
    hash_only = []
    for repeat in range(args.repeats):
        for hashes in (True, False) if repeat % 2 == 0 else (False, True):
            timings[hashes].append(_timed_load(args.bundle, hashes=hashes))
        with bundles._VERIFIED_LOCK:
            bundles._VERIFIED.clear()
        start = time.perf_counter()
        check_bundle(args.bundle)
        hash_only.append(time.perf_counter() - start)

    with_hash, without = statistics.median(timings[True]), statistics.median(timings[False])
    print(f"machine: {_cpu_name()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"bundle {args.bundle}: {size / 2**20:.0f} MiB, {args.repeats} repeats, medians")
    print(f"load with hash check     {with_hash:.3f} s   {[round(t, 3) for t in timings[True]]}")
    print(f"load, sizes only         {without:.3f} s   {[round(t, 3) for t in timings[False]]}")
    print(f"hash check alone         {statistics.median(hash_only):.3f} s")
    print(f"added by the hash check  {with_hash - without:+.3f} s ({(with_hash - without) / without:+.0%})")


if __name__ == "__main__":
    main()
