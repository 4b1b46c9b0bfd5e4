"""Run the benchmark: items x methods x budgets, resumable, one JSONL line per result.

Why this shape
--------------
A CPU run of the full grid takes hours, machines are shared and sessions end, so every
finished (item, method, draft, target, budget) is appended to the output JSONL at once and
skipped when the run is started again with the same arguments. Items are rebuilt from the
seed, so every method and budget sees the same inputs, in this run and the next.

Costs are split on purpose: *containment* (does the answer survive compression?) needs only
the draft, so it can run over many items; *EM/F1* need the target to answer, so
``answer=True`` is the expensive mode, usually run on fewer items.
"""

from __future__ import annotations

import json
import resource
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from ..core.models import LoadedModel
from ..core.speckv import SpecKV, SpecKVResult
from ..core.speckv.shared_prefill import generate_shared_prefill
from ..core.specpc import ScoredContext
from .budget import budget_tokens, target_units
from .kvpress_worker import METHOD_PREFIX as KVPRESS_PREFIX
from .methods_kv import (
    KV_DRAFT_METHODS,
    KV_METHODS,
    LOOKAHEAD_METHODS,
    NO_EVICTION,
    UNAVAILABLE,
    KVMethod,
    fixed_lookahead,
    kv_figures,
    make_kv_method,
)
from .methods_pc import (
    DRAFT_METHODS,
    PC_METHODS,
    Embedder,
    LlamaIndexOptimizer,
    PCMethod,
    compress_at_budgets,
    make_pc_method,
)
from .metrics import answer_contained, exact_match, token_f1
from .tasks import BenchItem, build_items

INSTRUCTION = "Answer the question with a short phrase copied from the documents. No explanation."
LIST_INSTRUCTION = (
    "Answer the question with every answer copied from the documents, separated by commas, on one line. No explanation."
)
"""For items whose answers are all needed (niah_multivalue, vt): one line holds them all, so
:data:`ANSWER_STOP` does not cut the list after its first entry."""
LIST_ANSWER_TOKENS = 48
"""Fewest new tokens for those items: four 7-digit values with separators are about 40 target
tokens (Qwen writes one token per digit), where one short answer fits in 16."""
DOCUMENT_TEMPLATE = "Documents:\n\n{context}\n\nQuestion: {question}\nAnswer:"
"""SpecKV's default document template, repeated here to count full-prompt tokens."""
ANSWER_STOP = ("\n",)
"""Answers are one line: generation stops at the first newline."""


@dataclass
class SuiteConfig:
    """What to run. Every field is a command-line option of ``specrag bench``."""

    tasks: Sequence[str] = ("quoref",)
    lengths: Sequence[int] = (2048,)
    limit: int = 20
    start: int = 0
    """Items before this index (per task and length) are left to another process: ``start=20,
    limit=40`` runs items 20-39 of the same run, so two processes can share its items."""
    indices: Sequence[int] | None = None
    """Only these items of the ``limit`` (per task and length), the same items a full run
    has at those indices: say, the prompts every row's models can read."""
    seed: int = 0
    methods: Sequence[str] = PC_METHODS
    budgets: Sequence[float] = (0.1, 0.25, 0.5)
    answer: bool = False
    max_new_tokens: int = 16
    lookahead: int | None = None
    """Answer tokens that score the cache in the lookahead KV rows (None: SpecKV's default)."""
    share_prefill: bool = False
    """KV rows of one item answer from one target prefill (:data:`OWN_PREFILL` rows excepted):
    same answers and kept entries, each row's seconds composed from the shared forward (see
    :mod:`specrag.core.speckv.shared_prefill`); records carry ``shared_prefill``."""
    out: Path = Path("bench-results.jsonl")
    quoref_examples: Sequence[Any] | None = field(default=None, repr=False)

    def items(self, tokenizer: PreTrainedTokenizerBase) -> list[BenchItem]:
        """The items of this configuration, lengths counted by ``tokenizer`` (the target's)."""
        return build_items(
            self.tasks,
            self.lengths,
            self.limit,
            self.seed,
            tokenizer,
            quoref_examples=self.quoref_examples,
            start=self.start,
            indices=self.indices,
        )

    def validate(self) -> None:
        unknown = [m for m in self.methods if m not in PC_METHODS and m not in KV_METHODS]
        external = [m for m in unknown if m.startswith(KVPRESS_PREFIX)]
        if external:
            raise ValueError(
                f"{external} run in kvpress's own environment, not here: use --export-kv-prompts, "
                "the kvpress worker, then --import-kvpress (docs/kvpress.md)"
            )
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; expected some of {PC_METHODS + KV_METHODS}")
        if not 0 <= self.start < self.limit:
            raise ValueError(
                f"--start {self.start} leaves no items: it must be at least 0 and below --limit {self.limit}"
            )
        if self.indices is not None:
            if self.start:
                raise ValueError("give --items or --start, not both")
            outside = sorted({i for i in self.indices if not 0 <= i < self.limit})
            if not self.indices or outside or len(set(self.indices)) != len(self.indices):
                raise ValueError(
                    f"--items must list distinct item indices below --limit {self.limit}, got "
                    f"{','.join(map(str, self.indices))}"
                )
        bad = [b for b in self.budgets if not 0.0 < b <= 1.0]
        if bad:
            raise ValueError(f"budgets must be in (0, 1], got {bad}")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.lookahead is not None and (isinstance(self.lookahead, bool) or self.lookahead < 1):
            raise ValueError(f"lookahead must be >= 1 (kv_snapkv is the row without one), got {self.lookahead}")
        if self.lookahead is not None and not any(m in LOOKAHEAD_METHODS for m in self.methods):
            raise ValueError(f"lookahead only changes {sorted(LOOKAHEAD_METHODS)}; none of them was asked for")


def result_key(
    item_id: str, method: str, draft: str | None, target: str, budget: float, lookahead: int | None = None
) -> str:
    """Cache key of one result; the draft is part of it only for methods that use one, and a
    fixed lookahead only for the rows it changes (keys without one stay as they were)."""
    uses_draft = method in DRAFT_METHODS or method in KV_DRAFT_METHODS
    parts = [item_id, method, (draft or "-") if uses_draft else "-", target, f"{budget:g}"]
    fixed = fixed_lookahead(method, lookahead)
    if fixed is not None:
        parts.append(f"lookahead={fixed}")
    return "|".join(parts)


def load_records(path: Path) -> dict[str, dict[str, Any]]:
    """Finished results by key; a truncated last line (a killed run) is ignored."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        records[record["key"]] = record
    return records


def _peak_memory_bytes(device: torch.device) -> int:
    """GPU: peak allocated since the last reset; CPU: the process's resident high-water mark."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def dtype_name(dtype: torch.dtype) -> str:
    """``"float32"`` for ``torch.float32``: how records name the target's dtype. The dtype is
    not part of a result's key, but it moves answers and cache bytes (``load_model`` picks
    bf16 only on CPUs with bf16 instructions), so rows are compared within one dtype."""
    return str(dtype).removeprefix("torch.")


OWN_PREFILL = frozenset({"kv_speckv_pc", "kv_speckv_overlap"})
"""KV rows that never share a prefill: SpecKV-PC's target reads another (compressed) prompt,
and the overlapped row times its draft beside its own prefill."""


def instruction_for(item: BenchItem) -> str:
    """The system instruction the target answers ``item`` under (a list where all answers count)."""
    return LIST_INSTRUCTION if item.require_all else INSTRUCTION


def answer_tokens(item: BenchItem, max_new_tokens: int) -> int:
    """New tokens the target may write for ``item``: ``max_new_tokens``, at least
    :data:`LIST_ANSWER_TOKENS` where all answers are needed."""
    return max(max_new_tokens, LIST_ANSWER_TOKENS) if item.require_all else max_new_tokens


def question_messages(item: BenchItem) -> list[dict[str, str]]:
    """The chat the target answers (documents are folded into the user turn by SpecKV)."""
    return [{"role": "system", "content": instruction_for(item)}, {"role": "user", "content": item.question}]


def kv_prompt_messages(item: BenchItem) -> list[dict[str, str]]:
    """The chat every KV row reads for ``item``: the instruction, then
    :data:`DOCUMENT_TEMPLATE` filled with the documents and question (what
    :meth:`SpecKV.generate` builds from :func:`question_messages` and the documents)."""
    full_prompt = DOCUMENT_TEMPLATE.format(context="\n\n".join(item.documents), question=item.question)
    return [{"role": "system", "content": instruction_for(item)}, {"role": "user", "content": full_prompt}]


def kv_prompt_ids(engine: SpecKV, item: BenchItem) -> list[int]:
    """The token ids every KV row's target reads for ``item`` (:func:`kv_prompt_messages`
    under the target's chat template)."""
    return engine.render(kv_prompt_messages(item))


def scored_answer(prediction: str, answers: Sequence[str], require_all: bool) -> dict[str, Any]:
    """EM, F1 and containment of a target's answer (all answers joined where all are needed)."""
    return {
        "prediction": prediction,
        "em": exact_match(prediction, answers if not require_all else [", ".join(answers)]),
        "f1": token_f1(prediction, answers if not require_all else [" ".join(answers)]),
        "answer_contained": answer_contained(prediction, answers, require_all=require_all),
    }


class _Answerer:
    """The target answering a (compressed or full) prompt with a full cache: greedy, short."""

    def __init__(self, target: LoadedModel, max_new_tokens: int) -> None:
        self.engine = SpecKV(target, None, budget=NO_EVICTION)
        self.max_new_tokens = max_new_tokens

    def __call__(self, engine: SpecKV | None, item: BenchItem, documents: Sequence[str]) -> dict[str, Any]:
        runner = engine or self.engine
        result = runner.generate(
            question_messages(item),
            documents=[d for d in documents if d] or [""],
            max_new_tokens=answer_tokens(item, self.max_new_tokens),
            stop=list(ANSWER_STOP),
        )
        return self._scored(item, result)

    def sharing_prefill(self, engines: Sequence[SpecKV], item: BenchItem) -> list[dict[str, Any]]:
        """Every engine answers ``item`` (uncompressed) from one target prefill; see
        :func:`~specrag.core.speckv.shared_prefill.generate_shared_prefill`."""
        results = generate_shared_prefill(
            engines,
            question_messages(item),
            documents=list(item.documents),
            max_new_tokens=answer_tokens(item, self.max_new_tokens),
            stop=list(ANSWER_STOP),
        )
        return [{**self._scored(item, result), "shared_prefill": True} for result in results]

    @staticmethod
    def _scored(item: BenchItem, result: SpecKVResult) -> dict[str, Any]:
        prediction = result.text.strip()
        return {**scored_answer(prediction, item.answers, item.require_all), **kv_figures(result)}


def _kv_record(
    base: dict[str, Any],
    answered: dict[str, Any],
    name: str,
    budget: float,
    key: str,
    entries: int,
    draft_name: str | None,
    prompt_tokens: int,
    lookahead: int | None,
    device: torch.device,
) -> dict[str, Any]:
    """One KV row's JSONL record."""
    kept = min(entries, prompt_tokens)
    fixed = fixed_lookahead(name, lookahead)
    return {
        **base,
        **answered,
        "key": key,
        "method": name,
        "kind": "kv",
        "draft": draft_name if name in KV_DRAFT_METHODS else None,
        "budget": budget,
        "budget_tokens": kept,
        "kept_tokens": kept,
        "kept_fraction": kept / prompt_tokens,
        "full_prompt_tokens": prompt_tokens,
        "compression_s": answered["ttft_s"] - answered["prefill_s"],
        "peak_memory_bytes": _peak_memory_bytes(device),
        **({} if fixed is None else {"lookahead": fixed}),
    }


def run_suite(
    config: SuiteConfig,
    *,
    target: LoadedModel,
    draft: LoadedModel | None = None,
    embed: Embedder | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run (or resume) the benchmark and return every record of this configuration.

    Parameters
    ----------
    config
        Tasks, lengths, items, methods, budgets and output path.
    target
        The answering model; its tokenizer defines lengths and budgets.
    draft
        The draft for draft-based methods (may be None if none is requested).
    embed
        Sentence embedder for ``sentence`` (default: offline all-MiniLM-L6-v2).
    progress
        Show a tqdm bar over (item, method) pairs.
    """
    config.validate()
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    records = load_records(out)
    items = config.items(target.tokenizer)
    draft_name = draft.name if draft is not None else None
    pc_names = [m for m in config.methods if m in PC_METHODS]
    kv_names = [m for m in config.methods if m in KV_METHODS and m not in UNAVAILABLE]
    if kv_names and not config.answer:
        kv_names = []  # KV methods only exist while the target generates
    pc_cache: dict[str, PCMethod | LlamaIndexOptimizer] = {}

    def count_tokens(text: str) -> int:
        return len(target.tokenizer(text, add_special_tokens=False)["input_ids"])

    draft_passes: dict[tuple[Any, ...], ScoredContext] = {}  # SpecPC rows share a draft pass per item
    kv_cache: dict[str, KVMethod] = {}
    answerer = _Answerer(target, config.max_new_tokens) if (config.answer or kv_names) else None
    wanted: list[str] = []

    def done(key: str) -> bool:
        record = records.get(key)
        return record is not None and (not config.answer or "em" in record)

    def emit(record: dict[str, Any]) -> None:
        records[record["key"]] = record
        with out.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    bar = tqdm(total=len(items) * (len(pc_names) + len(kv_names)), desc="bench", unit="run", disable=not progress)
    for item in items:
        units = target_units(target.tokenizer, item.documents)
        base = {
            "task": item.task,
            "item_id": item.item_id,
            "length": item.length,
            "qtype": item.meta.get("qtype"),
            "target": target.name,
            "target_dtype": dtype_name(target.dtype),
            "total_tokens": units.total_tokens,
            "n_answers": len(item.answers),
        }
        for name in pc_names:
            budgets = [1.0] if name == "full" else list(config.budgets)
            keys = {b: result_key(item.item_id, name, draft_name, target.name, b) for b in budgets}
            wanted.extend(keys.values())
            pending = [b for b in budgets if not done(keys[b])]
            if pending:
                if name not in pc_cache:
                    pc_cache[name] = make_pc_method(
                        name, draft=draft, target=target, embed=embed, seed=config.seed, shared=draft_passes
                    )
                compressed = compress_at_budgets(pc_cache[name], item, units, pending, count_tokens)
                for budget in pending:
                    selection, seconds = compressed[budget]
                    record = {
                        **base,
                        "key": keys[budget],
                        "method": name,
                        "kind": "pc",
                        "draft": draft_name if name in DRAFT_METHODS else None,
                        "budget": budget,
                        "budget_tokens": selection.budget,
                        "kept_tokens": selection.kept_tokens,
                        "kept_fraction": selection.kept_fraction,
                        "compression_s": seconds,
                        "contained": answer_contained(
                            "\n\n".join(selection.texts), item.answers, require_all=item.require_all
                        ),
                    }
                    if item.evidence:
                        record["evidence_kept"] = answer_contained(
                            "\n\n".join(selection.texts), item.evidence, require_all=True
                        )
                    if answerer is not None and config.answer:
                        _reset_peak(target.device)
                        answered = answerer(None, item, selection.texts)
                        answered["ttft_s"] += seconds
                        record.update(answered, peak_memory_bytes=_peak_memory_bytes(target.device))
                    emit(record)
            bar.update(1)
        if not kv_names or answerer is None:  # the answerer exists whenever KV rows do
            continue
        prompt_tokens = len(kv_prompt_ids(answerer.engine, item))
        jobs: list[tuple[str, float, str, int]] = []  # (method, budget, key, cache entries)
        for name in kv_names:
            budgets = [1.0] if name == "kv_full" else list(config.budgets)
            for budget in budgets:
                key = result_key(item.item_id, name, draft_name, target.name, budget, config.lookahead)
                wanted.append(key)
                if done(key):
                    continue
                if name not in kv_cache:
                    kv_cache[name] = make_kv_method(name, target=target, draft=draft, lookahead=config.lookahead)
                entries = kv_cache[name].kv_budget(prompt_tokens, None if name == "kv_full" else budget)
                jobs.append((name, budget, key, entries))
        together = [job for job in jobs if config.share_prefill and job[0] not in OWN_PREFILL]
        if together:
            _reset_peak(target.device)
            engines = [kv_cache[name].engine(entries) for name, _, _, entries in together]
            for job, answered in zip(together, answerer.sharing_prefill(engines, item), strict=True):
                emit(_kv_record(base, answered, *job, draft_name, prompt_tokens, config.lookahead, target.device))
        for job in jobs:
            if job in together:
                continue
            name, _, _, entries = job
            _reset_peak(target.device)
            answered = answerer(kv_cache[name].engine(entries), item, item.documents)
            emit(_kv_record(base, answered, *job, draft_name, prompt_tokens, config.lookahead, target.device))
        bar.update(len(kv_names))
    bar.close()
    return [records[key] for key in wanted if key in records]


__all__ = ["SuiteConfig", "budget_tokens", "load_records", "result_key", "run_suite"]
