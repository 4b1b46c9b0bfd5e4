"""Smoke test of ``specrag bench`` on tiny random models: end to end, resumable, budgeted, verbatim.

Tiny models answer nonsense, so no accuracy is checked here; what must hold for any model is
the plumbing: every method yields a record per item and budget, the kept text is made of
verbatim spans of the documents within the budget counted in the *target's* tokens, and a
second run with the same arguments recomputes nothing.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from specrag import build_tiny_model
from specrag.bench import methods_pc, runner
from specrag.bench.budget import SEPARATOR, select, target_units
from specrag.bench.methods_kv import UNAVAILABLE
from specrag.bench.methods_pc import PC_METHODS, make_pc_method
from specrag.bench.peers import LlamaIndexOptimizer
from specrag.bench.quoref import QuorefExample
from specrag.bench.report import wilson, write_section
from specrag.bench.runner import SuiteConfig, run_suite
from specrag.bench.suite import parse_indices, summarise
from specrag.bench.tasks import build_items, question_type
from specrag.core.specpc.grouping import group_cap

ALL_METHODS = (*PC_METHODS, "kv_full", "kv_streaming", "kv_snapkv", "kv_speckv", "kv_oracle", "kv_speckv_pc")
TASKS = ("quoref", "niah_single", "niah_multikey", "niah_multivalue", "vt")


def _examples() -> list[QuorefExample]:
    words = ["alpha", "beta", "gamma", "delta", "river", "mountain", "castle", "garden"]
    return [
        QuorefExample(
            question=f"Who built the {word} tower?",
            passage=(f"The {word} tower stands in the north. It was built by Maria {word.title()}son in 1901. " * 2)
            + "Many visitors come each year. The weather is mild.",
            answers=(f"Maria {word.title()}son",),
        )
        for word in words
    ]


def _embed(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for MiniLM: letter counts, unit length."""
    vectors = np.array([[text.lower().count(c) for c in "abcdefghijklmnop"] for text in texts], float) + 1.0
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def models() -> dict[str, object]:
    return {"target": build_tiny_model("qwen2"), "draft": build_tiny_model("llama")}


def _config(out: Path, **overrides: object) -> SuiteConfig:
    settings: dict[str, object] = {
        "tasks": TASKS,
        "lengths": (160,),
        "limit": 2,
        "seed": 0,
        "methods": ALL_METHODS,
        "budgets": (0.25,),
        "answer": True,
        "max_new_tokens": 3,
        "out": out,
        "quoref_examples": _examples(),
    }
    settings.update(overrides)
    return SuiteConfig(**settings)  # type: ignore[arg-type]


def test_suite_runs_end_to_end_and_resumes(
    tmp_path: Path, models: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "results.jsonl"
    config = _config(out)
    records = run_suite(config, target=models["target"], draft=models["draft"], embed=_embed, progress=False)  # type: ignore[arg-type]
    measured = [m for m in ALL_METHODS if m not in UNAVAILABLE]
    assert {r["method"] for r in records} == set(measured)
    assert len(records) == len(TASKS) * 2 * len(measured)  # 2 items, 1 budget (full rows at 1.0)
    for record in records:
        assert {"em", "f1", "ttft_s", "decode_tok_s", "kv_bytes_peak", "peak_memory_bytes", "kept_fraction"} <= set(
            record
        )
        if record["kind"] == "pc" and record["method"] != LlamaIndexOptimizer.name:  # it sets its own length
            assert record["kept_tokens"] <= record["budget_tokens"]
            assert "contained" in record and record["compression_s"] >= 0
    lines = out.read_text().splitlines()
    assert len(lines) == len(records)

    # Resuming: nothing is scored or generated again, nothing is appended.
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished result was recomputed")

    monkeypatch.setattr(runner, "make_pc_method", refuse)
    monkeypatch.setattr(runner, "make_kv_method", refuse)
    again = run_suite(config, target=models["target"], draft=models["draft"], embed=_embed, progress=False)  # type: ignore[arg-type]
    assert [r["key"] for r in again] == [r["key"] for r in records]
    assert out.read_text().splitlines() == lines

    # A killed run leaves a half-written line: it is ignored and the rest is reused.
    out.write_text("\n".join(lines) + '\n{"key": "broken', encoding="utf-8")
    assert len(run_suite(config, target=models["target"], draft=models["draft"], embed=_embed, progress=False)) == len(
        records
    )  # type: ignore[arg-type]

    report = summarise(records, config.budgets, tmp_path / "img")
    assert "kv_streaming" in report and "[" in report
    assert (tmp_path / "img" / "bench-ttft.png").exists()


def test_every_pc_method_is_verbatim_and_within_target_budget(models: dict[str, object]) -> None:
    target, draft = models["target"], models["draft"]
    items = build_items(TASKS, (160,), 2, 0, target.tokenizer, quoref_examples=_examples())  # type: ignore[attr-defined]
    for name in PC_METHODS:
        method = make_pc_method(name, draft=draft, target=target, embed=_embed, seed=0)  # type: ignore[arg-type]
        if isinstance(method, LlamaIndexOptimizer):  # a peer that sets its own length (tested apart)
            continue
        for item in items:
            units = target_units(target.tokenizer, item.documents)  # type: ignore[attr-defined]
            scored = methods_pc.timed_score(method, item, units)
            for ratio in (0.1, 0.25, 0.5):
                selection = select(units, scored.keys, ratio, scored.sentence_tokens)
                assert selection.kept_tokens <= selection.budget == int(np.floor(ratio * units.total_tokens + 0.5))
                # little left unspent: less than a word unit, or than a sentence group with sentence units
                slack = 8 if scored.sentence_tokens is None else group_cap(selection.budget, scored.sentence_tokens)
                assert selection.kept_tokens >= selection.budget - slack
                for document, text, spans in zip(item.documents, selection.texts, selection.spans):
                    assert text == SEPARATOR.join(document[a:b] for a, b in spans)
                    assert all(0 <= a < b <= len(document) for a, b in spans)
                    assert all(b1 < a2 for (_, b1), (a2, _) in itertools.pairwise(spans))
                kept_again = sum(
                    len(target.tokenizer.encode(d[a:b], add_special_tokens=False))  # type: ignore[attr-defined]
                    for d, spans in zip(item.documents, selection.spans)
                    for a, b in spans
                )
                # Cutting at word starts keeps token boundaries: at most one merge per span edge.
                assert kept_again <= selection.budget + 2 * sum(len(s) for s in selection.spans)


def test_items_are_deterministic_and_prefix_stable(models: dict[str, object]) -> None:
    tokenizer = models["target"].tokenizer  # type: ignore[attr-defined]
    small = build_items(TASKS, (160,), 2, 3, tokenizer, quoref_examples=_examples())
    large = build_items(TASKS, (160,), 3, 3, tokenizer, quoref_examples=_examples())
    by_id = {item.item_id: item for item in large}
    for item in small:
        assert by_id[item.item_id] == item
    for item in large:
        text = "\n".join(item.documents)
        assert all(answer in text for answer in item.answers)


def test_a_start_shares_one_run_between_processes(models: dict[str, object]) -> None:
    """Items 0-1 in one process and 2-3 in another are exactly the items of one 4-item run."""
    tokenizer = models["target"].tokenizer  # type: ignore[attr-defined]
    tasks = ("quoref", "niah_multikey", "multihop")
    whole = build_items(tasks, (160, 200), 4, 3, tokenizer, quoref_examples=_examples())
    first = build_items(tasks, (160, 200), 2, 3, tokenizer, quoref_examples=_examples())
    second = build_items(tasks, (160, 200), 4, 3, tokenizer, quoref_examples=_examples(), start=2)
    assert len(second) == len(first) == len(whole) // 2
    assert sorted(first + second, key=lambda i: i.item_id) == sorted(whole, key=lambda i: i.item_id)
    assert all(item.item_id.endswith(("-2", "-3")) for item in second)
    for start in (-1, 4):
        with pytest.raises(ValueError, match="leaves no items"):
            build_items(tasks, (160,), 4, 3, tokenizer, quoref_examples=_examples(), start=start)
    with pytest.raises(ValueError, match="--start 5 leaves no items.*--limit 5"):
        SuiteConfig(tasks=("vt",), limit=5, start=5, methods=("truncate",)).validate()


def test_listed_items_are_the_full_runs_items_at_those_indices(models: dict[str, object]) -> None:
    """``indices`` picks items out of a run without changing them, in index order; bad
    lists are refused in one line (CLI wording from the config, API wording from the builder)."""
    tokenizer = models["target"].tokenizer  # type: ignore[attr-defined]
    tasks = ("quoref", "niah_multikey")
    whole = build_items(tasks, (160,), 5, 3, tokenizer, quoref_examples=_examples())
    picked = build_items(tasks, (160,), 5, 3, tokenizer, quoref_examples=_examples(), indices=[4, 1])
    assert [item.item_id for item in picked] == [
        "quoref-160-3-1",
        "quoref-160-3-4",
        "niah_multikey-160-3-1",
        "niah_multikey-160-3-4",
    ]
    by_id = {item.item_id: item for item in whole}
    assert picked == [by_id[item.item_id] for item in picked]
    for bad in ([], [5], [-1], [1, 1]):
        with pytest.raises(ValueError, match="distinct and in \\[0, 5\\)"):
            build_items(tasks, (160,), 5, 3, tokenizer, quoref_examples=_examples(), indices=bad)
    with pytest.raises(ValueError, match="not both"):
        build_items(tasks, (160,), 5, 3, tokenizer, quoref_examples=_examples(), start=1, indices=[2])
    with pytest.raises(ValueError, match="--items must list distinct item indices below --limit 5, got 2,7"):
        SuiteConfig(tasks=("vt",), limit=5, indices=(2, 7), methods=("truncate",)).validate()
    with pytest.raises(ValueError, match="--items takes comma-separated item indices"):
        parse_indices("0,a")


def test_question_type_and_wilson() -> None:
    passage = "Anna moved to Oslo. She later married Tom Berg."
    assert question_type("Who did the woman who moved to Oslo marry?", passage, ["Tom Berg"]) == "coref"
    assert question_type("Who did Anna marry in the end, later?", passage, ["Tom Berg"]) == "lexical"
    low, high = wilson(0, 10)
    assert low == 0.0 and 0.2 < high < 0.35
    assert wilson(5, 10)[0] < 0.5 < wilson(5, 10)[1]


def test_write_section_touches_only_its_markers(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\n## Other\n\nkeep me\n", encoding="utf-8")
    write_section(path, "first")
    write_section(path, "second")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\n## Other\n\nkeep me\n")
    assert text.count("bench-suite:start") == 1 and "second" in text and "first" not in text


def test_unknown_method_and_budget_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown method"):
        _config(tmp_path / "x.jsonl", methods=("nope",)).validate()
    with pytest.raises(ValueError, match="budgets"):
        _config(tmp_path / "x.jsonl", budgets=(0.0,)).validate()
    with pytest.raises(ValueError, match="needs a draft"):
        methods_pc.make_pc_method("specpc", draft=None, target=None, embed=_embed, seed=0)


def test_records_are_json(tmp_path: Path, models: dict[str, object]) -> None:
    out = tmp_path / "r.jsonl"
    run_suite(
        _config(out, tasks=("niah_single",), methods=("truncate", "specpc"), answer=False),
        target=models["target"],
        draft=models["draft"],
        progress=False,
    )  # type: ignore[arg-type]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {row["method"] for row in rows} == {"truncate", "specpc"} and all("em" not in row for row in rows)


def test_a_fixed_lookahead_is_its_own_row(tmp_path: Path, models: dict[str, object]) -> None:
    """``--lookahead`` runs the lookahead rows again under their own keys and labels: the
    default rows in the same file are neither reused nor overwritten, the window-only row
    (no lookahead) is shared, and the draft really writes that many tokens."""
    out = tmp_path / "r.jsonl"
    base = {"tasks": ("niah_single",), "limit": 1, "methods": ("kv_snapkv", "kv_speckv"), "max_new_tokens": 6}
    default = run_suite(_config(out, **base), target=models["target"], draft=models["draft"], progress=False)  # type: ignore[arg-type]
    fixed = run_suite(_config(out, lookahead=2, **base), target=models["target"], draft=models["draft"], progress=False)  # type: ignore[arg-type]
    by_method = {r["method"]: r for r in fixed}
    assert by_method["kv_snapkv"]["key"] in {r["key"] for r in default}  # no lookahead: reused
    speckv = by_method["kv_speckv"]
    assert speckv["key"].endswith("|lookahead=2") and speckv["lookahead"] == 2
    assert speckv["key"] not in {r["key"] for r in default}
    assert 1 <= speckv["lookahead_tokens"] <= 2  # the draft may stop early at a newline or EOS
    assert [r for r in default if r["method"] == "kv_speckv"][0]["lookahead_tokens"] > 2
    assert len(out.read_text().splitlines()) == 3
    report = summarise(fixed + default, (0.25,), None)
    assert "kv_speckv (tiny-llama, lookahead 2)" in report.replace("**", "")


def test_lookahead_is_refused_where_it_changes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lookahead only changes"):
        _config(tmp_path / "x.jsonl", methods=("kv_snapkv",), lookahead=4).validate()
    with pytest.raises(ValueError, match="lookahead must be >= 1"):
        _config(tmp_path / "x.jsonl", methods=("kv_speckv",), lookahead=0).validate()


def test_shared_prefill_rows_answer_as_their_own_runs(tmp_path: Path, models: dict[str, object]) -> None:
    """``--share-prefill`` changes how often the target prefills, never a row's answer or
    kept entries; SpecKV-PC (another prompt) still runs on its own."""
    base = {
        "tasks": ("niah_multikey", "vt"),
        "methods": ("kv_full", "kv_snapkv", "kv_speckv", "kv_streaming", "kv_speckv_pc"),
        "budgets": (0.25, 0.5),
    }
    fields = ("prediction", "kept_tokens", "lookahead_tokens", "kv_bytes_end", "prompt_tokens")
    rows = {}
    for shared in (False, True):
        out = tmp_path / f"shared-{shared}.jsonl"
        records = run_suite(
            _config(out, share_prefill=shared, **base), target=models["target"], draft=models["draft"], progress=False
        )  # type: ignore[arg-type]
        rows[shared] = {r["key"]: r for r in records}
    assert rows[False].keys() == rows[True].keys() and len(rows[True]) == 2 * 2 * (1 + 4 * 2)
    for key, alone in rows[False].items():
        together = rows[True][key]
        assert {field: together[field] for field in fields} == {field: alone[field] for field in fields}
        assert together.get("shared_prefill", False) is (alone["method"] != "kv_speckv_pc")
        assert "shared_prefill" not in alone


def test_list_answers_get_a_list_instruction_and_room_for_every_value(models: dict[str, object]) -> None:
    """Items needing all their answers (multi-value, variable tracking) ask for one comma-separated
    line, which the newline stop does not cut, with at least LIST_ANSWER_TOKENS new tokens."""
    from specrag import SpecKV

    target = models["target"]
    items = {item.task: item for item in build_items(TASKS[1:], (160,), 1, 0, target.tokenizer)}  # type: ignore[attr-defined]
    engine = SpecKV(target, None, budget=1 << 20)  # type: ignore[arg-type]
    for task, item in items.items():
        prompt = target.tokenizer.decode(runner.kv_prompt_ids(engine, item))  # type: ignore[attr-defined]
        listed = task in {"niah_multivalue", "vt"}
        assert item.require_all is listed
        assert ("separated by commas" in prompt) is listed and ("short phrase" in prompt) is not listed
        assert runner.answer_tokens(item, 16) == (runner.LIST_ANSWER_TOKENS if listed else 16)
        assert runner.answer_tokens(item, 64) == 64
