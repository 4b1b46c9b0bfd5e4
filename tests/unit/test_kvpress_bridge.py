"""The kvpress side-by-side path: exported prompts, the worker's protocol, imported rows.

kvpress itself cannot be installed next to specrag (it caps transformers), so these tests run
the worker's protocol in this environment on a tiny random Qwen2, with presses written
here in kvpress's shape (a callable that takes the model and returns a context manager,
pruning each layer's cache as the layer runs). What must hold:

* without a press the worker answers exactly what SpecKV answers with the full cache, from
  the same exported token ids (so a press is the only difference between the rows);
* a press that prunes leaves the budget's entries per layer and decoding still runs at the
  true positions; a press that masks instead of pruning is counted by what stays visible;
* imported answers become ``kv`` rows scored by the bench's metrics, keyed like its own
  rows, resumable, and in the tables with a paired test against the best press.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from specrag import LoadedModel, SpecKV, build_tiny_model
from specrag.bench import kvpress_worker as worker
from specrag.bench.kvpress_io import KVPRESS_METHODS, export_kv_prompts, import_kvpress, kvpress_records
from specrag.bench.methods_kv import NO_EVICTION, kv_entries
from specrag.bench.metrics import exact_match
from specrag.bench.report import label
from specrag.bench.runner import INSTRUCTION, SuiteConfig, kv_prompt_ids, load_records, result_key
from specrag.bench.suite import summarise
from specrag.bench.tasks import build_items
from specrag.core.models import cache_argument


@pytest.fixture(scope="module")
def target() -> LoadedModel:
    return build_tiny_model("qwen2")


def _config(tmp_path: Path, **overrides: Any) -> SuiteConfig:
    settings: dict[str, Any] = {
        "tasks": ("niah_multikey",),
        "lengths": (160,),
        "limit": 2,
        "seed": 0,
        "budgets": (0.25, 0.5),
        "max_new_tokens": 6,
        "out": tmp_path / "bench.jsonl",
    }
    settings.update(overrides)
    return SuiteConfig(**settings)


@contextlib.contextmanager
def _pruning(model: Any, ratio: float) -> Iterator[None]:
    """A press in kvpress's shape: after each attention layer's prefill, keep
    ``int(n * (1 - ratio))`` of its ``n`` entries (kvpress's count), the first 4 and the most
    recent (StreamingLLM's rule)."""

    def prune(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        layer = cache.layers[module.layer_idx]
        keep = int(layer.keys.shape[-2] * (1 - ratio))
        if layer.keys.shape[-2] > keep:
            kept = torch.cat([torch.arange(4), torch.arange(layer.keys.shape[-2] - (keep - 4), layer.keys.shape[-2])])
            layer.keys, layer.values = layer.keys[:, :, kept], layer.values[:, :, kept]

    handles = [layer.self_attn.register_forward_hook(prune, with_kwargs=True) for layer in model.model.layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _make_press(name: str, ratio: float) -> Any:
    """``make_press`` for the worker: the pruning press, whatever the name."""
    return lambda model: _pruning(model, ratio)


def test_without_a_press_the_worker_answers_as_speckv_with_the_full_cache(target: LoadedModel) -> None:
    item = build_items(["niah_multikey"], [160], 1, 0, target.tokenizer)[0]
    engine = SpecKV(target, None, budget=NO_EVICTION)
    ids = kv_prompt_ids(engine, item)
    mine = worker.answer(target.model, target.tokenizer, ids, None, max_new_tokens=12)
    messages = [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": item.question}]
    theirs = engine.generate(messages, documents=list(item.documents), max_new_tokens=12)
    assert theirs.prompt_tokens == len(ids)
    assert mine["token_ids"] == theirs.token_ids
    assert mine["prefill_cache_entries"] == [len(ids)] * target.model.config.num_hidden_layers


def test_a_pruning_press_leaves_the_budget_and_decodes_at_true_positions(target: LoadedModel) -> None:
    ids = target.tokenizer("one two three four five six seven eight nine ten " * 8)["input_ids"]
    entries = 24
    ratio = worker.compression_ratio(len(ids), entries)
    result = worker.answer(target.model, target.tokenizer, ids, _make_press("x", ratio), max_new_tokens=5)
    layers = target.model.config.num_hidden_layers
    assert result["prefill_cache_entries"] == [entries] * layers
    assert result["visible_entries"] == [entries] * layers
    assert len(result["token_ids"]) == 5
    assert result["kv_bytes_end"] < result["kv_bytes_peak"]
    tokens, first, second = _decode_with_positions(target, ids, ratio, 5, true_positions=True)
    assert result["token_ids"] == tokens
    # As in SpecKV, the first answer token has read the whole prompt: the press prunes each
    # layer only after that layer's attention ran.
    with torch.inference_mode():
        full = target.model(input_ids=torch.tensor([ids])).logits[0, -1]
    assert torch.allclose(first, full, atol=1e-5)
    # Positions: the rest is decoded at the text's true positions; the positions a pruned
    # cache's (shorter) length implies give other logits.
    _, _, shifted = _decode_with_positions(target, ids, ratio, 5, true_positions=False)
    assert not torch.allclose(second, shifted)


def _decode_with_positions(
    target: LoadedModel, ids: list[int], ratio: float, steps: int, *, true_positions: bool
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """Greedy tokens after the pruning press, the prefill's last logits, and the first
    decode step's logits."""
    from transformers import DynamicCache

    model = target.model
    cache = DynamicCache()
    with torch.inference_mode():
        with _pruning(model, ratio):
            first = model(input_ids=torch.tensor([ids]), **cache_argument(model, cache)).logits[0, -1]
        tokens = [int(first.argmax())]
        second: torch.Tensor | None = None
        position = len(ids)
        for _ in range(steps - 1):
            extra = {"position_ids": torch.tensor([[position]])} if true_positions else {}
            logits = model(input_ids=torch.tensor([[tokens[-1]]]), **cache_argument(model, cache), **extra).logits
            second = logits[0, -1] if second is None else second
            tokens.append(int(logits[0, -1].argmax()))
            position += 1
    assert second is not None
    return tokens, first, second


def test_a_masking_press_is_counted_by_what_attention_still_sees(target: LoadedModel) -> None:
    ids = target.tokenizer("alpha beta gamma delta " * 10)["input_ids"]

    @contextlib.contextmanager
    def masking(model: Any) -> Iterator[None]:
        yield
        heads = model.config.num_key_value_heads
        for layer in model.model.layers:  # hide 10 entries of every head, as KVzip does
            seq = torch.arange(10).repeat(heads)
            layer.self_attn.masked_key_indices = (torch.zeros_like(seq), torch.arange(heads).repeat_interleave(10), seq)

    try:
        result = worker.answer(target.model, target.tokenizer, ids, masking, max_new_tokens=2)
    finally:
        for layer in target.model.model.layers:
            layer.self_attn.masked_key_indices = None
    assert result["prefill_cache_entries"][0] == len(ids)
    assert result["visible_entries"][0] == len(ids) - 10


def test_compression_ratio_leaves_exactly_the_entries_kvpress_keeps() -> None:
    for prompt_tokens in (40, 218, 1170, 2181, 8193):
        for entries in (32, 117, 293, 500, prompt_tokens, prompt_tokens + 5):
            ratio = worker.compression_ratio(prompt_tokens, entries)
            kept = int(prompt_tokens * (1 - ratio))  # kvpress's floor
            assert kept == min(entries, prompt_tokens)


def test_export_run_import_round_trip(tmp_path: Path, target: LoadedModel) -> None:
    config = _config(tmp_path)
    prompts_path = tmp_path / "prompts.jsonl"
    assert export_kv_prompts(config, target, prompts_path) == 2
    prompts = [json.loads(line) for line in prompts_path.read_text().splitlines()]
    items = build_items(["niah_multikey"], [160], 2, 0, target.tokenizer)
    engine = SpecKV(target, None, budget=NO_EVICTION)
    for prompt, item in zip(prompts, items, strict=True):
        assert prompt["input_ids"] == kv_prompt_ids(engine, item)
        assert prompt["entries"] == {f"{b:g}": kv_entries(len(prompt["input_ids"]), b) for b in config.budgets}
        assert prompt["answers"] == list(item.answers)
        assert prompt["target_dtype"] == "float32"  # the worker loads the target in it

    results = tmp_path / "kvpress.jsonl"
    made = worker.run_prompts(
        target.model,
        target.tokenizer,
        prompts,
        ["snapkv", "tova"],
        results,
        make_press=_make_press,
    )
    assert made == 2 * 2 * 2  # prompts x presses x budgets
    # Resumable: a second run appends nothing.
    assert (
        worker.run_prompts(target.model, target.tokenizer, prompts, ["snapkv", "tova"], results, make_press=_make_press)
        == 0
    )

    out = config.out
    assert import_kvpress([results], out) == 8
    assert import_kvpress([results], out) == 0  # already there
    records = list(load_records(out).values())
    assert {r["method"] for r in records} == {"kvpress_snapkv", "kvpress_tova"}
    for record in records:
        assert record["key"] == result_key(record["item_id"], record["method"], None, target.name, record["budget"])
        answers = next(p["answers"] for p in prompts if p["item_id"] == record["item_id"])
        assert record["kind"] == "kv" and record["target_dtype"] == "float32"
        assert record["em"] == exact_match(record["prediction"], answers)
        assert (
            record["kept_tokens"]
            == record["budget_tokens"]
            == kv_entries(record["full_prompt_tokens"], record["budget"])
        )
    assert {r["first_token"] for r in records} == {"full_prompt"}
    report = summarise(records, config.budgets)
    assert "kvpress_snapkv" in report and "the best kvpress press here" in report

    # Lines of the worker's earlier protocol (no first_token: the first answer token read
    # the pruned cache) are labelled apart and never silently mixed with these.
    earlier = tmp_path / "earlier.jsonl"
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    earlier.write_text(
        "".join(json.dumps({k: v for k, v in line.items() if k != "first_token"}) + "\n" for line in lines)
    )
    with pytest.raises(ValueError, match="two worker protocols"):
        import_kvpress([earlier], out)
    apart = tmp_path / "apart.jsonl"
    assert import_kvpress([earlier], apart) == 8
    assert {label(r) for r in load_records(apart).values()} == {
        "kvpress_snapkv (first token from the pruned cache)",
        "kvpress_tova (first token from the pruned cache)",
    }


def test_import_refuses_what_the_worker_did_not_write(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"lacks \['item'"):
        kvpress_records([{"key": "x", "press": "snapkv"}])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": 1\n{"key": 2}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: not a JSON line"):
        import_kvpress([bad], tmp_path / "out.jsonl")
    with pytest.raises(FileNotFoundError, match="kvpress_worker.py"):
        import_kvpress([tmp_path / "missing.jsonl"], tmp_path / "out.jsonl")


def test_kvpress_rows_are_refused_by_a_normal_run(tmp_path: Path) -> None:
    config = _config(tmp_path, methods=("kvpress_snapkv",))
    with pytest.raises(ValueError, match="--export-kv-prompts"):
        config.validate()
    assert "kvpress_kvzip" in KVPRESS_METHODS
    with pytest.raises(SystemExit, match="unknown press 'h2o'"):
        worker.build_press("h2o", 0.5)


def test_the_cli_exports_and_imports(tmp_path: Path, draft_dir: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from typer.testing import CliRunner

    from specrag.cli import app

    prompts_path, results, out = tmp_path / "prompts.jsonl", tmp_path / "kvpress.jsonl", tmp_path / "bench.jsonl"
    common = ["bench", "--target", draft_dir, "--tasks", "niah_single", "--lengths", "160", "--limit", "1"]
    exported = CliRunner().invoke(app, [*common, "--budgets", "0.5", "--export-kv-prompts", str(prompts_path)])
    assert exported.exit_code == 0, exported.output
    prompts = [json.loads(line) for line in prompts_path.read_text().splitlines()]
    assert len(prompts) == 1 and set(prompts[0]["entries"]) == {"0.5"}

    model = AutoModelForCausalLM.from_pretrained(draft_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(draft_dir)
    worker.run_prompts(model, tokenizer, prompts, ["snapkv"], results, make_press=_make_press)
    imported = CliRunner().invoke(app, [*common, "--import-kvpress", str(results), "--out", str(out)])
    assert imported.exit_code == 0, imported.output
    assert "1 kvpress results added" in imported.output
    assert [r["method"] for r in load_records(out).values()] == ["kvpress_snapkv"]
