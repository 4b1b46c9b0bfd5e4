"""How much does SpecPC add to the draft's own forward pass? Time and peak memory.

For each input length, in fresh child processes (so peak memory is not polluted by earlier
runs), it measures:

* ``forward``: one plain forward pass of the draft over the whole prompt (documents and
  question), ``logits_to_keep=1``, no cache — the least any draft-based scorer must pay;
* ``compress``: ``SpecPC.compress`` on the same documents and question, everything
  included (tokenisation with offsets, attention capture, selection, span mapping).

Ratio = compress / forward seconds, the figure the SpecPC issue asks to keep <= 1.15.
Peak memory is the child's max RSS minus its resident memory after loading the model and
building the input, i.e. what the operation needed at its peak. Inputs longer than the draft's
position limit are compressed in pieces;
the forward baseline still reads them in one pass, as a plain forward would.

Usage::

    python benchmarks/specpc_overhead.py --lengths 2048 8192 16384 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch


def _child(mode: str, draft: str, length: int, repeats: int, threads: int, warmup: bool) -> dict[str, float]:
    """Run inside a fresh process: load, warm up, measure, report JSON on stdout."""
    from specrag import SpecPC, load_model
    from specrag.bench.needle import single_needle

    torch.set_num_threads(threads)
    loaded = load_model(draft, progress=False)
    sample = single_needle(length, loaded.tokenizer, seed=length, depth=0.5)
    pc = SpecPC(loaded, keep_ratio=0.1, progress=False)
    prompt = "Documents:\n\n" + "\n\n".join(sample.documents) + f"\n\nQuestion: {sample.question}\nAnswer:"
    ids = torch.tensor([loaded.tokenizer.encode(prompt)], device=loaded.device)

    def forward() -> None:
        with torch.inference_mode():
            loaded.model(ids, use_cache=False, logits_to_keep=1)

    def compress() -> None:
        pc.compress(list(sample.documents), sample.question)

    action = forward if mode == "forward" else compress
    baseline_kib = _current_rss_kib()  # model loaded, nothing run yet
    if warmup:
        action()  # kernels, allocator pools; skippable for the longest, slowest inputs
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "tokens": int(ids.shape[1]),
        "seconds": statistics.median(seconds),
        "peak_growth_mib": (peak_kib - baseline_kib) / 1024,
        "rss_mib": peak_kib / 1024,
    }


def _current_rss_kib() -> int:
    """Resident memory now (Linux), unlike ru_maxrss which only ever grows."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found in /proc/self/status")


def _measure(mode: str, draft: str, length: int, repeats: int, threads: int, warmup: bool) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--draft",
        draft,
        "--lengths",
        str(length),
        "--repeats",
        str(repeats),
        "--threads",
        str(threads),
        "--warmup" if warmup else "--no-warmup",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{mode} at {length} tokens failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draft", default="smollm2-135m")
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192, 16384])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--warmup", action=argparse.BooleanOptionalAction, default=True, help="run each operation once before timing it"
    )
    parser.add_argument("--child", choices=["forward", "compress"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.draft, args.lengths[0], args.repeats, args.threads, args.warmup)))
        return

    print(
        f"draft {args.draft}; {platform.processor() or platform.machine()}, {args.threads} threads, "
        f"torch {torch.__version__}; median of {args.repeats} run(s)"
        + (" after a warm-up" if args.warmup else ", no warm-up")
    )
    print()
    print("| tokens | forward s | compress s | ratio | forward peak +MiB | compress peak +MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for length in args.lengths:
        forward = _measure("forward", args.draft, length, args.repeats, args.threads, args.warmup)
        compress = _measure("compress", args.draft, length, args.repeats, args.threads, args.warmup)
        print(
            f"| {forward['tokens']} | {forward['seconds']:.2f} | {compress['seconds']:.2f} | "
            f"{compress['seconds'] / forward['seconds']:.2f} | {forward['peak_growth_mib']:.0f} | "
            f"{compress['peak_growth_mib']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
