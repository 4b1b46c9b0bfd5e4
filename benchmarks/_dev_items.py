"""Shared setup of the development-seed scripts: their options, the draft and the items.

Scripts that choose settings measure on a development seed, never on the report's items
(seed 0); they all parse the same options and build items the bench's way, here.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from specrag.bench.tasks import BenchItem, build_items
from specrag.core.bundles import bundle_dir
from specrag.core.models import LoadedModel, load_model


@dataclass(frozen=True)
class DevRun:
    """What a development script works on."""

    args: argparse.Namespace
    budgets: list[float]
    tokenizer: PreTrainedTokenizerBase  # the target's: it counts the budget
    draft: LoadedModel
    items: list[BenchItem]


def dev_run(description: str, *, tasks: str, budgets: str, limit: int = 20, out_option: bool = False) -> DevRun:
    """Parse the shared options (``--tasks --length --limit --seed --budgets --draft --target
    --threads``, and ``--out`` with ``out_option``) and load the draft, the target's tokenizer
    and the items."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tasks", default=tasks)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--limit", type=int, default=limit)
    parser.add_argument("--seed", type=int, default=1, help="A development seed; the report uses seed 0.")
    parser.add_argument("--budgets", default=budgets)
    parser.add_argument("--draft", default="smollm2-135m")
    parser.add_argument("--target", default="qwen2.5-coder-1.5b", help="Whose tokenizer counts the budget.")
    parser.add_argument("--threads", type=int, default=1)
    if out_option:
        parser.add_argument("--out", default=None, help="Also append one JSON line per item to this file.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(str(bundle_dir(args.target)))
    draft = load_model(args.draft, "cpu")
    items = build_items(args.tasks.split(","), [args.length], args.limit, args.seed, tokenizer)
    return DevRun(args, [float(b) for b in args.budgets.split(",")], tokenizer, draft, items)
