"""``specrag bench``'s body: parse options, load models, run, write tables and plots.

Kept out of ``cli.py`` so the command stays a thin wrapper and the same entry point is
callable from Python (the report script and the smoke test use :func:`summarise`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..core.models import LoadedModel, load_model
from .kvpress_io import KVPRESS_METHODS, export_kv_prompts, import_kvpress
from .methods_kv import KV_DRAFT_METHODS, KV_METHODS, UNAVAILABLE
from .methods_pc import DRAFT_METHODS, PC_METHODS
from .plots import accuracy_vs_budget, ttft_vs_length
from .report import complete_items, cost_table, label, metric_table, paired_table
from .runner import SuiteConfig, load_records, run_suite

ORDER = PC_METHODS + KV_METHODS + KVPRESS_METHODS


def parse_list(text: str, kind: type = str) -> list[Any]:
    """Comma-separated option values (``"0.1,0.25"`` -> ``[0.1, 0.25]``); ``all`` for methods."""
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values:
        raise ValueError(f"empty list: {text!r}")
    return [kind(value) for value in values]


def parse_indices(text: str | None) -> list[int] | None:
    """``--items`` (``"0,3,5"`` -> ``[0, 3, 5]``), refused in one line when not integers."""
    if text is None:
        return None
    try:
        return parse_list(text, int)
    except ValueError:
        raise ValueError(f"--items takes comma-separated item indices such as 0,3,5, got {text!r}") from None


def resolve_methods(text: str) -> list[str]:
    """``all``, ``pc``, ``kv`` or an explicit comma-separated list."""
    shortcuts = {"all": list(ORDER), "pc": list(PC_METHODS), "kv": list(KV_METHODS)}
    return shortcuts.get(text.strip(), None) or parse_list(text)


def report_tables(
    paths: Sequence[Path], budgets: Sequence[float], img_dir: Path | None = None, stem: str = "bench"
) -> str:
    """Tables and plots over several result files (the committed report is built with this).

    Rows are not restricted to common items here: runs of different sizes share prefixes of
    the same item list (items are prefix-stable), and each row states its own N.
    """
    records = [r for path in paths for r in load_records(Path(path)).values()]
    return summarise(records, budgets, img_dir, stem=stem, paired=False)


def summarise(
    records: Sequence[dict[str, Any]],
    budgets: Sequence[float],
    img_dir: Path | None = None,
    stem: str = "bench",
    *,
    paired: bool = True,
) -> str:
    """Markdown tables (containment, EM/F1, costs) and optional plots for a set of records.

    ``paired`` keeps only items that have every row, so all rows compare the same items.
    """
    parts: list[str] = []
    if paired:
        records = complete_items(records)
    pc = [r for r in records if r.get("kind") == "pc"]
    for task in sorted({r["task"] for r in records}):
        for length in sorted({r["length"] for r in records if r["task"] == task}):

            def here(r: dict[str, Any], task: str = task, length: int = length) -> bool:
                return r["task"] == task and r["length"] == length

            if any(here(r) for r in pc):  # KV-only runs have no compressed context
                parts.append(f"#### {task}, {length} tokens: answer contained in the compressed context\n")
                parts.append(metric_table(pc, "contained", budgets, where=here, order=ORDER))
            for reference in sorted({label(r) for r in pc if here(r) and r["method"] == "sentence"}):
                parts.append(f"\nPaired against `{reference}` on the same items (answer contained):\n")
                parts.append(paired_table(pc, "contained", reference, budgets, where=here, order=ORDER))
            evidence = any(here(r) and "evidence_kept" in r for r in pc)
            if evidence:  # multi-hop: the answer alone is not enough, both facts must survive
                parts.append(f"\n#### {task}, {length} tokens: both facts kept (evidence)\n")
                parts.append(metric_table(pc, "evidence_kept", budgets, where=here, order=ORDER))
                for reference in sorted({label(r) for r in pc if here(r) and r["method"] == "sentence"}):
                    parts.append(f"\nPaired against `{reference}` on the same items (both facts kept):\n")
                    parts.append(paired_table(pc, "evidence_kept", reference, budgets, where=here, order=ORDER))
            if task in ("quoref", "multihop") and any(here(r) for r in pc):
                metric = "evidence_kept" if evidence else "contained"
                for qtype in ("coref", "lexical"):

                    def of_qtype(r: dict[str, Any], q: str = qtype, h: Callable[[dict[str, Any]], bool] = here) -> bool:
                        return h(r) and r.get("qtype") == q

                    parts.append(f"\n{task} {length}, `{qtype}` questions only ({metric}):\n")
                    parts.append(metric_table(pc, metric, budgets, where=of_qtype, order=ORDER))
            if any(here(r) and "em" in r for r in records):
                parts.append(f"\n#### {task}, {length} tokens: target answers (EM, F1)\n")
                parts.append(metric_table([r for r in records if "em" in r], "em", budgets, where=here, order=ORDER))
                parts.append("\n")
                parts.append(
                    metric_table([r for r in records if "f1" in r], "f1", budgets, where=here, rate=False, order=ORDER)
                )
                kv = [r for r in records if r.get("kind") == "kv" and "em" in r]
                if any(here(r) and r["method"] == "kv_snapkv" for r in kv):
                    parts.append(
                        "\nKV methods paired against `kv_snapkv` (window-only eviction) on the same items (EM):\n"
                    )
                    parts.append(paired_table(kv, "em", "kv_snapkv", budgets, where=here, order=ORDER))
                best = _best_kvpress(kv, here)
                if best is not None:
                    parts.append(f"\nKV methods paired against `{best}`, the best kvpress press here (EM):\n")
                    parts.append(paired_table(kv, "em", best, budgets, where=here, order=ORDER))
            if img_dir is not None and any(here(r) for r in pc):
                accuracy_vs_budget(
                    pc,
                    "contained",
                    img_dir / f"{stem}-{task}-{length}-contained.png",
                    title=f"{task} {length}: answer contained",
                    where=here,
                )
                if any(here(r) and "em" in r for r in records):
                    accuracy_vs_budget(
                        [r for r in records if "em" in r],
                        "em",
                        img_dir / f"{stem}-{task}-{length}-em.png",
                        title=f"{task} {length}: exact match",
                        where=here,
                    )
    if any("ttft_s" in r for r in records):
        parts.append("\n#### Costs (time to first token = compression + draft + target prefill)\n")
        parts.append(cost_table(records))
        if img_dir is not None:
            ttft_vs_length(records, img_dir / f"{stem}-ttft.png", title="time to first token vs context length")
    missing = [m for m in UNAVAILABLE]
    if missing:
        parts.append(
            "\nKV rows not measured (no SpecKV mode): " + ", ".join(f"`{m}` ({UNAVAILABLE[m]})" for m in missing) + "\n"
        )
    return "\n".join(parts)


def _best_kvpress(records: Sequence[dict[str, Any]], where: Callable[[dict[str, Any]], bool]) -> str | None:
    """The kvpress row with the highest mean EM over all its budgets (None without kvpress rows)."""
    scores: dict[str, list[float]] = {}
    for record in records:
        if where(record) and record["method"] in KVPRESS_METHODS:
            scores.setdefault(label(record), []).append(float(record["em"]))
    return max(scores, key=lambda row: (sum(scores[row]) / len(scores[row]), row)) if scores else None


def export_command(
    *,
    tasks: str,
    lengths: str,
    limit: int,
    seed: int,
    budgets: str,
    target: str,
    max_new_tokens: int,
    device: str,
    path: Path,
    start: int = 0,
    items: str | None = None,
    loaded: dict[str, LoadedModel] | None = None,
) -> int:
    """``specrag bench --export-kv-prompts``: the KV rows' prompts for the kvpress worker."""
    config = SuiteConfig(
        tasks=parse_list(tasks),
        lengths=parse_list(lengths, int),
        limit=limit,
        start=start,
        indices=parse_indices(items),
        seed=seed,
        methods=list(KV_METHODS),
        budgets=parse_list(budgets, float),
        max_new_tokens=max_new_tokens,
    )
    config.validate()
    model = (loaded or {}).get(target) or load_model(target, device)
    return export_kv_prompts(config, model, path)


def import_command(results: Sequence[Path], *, out: Path, budgets: str, tables: Path | None) -> int:
    """``specrag bench --import-kvpress``: add the worker's answers to ``out`` (and tables)."""
    added = import_kvpress(results, out)
    if tables is not None:
        tables.parent.mkdir(parents=True, exist_ok=True)
        records = list(load_records(out).values())
        tables.write_text(summarise(records, parse_list(budgets, float), stem=out.stem), encoding="utf-8")
    return added


def run_command(
    *,
    tasks: str,
    lengths: str,
    limit: int,
    seed: int,
    methods: str,
    budgets: str,
    draft: str,
    target: str,
    out: Path,
    answer: bool,
    max_new_tokens: int,
    device: str,
    tables: Path | None,
    img_dir: Path | None,
    lookahead: int | None = None,
    share_prefill: bool = False,
    start: int = 0,
    items: str | None = None,
    progress: bool = True,
    loaded: dict[str, LoadedModel] | None = None,
) -> list[dict[str, Any]]:
    """What ``specrag bench`` does; ``loaded`` maps names to already loaded models (tests)."""
    names = resolve_methods(methods)
    config = SuiteConfig(
        tasks=parse_list(tasks),
        lengths=parse_list(lengths, int),
        limit=limit,
        start=start,
        indices=parse_indices(items),
        seed=seed,
        methods=names,
        budgets=parse_list(budgets, float),
        answer=answer,
        max_new_tokens=max_new_tokens,
        lookahead=lookahead,
        share_prefill=share_prefill,
        out=out,
    )
    config.validate()
    cache = dict(loaded or {})

    def get(name: str) -> LoadedModel:
        if name not in cache:
            cache[name] = load_model(name, device)
        return cache[name]

    needs_draft = any(m in DRAFT_METHODS or m in KV_DRAFT_METHODS for m in names)
    records = run_suite(config, target=get(target), draft=get(draft) if needs_draft else None, progress=progress)
    if tables is not None:
        tables.parent.mkdir(parents=True, exist_ok=True)
        tables.write_text(summarise(records, config.budgets, img_dir, stem=out.stem), encoding="utf-8")
    return records
