"""A corrupted copy of the real smollm2-135m bundle is refused, never loaded into NaN scores.

The bundle is pulled into the default specrag home as in test_bundles.py (CI warms it) and
copied into a fresh home per test; only the copy's ``model.safetensors`` is written to
(the other files are hard links where the filesystem allows), so the shared cache stays
intact. The same faults on a tiny bundle are in tests/unit/test_faults_models.py.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from specrag.cli import app
from specrag.core import models
from specrag.core.bundles import MARKER_NAME, BundleCorruptError, check_bundle, pull_bundle, record_manifest
from specrag.core.models import load_model

pytestmark = pytest.mark.real

DRAFT = "smollm2-135m"
EIGHT_MB = 8 * 2**20


@pytest.fixture(scope="module")
def pulled() -> Path:
    return pull_bundle(DRAFT, progress=False)


def _link_or_copy(source: str, dest: str) -> None:
    try:
        os.link(source, dest)
    except OSError:  # another filesystem, or no hard links here
        shutil.copy2(source, dest)


@pytest.fixture
def copy(pulled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The real bundle in a fresh SPECRAG_HOME, as converted before manifests existed."""
    folder = tmp_path / "home" / "bundles" / DRAFT
    shutil.copytree(pulled, folder, copy_function=_link_or_copy, ignore=shutil.ignore_patterns("model.safetensors"))
    shutil.copyfile(pulled / "model.safetensors", folder / "model.safetensors")
    marker = json.loads((pulled / MARKER_NAME).read_text())
    marker.pop("files", None)
    (folder / MARKER_NAME).unlink()  # a hard link: replace it, never write through it
    (folder / MARKER_NAME).write_text(json.dumps(marker))
    monkeypatch.setenv("SPECRAG_HOME", str(tmp_path / "home"))
    yield folder
    for key in [key for key in models._CACHE if key[0].startswith(str(tmp_path))]:
        del models._CACHE[key]  # 135M weights per test would otherwise stay resident


def scribble(path: Path, count: int = EIGHT_MB) -> None:
    """The issue's fault: 8 MB of random bytes written into the middle of the weights."""
    with path.open("r+b") as handle:
        handle.seek(path.stat().st_size // 2 - count // 2)
        handle.write(os.urandom(count))


def truncate(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_first_load_records_the_manifest_then_random_bytes_are_refused(copy: Path) -> None:
    assert check_bundle(DRAFT) == ("unrecorded", None)
    assert load_model(DRAFT, device="cpu", dtype="bf16").num_layers == 30
    assert check_bundle(DRAFT) == ("ok", None), "the first load checked the weights and recorded them"
    scribble(copy / "model.safetensors")
    with pytest.raises(BundleCorruptError) as caught:
        load_model(DRAFT, device="cpu", dtype="bf16")
    message = one_line(str(caught.value))
    assert "model.safetensors has a different sha256" in message
    assert f"specrag models pull {DRAFT} --force" in message
    listed = CliRunner().invoke(app, ["models", "list"])
    assert "CORRUPT" in next(line for line in listed.stdout.splitlines() if line.startswith(DRAFT))
    verified = CliRunner().invoke(app, ["models", "verify", DRAFT])
    assert verified.exit_code == 1 and "--force" in one_line(verified.stderr)


def test_random_bytes_in_a_pre_manifest_bundle_are_refused(copy: Path) -> None:
    scribble(copy / "model.safetensors")
    with pytest.raises(BundleCorruptError, match="NaN or infinity") as caught:
        load_model(DRAFT, device="cpu", dtype="bf16")
    assert f"specrag models pull {DRAFT} --force" in one_line(str(caught.value))
    assert check_bundle(DRAFT) == ("unrecorded", None), "nothing vouches for the damaged weights"


def test_truncated_weights_are_refused_by_size(copy: Path) -> None:
    assert record_manifest(copy)  # the intact copy's manifest, as its conversion records it
    truncate(copy / "model.safetensors")
    with pytest.raises(BundleCorruptError, match="model.safetensors has 134530276 bytes, 269060552") as caught:
        load_model(DRAFT, device="cpu", dtype="bf16")
    assert "--force" in one_line(str(caught.value))


def test_truncated_pre_manifest_weights_are_one_line_not_a_safetensors_traceback(copy: Path) -> None:
    truncate(copy / "model.safetensors")
    with pytest.raises(BundleCorruptError, match="no longer loads: SafetensorError") as caught:
        load_model(DRAFT, device="cpu", dtype="bf16")
    assert "--force" in one_line(str(caught.value))
