"""Quoref questions from the BIG-bench sdist on PyPI, and multi-document items built from them.

Why this source
---------------
These machines reach PyPI but no dataset hub. The ``bigbench==1.0.0`` sdist on PyPI carries
BIG-bench's task files, among them Quoref's answer-generation task (via Natural
Instructions): 6,500 questions over 2,942 English Wikipedia passages whose answers are
verbatim spans of the passage. Verbatim answers are what prompt compression needs: a
compressor succeeds on a question exactly when the answer span survives in its output.
:func:`fetch_bigbench` downloads the sdist with pip, checks its pinned sha256 and extracts
only the one task file; nothing is installed and no BIG-bench code is run by us.

Credits and licences
--------------------
- BIG-bench, https://github.com/google/BIG-bench, Apache-2.0.
- Quoref (Dasigi et al., 2019, "Quoref: A Reading Comprehension Dataset with Questions
  Requiring Coreferential Reasoning"), CC BY 4.0, reached through Natural Instructions
  (Mishra et al., 2022) as packaged by BIG-bench.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from tqdm.auto import tqdm

from ..core._pip import pip_download
from ..core.bundles import specrag_home
from .metrics import answer_contained

logger = logging.getLogger("specrag")

BIGBENCH_REQUIREMENT = "bigbench==1.0.0"
BIGBENCH_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
QUOREF_MEMBER_SUFFIX = "bigbench/benchmark_tasks/natural_instructions/subtask002_quoref_answer_generation/task.json"
"""Tail of the task file's path inside the sdist (the top folder carries the version)."""

_CHUNK_BYTES = 8 * 1024 * 1024
# Greedy passage: the split is at the *last* "\nQuestion:", passages may contain newlines.
_INPUT_PATTERN = re.compile(r"^\s*Passage:(?P<passage>.*)\nQuestion:(?P<question>.*)$", re.DOTALL)


class QuorefDataError(RuntimeError):
    """The BIG-bench sdist could not be fetched or does not hold a usable Quoref task."""


class QuorefChecksumError(QuorefDataError):
    """The downloaded sdist does not have the pinned sha256, so nothing from it is used."""


@dataclass(frozen=True)
class QuorefExample:
    """One Quoref question with the passage it is about.

    Attributes
    ----------
    question
        The question text.
    passage
        The Wikipedia passage that contains the answer verbatim.
    answers
        Answer spans. One for most questions; several when the question asks for several
        things ("What are the last names of the two officers ...?"), in which case *all*
        of them make up the answer.
    """

    question: str
    passage: str
    answers: tuple[str, ...]

    @property
    def multi_span(self) -> bool:
        """True when the answer consists of several spans."""
        return len(self.answers) > 1


@dataclass(frozen=True)
class MultiDocItem:
    """A question over several passages, only one of which (the gold one) answers it.

    This is the shape of a RAG prompt: retrieval returns a few passages, most of them
    distractors, and a compressor has to find the part of the gold passage that matters.
    """

    question: str
    documents: tuple[str, ...]
    gold_index: int
    answers: tuple[str, ...]

    @property
    def gold_document(self) -> str:
        """The passage that contains the answer."""
        return self.documents[self.gold_index]


# ---------------------------------------------------------------------------- fetching
def quoref_cache_path() -> Path:
    """Where the extracted Quoref task file is cached (rebuildable from PyPI at any time)."""
    return specrag_home() / "data" / "quoref.json"


def _pip_download(dest: Path) -> Path:
    """Download the pinned BIG-bench sdist into ``dest`` with this interpreter's pip.

    ``--no-deps`` keeps pip from resolving BIG-bench's heavy requirements, which are not
    needed to read a JSON file; ``--no-binary=:all:`` insists on the sdist, the artefact the
    pinned hash describes.
    """
    pip_download(BIGBENCH_REQUIREMENT, dest, artefact="sdist", error=QuorefDataError, size_hint="358 MB")
    found = sorted(dest.glob("bigbench-*.tar.gz"))
    if not found:
        raise QuorefDataError(f"pip reported success but left no bigbench sdist in {dest}")
    return found[0]


def _sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (the sdist is 358 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_sdist(sdist: Path) -> None:
    """Refuse an sdist whose hash is not the pinned one (e.g. a re-uploaded release)."""
    actual = _sha256(sdist)
    if actual != BIGBENCH_SHA256:
        raise QuorefChecksumError(f"{sdist.name} has sha256 {actual}, expected {BIGBENCH_SHA256}; refusing to use it")


def _read_quoref_member(sdist: Path) -> bytes:
    """Return the Quoref task file's bytes from the gzipped sdist without unpacking the rest.

    The tarball is read as a stream and abandoned as soon as the member has been read, so
    at most one pass over the archive is made and nothing else touches the disk.
    """
    with tarfile.open(sdist, mode="r|gz") as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(QUOREF_MEMBER_SUFFIX):
                handle = archive.extractfile(member)
                if handle is None:  # pragma: no cover - isfile() members always have data
                    break
                return handle.read()
    raise QuorefDataError(f"{sdist.name} holds no member ending in {QUOREF_MEMBER_SUFFIX!r}")


def _check_task_json(raw: bytes) -> None:
    """Make sure the bytes are a BIG-bench task with examples before they are cached."""
    try:
        task = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise QuorefDataError(f"the Quoref task file is not valid JSON: {error}") from error
    if not isinstance(task, dict) or not isinstance(task.get("examples"), list):
        raise QuorefDataError("the Quoref task file has no 'examples' list")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def _scratch_dir() -> Iterator[Path]:
    """A temporary folder under the specrag home, removed however the block exits."""
    parent = specrag_home() / "tmp"
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="bigbench-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fetch_bigbench(progress: bool = True, *, force: bool = False) -> Path:
    """Make the Quoref task file available offline and return its cached path.

    Downloads ``bigbench==1.0.0`` (a 358 MB sdist) with pip, verifies its sha256, extracts
    only the Quoref task JSON to ``specrag_home()/data/quoref.json`` and deletes the sdist.

    Parameters
    ----------
    progress
        Show a tqdm bar over the steps (download, verify, extract).
    force
        Fetch again even if a cached copy exists.

    Raises
    ------
    QuorefChecksumError
        If the sdist's sha256 is not the pinned one; nothing is cached.
    QuorefDataError
        If pip fails or the sdist holds no usable Quoref task.

    Notes
    -----
    A file lock serialises concurrent fetches across processes; a second caller waits and
    then reuses the first one's file. The file is written atomically, so a reader never
    sees a partial one.
    """
    target = quoref_cache_path()
    if target.is_file() and not force:
        return target
    lock_path = specrag_home() / "locks" / "quoref.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_path):
        if target.is_file() and not force:
            logger.info("quoref was fetched by another process")
            return target
        with (
            tqdm(total=3, desc="fetch quoref", unit="step", disable=not progress) as bar,
            _scratch_dir() as work,
        ):
            bar.set_postfix_str(f"download {BIGBENCH_REQUIREMENT}")
            sdist = _pip_download(work)
            bar.update()
            bar.set_postfix_str("verify sha256")
            _verify_sdist(sdist)
            bar.update()
            bar.set_postfix_str("extract quoref")
            raw = _read_quoref_member(sdist)
            _check_task_json(raw)
            _write_atomic(target, raw)
            bar.update()
    logger.info("quoref ready in %s", target)
    return target


# ---------------------------------------------------------------------------- parsing
def _clean_answer(answer: str, passage: str) -> str:
    """Undo the full stop Natural Instructions appended to every answer.

    The stop is dropped only when what remains is still a verbatim span of the passage, so
    answers the passage itself ends with a stop keep a findable form either way.
    """
    answer = answer.strip()
    if answer.endswith(".") and len(answer) > 1 and answer[:-1] in passage:
        return answer[:-1]
    return answer


def _parse_example(raw: object) -> QuorefExample | None:
    """One BIG-bench example -> :class:`QuorefExample`, or None if it does not fit the format."""
    if not isinstance(raw, dict):
        return None
    match = _INPUT_PATTERN.match(str(raw.get("input", "")))
    target = raw.get("target")
    targets = [target] if isinstance(target, str) else target
    if match is None or not isinstance(targets, list) or not targets:
        return None
    passage, question = match["passage"].strip(), match["question"].strip()
    answers = tuple(_clean_answer(str(t), passage) for t in targets if str(t).strip())
    if not passage or not question or not answers:
        return None
    return QuorefExample(question=question, passage=passage, answers=answers)


def parse_quoref(task: dict[str, object]) -> list[QuorefExample]:
    """Parse a BIG-bench Quoref task (already decoded JSON) into examples.

    Format (BIG-bench JSON task, Natural Instructions flavour)::

        {"name": "subtask002_quoref_answer_generation", "task_prefix": "Definition: ...",
         "examples": [
            {"input": "Passage: <passage text> \\nQuestion: <question>",
             "target": ["Catherine."]},
            ...]}

    ``input`` holds passage and question, separated by the *last* ``"\\nQuestion: "``;
    passages themselves contain newlines. ``target`` is a list (a bare string is accepted
    too); every answer carries an appended full stop, which is removed when the answer is a
    span of the passage without it. A list of several targets is a multi-span answer.
    Examples that do not fit this shape are skipped and counted in the log.

    Raises
    ------
    QuorefDataError
        If there is no ``examples`` list or no example could be parsed.
    """
    examples = task.get("examples") if isinstance(task, dict) else None
    if not isinstance(examples, list):
        raise QuorefDataError("not a BIG-bench task: no 'examples' list")
    parsed = [_parse_example(raw) for raw in examples]
    kept = [example for example in parsed if example is not None]
    if len(kept) < len(parsed):
        logger.warning("quoref: skipped %d malformed examples", len(parsed) - len(kept))
    if not kept:
        raise QuorefDataError("no Quoref example could be parsed")
    return kept


def load_quoref(path: str | os.PathLike[str] | None = None, *, progress: bool = True) -> list[QuorefExample]:
    """All Quoref examples, fetching the task file first if it is not cached.

    Parameters
    ----------
    path
        A BIG-bench task JSON to read instead of the cached file (tests, custom copies).
    progress
        Passed to :func:`fetch_bigbench` when a download is needed.
    """
    source = Path(path) if path is not None else fetch_bigbench(progress=progress)
    return parse_quoref(json.loads(source.read_text(encoding="utf-8")))


# ---------------------------------------------------------------------------- multi-doc items
def _gold_positions(n: int, slots: int, gold_position: int | None, rng: random.Random) -> list[int]:
    """Where the gold passage goes in each item: fixed, or balanced over slots and shuffled.

    Balancing (rather than drawing each position independently) keeps position effects,
    such as a truncation baseline that only ever sees the first passage, equal across runs.
    """
    if gold_position is not None:
        if not 0 <= gold_position < slots:
            raise ValueError(f"gold_position must be in [0, {slots - 1}], got {gold_position}")
        return [gold_position] * n
    positions = [index % slots for index in range(n)]
    rng.shuffle(positions)
    return positions


def _pick_distractors(gold: QuorefExample, passages: Sequence[str], count: int, rng: random.Random) -> list[str]:
    """Draw ``count`` different passages that are not the gold one and lack every answer."""
    chosen: list[str] = []
    for index in rng.sample(range(len(passages)), len(passages)):
        candidate = passages[index]
        if candidate == gold.passage or candidate in chosen:
            continue
        if answer_contained(candidate, gold.answers):
            continue
        chosen.append(candidate)
        if len(chosen) == count:
            return chosen
    raise ValueError(f"only {len(chosen)} usable distractor passages, {count} requested")


def multi_doc_items(
    n: int,
    *,
    seed: int,
    distractors: int,
    gold_position: int | None = None,
    examples: Sequence[QuorefExample] | None = None,
    multi_span: bool = False,
) -> list[MultiDocItem]:
    """Build ``n`` RAG-style items: a question, its gold passage and distractor passages.

    Parameters
    ----------
    n
        Number of items; each uses a different question.
    seed
        Makes question choice, distractors and gold positions reproducible.
    distractors
        Other passages per item. They never contain any answer string (case- and
        whitespace-insensitive), so the answer can only come from the gold passage.
    gold_position
        Fixed index of the gold passage, or None to balance it over all positions.
    examples
        Source examples; default :func:`load_quoref`.
    multi_span
        Also use multi-span questions. Off by default so that "the answer is in the text"
        has one unambiguous meaning.

    Raises
    ------
    ValueError
        If there are fewer than ``n`` usable questions or too few distractor passages.
    """
    if n < 0 or distractors < 0:
        raise ValueError("n and distractors must be >= 0")
    pool = list(examples) if examples is not None else load_quoref()
    usable = [
        example
        for example in pool
        if (multi_span or not example.multi_span) and all(a in example.passage for a in example.answers)
    ]
    if len(usable) < n:
        raise ValueError(f"only {len(usable)} usable questions, {n} requested")
    rng = random.Random(seed)
    chosen = rng.sample(usable, n)
    passages = sorted({example.passage for example in pool})  # sorted: set order is not stable
    positions = _gold_positions(n, distractors + 1, gold_position, rng)
    items = []
    for example, position in zip(chosen, positions):
        documents = _pick_distractors(example, passages, distractors, rng)
        documents.insert(position, example.passage)
        items.append(
            MultiDocItem(
                question=example.question,
                documents=tuple(documents),
                gold_index=position,
                answers=example.answers,
            )
        )
    return items
