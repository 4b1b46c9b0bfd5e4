"""The GPU path: SpecPC on CUDA keeps what it keeps on the CPU, batched and with prefix reuse;
SpecKV's overlapped draft on its own CUDA stream changes no token.

Skipped without a CUDA device (CI has none); ``benchmarks/gpu_check.sh`` runs it on a GPU
machine. Tiny fp32 models on both devices, so agreement is a matter of kernel rounding only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speckv_inputs import PROMPT
from specrag import CompressRequest, LoadedModel, SpecKV, SpecPC, build_tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DOCS = [
    "The Brennmoor viaduct was built between 1884 and 1886. It has fourteen arches.",
    "The smaller Cold Beck bridge crosses a side stream on nine arches.",
]


def test_cuda_scores_and_keeps_what_the_cpu_does() -> None:
    cpu_model = build_tiny_model("qwen2")
    twin = build_tiny_model("qwen2")  # the same seeded weights, moved to the GPU
    gpu_model = LoadedModel(model=twin.model.to("cuda"), tokenizer=twin.tokenizer, name="tiny-qwen2-cuda")
    assert next(gpu_model.model.parameters()).is_cuda
    cpu = SpecPC(cpu_model, embedder=None, window=8, progress=False)
    gpu = SpecPC(gpu_model, embedder=None, window=8, progress=False)
    for a, b in zip(cpu.score(DOCS, "How many arches?").scores, gpu.score(DOCS, "How many arches?").scores):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    assert cpu.compress(DOCS, "How many arches?").texts == gpu.compress(DOCS, "How many arches?").texts
    requests = [CompressRequest(documents=DOCS, question=q) for q in ("How many arches?", "When was it built?")]
    batched = gpu.compress_batch(requests * 4)  # batch_size=None: 8 on a GPU
    assert [r.texts for r in batched] == [gpu.compress(r.documents, r.question).texts for r in requests * 4]
    assert gpu.prefix_cache.hits >= 1  # the second question over the same documents reused the first's cache


def test_an_overlapped_draft_on_its_own_stream_changes_no_token() -> None:
    def on_gpu(arch: str, **overrides: object) -> LoadedModel:
        twin = build_tiny_model(arch, **overrides)
        return LoadedModel(model=twin.model.to("cuda"), tokenizer=twin.tokenizer, name=f"{twin.name}-cuda")

    target, draft = on_gpu("llama"), on_gpu("llama", num_hidden_layers=2)
    results = [
        SpecKV(target, draft, budget=40, window=8, overlap_draft=flag).generate(PROMPT, max_new_tokens=12)
        for flag in (False, True)
    ]
    assert results[1].draft_overlapped and results[1].lookahead_tokens > 0
    assert results[0].token_ids == results[1].token_ids
    assert results[0].prefill_cache_entries == results[1].prefill_cache_entries
