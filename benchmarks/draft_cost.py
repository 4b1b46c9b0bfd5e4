#!/usr/bin/env python
"""What a draft's prefill costs next to the target's, by prompt length.

Why this script
---------------
Draft-based eviction (SpecKV) pays one draft prefill of the whole prompt before the target
starts. Parameter counts promise a cheap draft (135M against 1.5B), but attention grows with
the square of the prompt and with ``layers x heads x head_dim``, where a narrow, deep draft
is not small: SmolLM2-135M has 30 layers of 9 x 64, Qwen2.5-1.5B 28 layers of 12 x 128, so
at long prompts the draft's share of the target's time rises towards that ratio (0.40)
instead of the parameter ratio (0.09). This prints both, measured, and the share, so the
cost of a draft can be judged at the length where it is used.

Each cell is the median of ``--repeats`` prefills of random token ids (no chat template),
``logits_to_keep=1``, in the dtype ``load_model`` picks, one torch thread by default.

Usage::

    .venv/bin/python benchmarks/draft_cost.py --lengths 1024,2048,4096 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from specrag import LoadedModel, load_model


def prefill_seconds(loaded: LoadedModel, length: int, repeats: int, seed: int = 0) -> float:
    """Median wall time of one forward over ``length`` random ids with a fresh cache."""
    generator = torch.Generator().manual_seed(seed)
    vocab = int(loaded.model.config.vocab_size)
    ids = torch.randint(100, vocab - 100, (1, length), generator=generator).to(loaded.device)
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            started = time.perf_counter()
            loaded.model(input_ids=ids, use_cache=False, logits_to_keep=1)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def attention_width(loaded: LoadedModel) -> int:
    """``layers x heads x head_dim``: what the quadratic part of a prefill scales with."""
    config = loaded.model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return int(config.num_hidden_layers * config.num_attention_heads * head_dim)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--draft", default="smollm2-135m")
    parser.add_argument("--target", default="qwen2.5-coder-1.5b")
    parser.add_argument("--lengths", default="1024,2048,4096")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    draft, target = load_model(args.draft, args.device), load_model(args.target, args.device)
    params = {m.name: sum(p.numel() for p in m.model.parameters()) for m in (draft, target)}
    print(
        f"draft {draft.name} ({params[draft.name] / 1e6:.0f}M, {draft.dtype}), target {target.name} "
        f"({params[target.name] / 1e6:.0f}M, {target.dtype}), {args.threads} thread(s), median of {args.repeats}\n"
        f"parameter ratio {params[draft.name] / params[target.name]:.2f}, "
        f"attention-width ratio {attention_width(draft) / attention_width(target):.2f}\n"
    )
    print("| prompt tokens | draft prefill s | target prefill s | draft / target |")
    print("|---|---|---|---|")
    for length in (int(value) for value in args.lengths.split(",")):
        mine, theirs = prefill_seconds(draft, length, args.repeats), prefill_seconds(target, length, args.repeats)
        print(f"| {length} | {mine:.2f} | {theirs:.2f} | {mine / theirs:.2f} |", flush=True)


if __name__ == "__main__":
    main()
