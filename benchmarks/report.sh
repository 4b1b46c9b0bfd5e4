#!/usr/bin/env bash
# Reproduce the committed benchmark report (docs/benchmarks.md, "Benchmark suite") in one go.
#
# Every command is resumable: results already in the JSONL files are skipped, so re-running
# after an interruption continues where it stopped, and running it on the committed JSONL
# files only rebuilds the tables and plots. From scratch this is many CPU hours (the 1.5B
# target answering dominates); the committed runs were split over parallel processes.
#
#   bash benchmarks/report.sh            # everything, then docs/bench-tables.md and docs/img/*.png
#   TABLES_ONLY=1 bash benchmarks/report.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
B=".venv/bin/specrag bench --threads 1 --target qwen2.5-coder-1.5b --seed 0"
A="$B --answer --max-new-tokens 16"
D=docs/img

if [ -z "${TABLES_ONLY:-}" ]; then
  # Quoref 2k, answer contained (draft-only methods; no target generation)
  $B --tasks quoref --lengths 2048 --limit 80 --draft smollm2-135m \
     --methods truncate,random,sentence,specpc,specpc_snap,specpc_fused --out $D/bench-contained.jsonl
  $B --tasks quoref --lengths 2048 --limit 40 --draft smollm2-135m --methods selfinfo,window --out $D/bench-contained.jsonl
  $B --tasks quoref --lengths 2048 --limit 20 --draft qwen2.5-coder-0.5b \
     --methods selfinfo,window,specpc,specpc_snap,specpc_fused --out $D/bench-contained.jsonl
  $B --tasks quoref --lengths 2048 --limit 20 --methods oracle --out $D/bench-contained.jsonl
  # Multi-hop 2k (the second fact shares no entity with the question): evidence kept, with the peers
  $B --tasks multihop --lengths 2048 --limit 80 --draft smollm2-135m \
     --methods truncate,sentence,lc_filter,bm25,specpc,specpc_snap,specpc_fused --out $D/bench-multihop.jsonl
  # 0.2's per-family comparison: every peer through its own code and SpecPC's rows, one draft
  # pass per item shared by the SpecPC rows (specpc = 0.1's default, specpc_bridge = 0.2's)
  P=sentence,lc_filter,bm25,li_optimizer,specpc,specpc_max,specpc_bridge
  $B --tasks quoref --lengths 2048 --limit 80 --draft smollm2-135m --methods $P --out $D/bench-pc-quoref.jsonl
  $B --tasks multihop --lengths 2048 --limit 80 --draft smollm2-135m --methods $P --out $D/bench-pc-multihop.jsonl
  $B --tasks niah_single,niah_multikey,niah_multivalue,vt --lengths 2048 --limit 30 --draft smollm2-135m \
     --methods ${P/li_optimizer,/} --out $D/bench-pc-ruler.jsonl
  # Quoref 8k, answer contained
  $B --tasks quoref --lengths 8192 --limit 5 --draft smollm2-135m \
     --methods truncate,random,sentence,specpc,specpc_snap --out $D/bench-8k.jsonl
  # RULER-style synthetic tasks, 2k, answer contained
  $B --tasks niah_single,niah_multikey,niah_multivalue,vt --lengths 2048 --limit 10 --draft smollm2-135m \
     --methods truncate,random,sentence,selfinfo,window,specpc,specpc_snap,specpc_fused --out $D/bench-ruler.jsonl
  # The target answers: EM/F1, time to first token, decode speed, KV bytes, peak memory
  $A --tasks quoref --lengths 2048 --limit 20 --draft smollm2-135m --budgets 0.1,0.25 \
     --methods full,sentence,specpc,specpc_snap,specpc_fused --out $D/bench-answers.jsonl
  $A --tasks quoref --lengths 2048 --limit 10 --draft smollm2-135m --budgets 0.1,0.25 \
     --methods truncate --out $D/bench-answers.jsonl
  $A --tasks quoref --lengths 4096 --limit 5 --draft smollm2-135m --budgets 0.25 \
     --methods full,specpc --out $D/bench-ttft.jsonl
  # KV-cache methods at a tenth of the prompt
  $A --tasks niah_multikey --lengths 2048 --limit 4 --draft qwen2.5-coder-0.5b --budgets 0.1 \
     --methods kv_full,kv_streaming,kv_snapkv,kv_speckv,kv_oracle,kv_speckv_pc --out $D/bench-kv.jsonl
  $A --tasks niah_multikey --lengths 2048 --limit 10 --draft qwen2.5-coder-0.5b --budgets 0.1 \
     --methods kv_full,kv_streaming,kv_snapkv,kv_speckv --out $D/bench-kv.jsonl
  # Short contexts (512 tokens) and the target's multi-hop answers.
  $B --tasks quoref,multihop --lengths 512 --limit 80 \
     --methods sentence,lc_filter,bm25,specpc,specpc_bridge --out $D/bench-pc-short.jsonl
  $A --tasks multihop --lengths 2048 --limit 30 --budgets 0.1 \
     --methods sentence,specpc_bridge --out $D/bench-answers-multihop.jsonl
  # SpecKV next to kvpress (float32 here; docs/kvpress.md): the 135M draft's rows, the
  # baselines, then kvpress's presses in their own environment on the same token ids.
  K="--tasks niah_multikey --lengths 2048 --budgets 0.1"
  $A $K --limit 10 --draft smollm2-135m --methods kv_speckv,kv_speckv_pc --out $D/bench-kv-fp32.jsonl
  $A $K --limit 7 --methods kv_full,kv_snapkv --out $D/bench-kv-fp32.jsonl
  $A --tasks quoref --lengths 2048 --limit 7 --budgets 0.1 --draft smollm2-135m \
     --methods kv_snapkv,kv_speckv --out $D/bench-kv-fp32.jsonl
  $B $K --limit 10 --export-kv-prompts kv-prompts.jsonl
  [ -x .venv-kvpress/bin/python ] || bash benchmarks/kvpress_env.sh
  .venv-kvpress/bin/python src/specrag/bench/kvpress_worker.py --threads 1 \
     --model "$(.venv/bin/python -c 'from specrag.core.bundles import bundle_dir; print(bundle_dir("qwen2.5-coder-1.5b"))')" \
     --prompts kv-prompts.jsonl \
     --presses snapkv,expected_attention,streaming_llm,tova,kvzip --out $D/kvpress-multikey-2k.jsonl
  $B --budgets 0.1 --import-kvpress $D/kvpress-multikey-2k.jsonl --out $D/bench-kv-fp32.jsonl
  # SpecKV at 4k (bfloat16 on a CPU with bf16 instructions): multi-key and Quoref, the 135M
  # draft, kvpress's three strongest presses at 2k on the multi-key items (two on Quoref), a lookahead sweep.
  K4="--lengths 4096 --budgets 0.1 --draft smollm2-135m"
  $A $K4 --tasks niah_multikey --limit 12 --methods kv_full,kv_snapkv,kv_speckv,kv_speckv_pc --out $D/bench-kv-4k.jsonl
  $A $K4 --tasks quoref --limit 14 --methods kv_full,kv_snapkv,kv_speckv,kv_speckv_pc --out $D/bench-kv-4k.jsonl
  for n in 8 12; do
    $A $K4 --tasks niah_multikey --limit 12 --methods kv_speckv --lookahead $n --out $D/bench-kv-4k.jsonl
  done
  $B --tasks niah_multikey --lengths 4096 --budgets 0.1 --limit 12 --export-kv-prompts kv-prompts-4k.jsonl
  .venv-kvpress/bin/python src/specrag/bench/kvpress_worker.py --threads 1 \
     --model "$(.venv/bin/python -c 'from specrag.core.bundles import bundle_dir; print(bundle_dir("qwen2.5-coder-1.5b"))')" \
     --prompts kv-prompts-4k.jsonl --presses snapkv,tova,kvzip --out $D/kvpress-multikey-4k.jsonl
  $B --budgets 0.1 --import-kvpress $D/kvpress-multikey-4k.jsonl --out $D/bench-kv-4k.jsonl
  $B --tasks quoref --lengths 4096 --budgets 0.1 --limit 14 --export-kv-prompts kv-prompts-quoref-4k.jsonl
  .venv-kvpress/bin/python src/specrag/bench/kvpress_worker.py --threads 1 \
     --model "$(.venv/bin/python -c 'from specrag.core.bundles import bundle_dir; print(bundle_dir("qwen2.5-coder-1.5b"))')" \
     --prompts kv-prompts-quoref-4k.jsonl --presses snapkv,tova --out $D/kvpress-quoref-4k.jsonl
  $B --budgets 0.1 --import-kvpress $D/kvpress-quoref-4k.jsonl --out $D/bench-kv-4k.jsonl
  # The draft beside the prefill: one process alone (the overlapped draft takes the second core)
  $A $K4 --tasks niah_multikey --limit 8 --methods kv_full,kv_speckv,kv_speckv_overlap --out $D/bench-kv-overlap-4k.jsonl
  # After the LM-head fix: every variant's own cost (no shared prefill), multi-key 4k, N = 8
  $A $K4 --tasks niah_multikey --limit 8 \
     --methods kv_full,kv_snapkv,kv_speckv,kv_speckv_overlap,kv_speckv_pc --out $D/bench-kv-4k-fix.jsonl
  # N = 40 multi-key and the RULER tasks at 4k, budgets 1/10 and 1/4, one target prefill per item
  # for our rows (--share-prefill), kvpress's TOVA beside them on the same token ids
  KVP=".venv-kvpress/bin/python src/specrag/bench/kvpress_worker.py --threads 1 --presses tova"
  MODEL="$(.venv/bin/python -c 'from specrag.core.bundles import bundle_dir; print(bundle_dir("qwen2.5-coder-1.5b"))')"
  # kv_beside_tova OURS TOVA PROMPTS BENCH-ARGS...: our rows into OURS, the same prompts
  # exported to PROMPTS, kvpress's TOVA on them into TOVA, its answers imported into OURS.
  kv_beside_tova() {
    local ours=$1 tova=$2 prompts=$3
    shift 3
    $A "$@" --share-prefill --methods kv_full,kv_snapkv,kv_speckv --out "$ours"
    $B "$@" --export-kv-prompts "$prompts"
    $KVP --model "$MODEL" --prompts "$prompts" --out "$tova"
    $B "$@" --import-kvpress "$tova" --out "$ours"
  }
  S4="--lengths 4096 --budgets 0.1,0.25 --draft smollm2-135m"
  kv_beside_tova $D/bench-kv-4k-n40.jsonl $D/kvpress-multikey-4k-n40.jsonl kv-prompts-mk4k.jsonl \
    $S4 --tasks niah_multikey --limit 40
  for spec in "niah_multivalue 40" "vt 8" "niah_single 32"; do
    set -- $spec
    kv_beside_tova $D/bench-kv-ruler4k.jsonl $D/kvpress-ruler4k.jsonl kv-prompts-$1-4k.jsonl \
      $S4 --tasks $1 --limit $2
  done
  # Quoref at 4k and a quarter of the cache, the same 14 items as the 1/10 run
  kv_beside_tova $D/bench-kv-quoref4k-quarter.jsonl $D/kvpress-quoref-4k-quarter.jsonl \
    kv-prompts-quoref-4k-quarter.jsonl --lengths 4096 --budgets 0.25 --draft smollm2-135m --tasks quoref --limit 14
  # Quoref at 4k, N = 40, both budgets (the committed TOVA answers for items 0-13 are those
  # of the two 14-item runs above, on the same prompts)
  kv_beside_tova $D/bench-kv-quoref4k-n40.jsonl $D/kvpress-quoref4k-n40.jsonl kv-prompts-quoref4k-n40.jsonl \
    $S4 --tasks quoref --limit 40
  # Multi-key at 8k: --lengths 7936 gives 8057-8076 target tokens and keeps what the 135M
  # draft reads (at most 7984 of its own tokens) inside its 8192 positions with the
  # lookahead (TOVA at 1/10 and at 1/4 ran in different sessions, hence two exports)
  M8="--lengths 7936 --draft smollm2-135m --tasks niah_multikey --limit 40"
  $A $M8 --budgets 0.1,0.25 --share-prefill --methods kv_full,kv_snapkv,kv_speckv --out $D/bench-kv-mk8k.jsonl
  for budget in 0.1 0.25; do
    $B $M8 --budgets $budget --export-kv-prompts kv-prompts-mk8k-$budget.jsonl
    $KVP --model "$MODEL" --prompts kv-prompts-mk8k-$budget.jsonl --out $D/kvpress-mk8k.jsonl
    $B $M8 --budgets $budget --import-kvpress $D/kvpress-mk8k.jsonl --out $D/bench-kv-mk8k.jsonl
  done
  # Quoref at 8k: its prompts run from 6.6k to 9.9k target tokens, and only the 19 of 40
  # items whose prompt the 135M draft reads whole (with the lookahead) in its 8192 positions
  # are run, for every row (the committed rows ran as two processes; TOVA's two budgets in
  # different sessions)
  Q8="--lengths 8192 --draft smollm2-135m --tasks quoref --limit 40"
  Q8="$Q8 --items $(.venv/bin/python benchmarks/draft_fits.py --tasks quoref --lengths 8192 --limit 40 --draft smollm2-135m)"
  $A $Q8 --budgets 0.1,0.25 --share-prefill --methods kv_full,kv_snapkv,kv_speckv --out $D/bench-kv-quoref8k.jsonl
  for budget in 0.1 0.25; do
    $B $Q8 --budgets $budget --export-kv-prompts kv-prompts-quoref8k-$budget.jsonl
    $KVP --model "$MODEL" --prompts kv-prompts-quoref8k-$budget.jsonl --out $D/kvpress-quoref8k.jsonl
    $B $Q8 --budgets $budget --import-kvpress $D/kvpress-quoref8k.jsonl --out $D/bench-kv-quoref8k.jsonl
  done
  # Quoref at 8k, the other 21 items (those the 135M draft cannot read), SpecKV with the 0.5B
  # Qwen draft (32768 positions, the target's tokenizer); the committed rows ran as two
  # processes, the first 11 and the last 10 of those items
  QL="--lengths 8192 --draft qwen2.5-coder-0.5b --tasks quoref --limit 40"
  QL="$QL --items $(.venv/bin/python benchmarks/draft_fits.py --tasks quoref --lengths 8192 --limit 40 --draft smollm2-135m --refused)"
  kv_beside_tova $D/bench-kv-quoref8k-long.jsonl $D/kvpress-quoref8k-long.jsonl kv-prompts-quoref8k-long.jsonl \
    $QL --budgets 0.1,0.25
  # SpecKV-PC on the same items with the 135M draft: SpecPC scores the documents in pieces of
  # its window, so the draft then reads a prompt it can (the committed rows: two processes)
  $A ${QL/qwen2.5-coder-0.5b/smollm2-135m} --budgets 0.1,0.25 --methods kv_speckv_pc --out $D/bench-kv-quoref8k-long.jsonl
  # Multi-value at 8k (--lengths 7936, as multi-key: every item fits the 135M draft with its
  # 48-token lookahead), N = 40, both budgets (the committed rows ran as four processes,
  # items 0-9, 10-19, 20-29 and 30-39), then variable tracking at 8k, N = 8
  kv_beside_tova $D/bench-kv-ruler8k.jsonl $D/kvpress-ruler8k.jsonl kv-prompts-niah_multivalue-8k.jsonl \
    --lengths 7936 --budgets 0.1,0.25 --draft smollm2-135m --tasks niah_multivalue --limit 40
  kv_beside_tova $D/bench-kv-ruler8k.jsonl $D/kvpress-ruler8k.jsonl kv-prompts-vt-8k.jsonl \
    --lengths 7936 --budgets 0.1,0.25 --draft smollm2-135m --tasks vt --limit 8
  # Single needle at 8k (--lengths 7936, as multi-key), N = 20; the committed TOVA rows ran
  # one budget at a time, in two sessions (prompts exported with --budgets 0.1, then 0.25)
  kv_beside_tova $D/bench-kv-niah8k.jsonl $D/kvpress-niah8k.jsonl kv-prompts-niah_single-8k.jsonl \
    --lengths 7936 --budgets 0.1,0.25 --draft smollm2-135m --tasks niah_single --limit 20
fi

.venv/bin/python - <<'EOF'
from pathlib import Path

from specrag.bench.suite import report_tables

d = Path("docs/img")
runs = [
    ("Quoref 2k: answer contained, every draft", [d / "bench-contained.jsonl"], (0.1, 0.25, 0.5), "bench-contained"),
    ("Quoref 8k: answer contained", [d / "bench-8k.jsonl"], (0.1, 0.25, 0.5), "bench-8k"),
    ("Multi-hop 2k: answer contained / both facts kept", [d / "bench-multihop.jsonl"], (0.1, 0.25, 0.5), "bench-multihop"),
    ("RULER-style tasks, 2k: answer contained", [d / "bench-ruler.jsonl"], (0.1, 0.25, 0.5), "bench-ruler"),
    ("0.2 per family: Quoref 2k", [d / "bench-pc-quoref.jsonl"], (0.1, 0.25, 0.5), "bench-pc-quoref"),
    ("0.2 per family: multi-hop 2k", [d / "bench-pc-multihop.jsonl"], (0.1, 0.25, 0.5), "bench-pc-multihop"),
    ("0.2 per family: RULER-style tasks 2k", [d / "bench-pc-ruler.jsonl"], (0.1, 0.25, 0.5), "bench-pc-ruler"),
    ("The target answers (EM/F1) at 2k, time to first token at 2k and 4k",
     [d / "bench-answers.jsonl", d / "bench-ttft.jsonl"], (0.1, 0.25), "bench-answers"),
    ("KV-cache methods, niah_multikey 2k", [d / "bench-kv.jsonl"], (0.1,), "bench-kv"),
    ("KV-cache methods and kvpress presses, niah_multikey 2k, float32", [d / "bench-kv-fp32.jsonl"], (0.1,),
     "bench-kv-fp32"),
    ("KV-cache methods and kvpress presses, niah_multikey and Quoref 4k, bfloat16", [d / "bench-kv-4k.jsonl"],
     (0.1,), "bench-kv-4k"),
]
parts = [
    "# Benchmark tables\n",
    "Generated by `TABLES_ONLY=1 bash benchmarks/report.sh` from the per-item JSONL files in",
    "`docs/img/`; the summary, the machine and the reading of these numbers are in",
    "[benchmarks.md](benchmarks.md#benchmark-suite). Rates: 95 % Wilson intervals; means: 95 %",
    "bootstrap intervals; `+w/-l`: items only the row / only the reference got, with the exact",
    "sign test's p.\n",
]
for title, paths, budgets, stem in runs:
    if all(path.exists() for path in paths):
        parts.append(f"## {title}\n")
        parts.append(report_tables(paths, budgets, d, stem=stem))
Path("docs/bench-tables.md").write_text("\n".join(parts), encoding="utf-8")
print("wrote docs/bench-tables.md")
EOF
.venv/bin/python benchmarks/pc_families.py $D/bench-pc-quoref.jsonl $D/bench-pc-multihop.jsonl $D/bench-pc-ruler.jsonl > docs/bench-pc-families.md
.venv/bin/python benchmarks/pc_families.py $D/bench-pc-short.jsonl > docs/bench-pc-short.md
.venv/bin/python benchmarks/kv_side_by_side.py $D/bench-kv-fp32.jsonl --budget 0.1
for task in niah_multikey quoref; do
  .venv/bin/python benchmarks/kv_side_by_side.py $D/bench-kv-4k.jsonl --budget 0.1 --task $task
done
.venv/bin/python benchmarks/kv_side_by_side.py $D/bench-kv-4k.jsonl --budget 0.1 --task niah_multikey --lookahead-rows
.venv/bin/python benchmarks/kv_side_by_side.py $D/bench-kv-4k-fix.jsonl --budget 0.1
.venv/bin/python benchmarks/kv_side_by_side.py $D/bench-kv-4k-fix.jsonl --budget 0.1 --time-reference kv_snapkv
for budget in 0.1 0.25; do
  .venv/bin/python benchmarks/kv_side_by_side.py $D/bench-kv-4k-n40.jsonl --budget $budget
  .venv/bin/python benchmarks/kv_side_by_side.py $D/bench-kv-ruler4k.jsonl --budget $budget --task niah_single
  for task in niah_multivalue vt; do
    .venv/bin/python benchmarks/kv_side_by_side.py $D/bench-kv-ruler4k.jsonl --budget $budget --task $task \
      --metric answer_contained
  done
done
.venv/bin/python benchmarks/kv_side_by_side.py $D/bench-kv-quoref4k-quarter.jsonl --budget 0.25 --task quoref
for budget in 0.1 0.25; do
  .venv/bin/python benchmarks/kv_side_by_side.py $D/bench-kv-mk8k.jsonl --budget $budget
  .venv/bin/python benchmarks/kv_side_by_side.py $D/bench-kv-quoref4k-n40.jsonl --budget $budget
  .venv/bin/python benchmarks/kv_side_by_side.py $D/bench-kv-quoref8k.jsonl --budget $budget
  .venv/bin/python benchmarks/kv_side_by_side.py $D/bench-kv-quoref8k-long.jsonl --budget $budget
  for task in niah_multivalue vt; do
    .venv/bin/python benchmarks/kv_side_by_side.py $D/bench-kv-ruler8k.jsonl --budget $budget --task $task --metric answer_contained
  done
  .venv/bin/python benchmarks/kv_side_by_side.py $D/bench-kv-niah8k.jsonl --budget $budget
done
# every KV cell above in one table (docs/benchmarks.md, "SpecKV against kvpress, every cell")
.venv/bin/python benchmarks/kv_summary.py --dir $D
