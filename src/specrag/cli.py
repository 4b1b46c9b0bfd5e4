"""The ``specrag`` command: compress documents, manage offline models, run the demo.

Thin on purpose: every command parses arguments, calls the public Python API and prints.
Errors the user can fix (bad budget, unknown model, empty question) become one red line
and exit status 2 instead of a traceback. Every message that quotes user text (file names,
paths, model names) escapes rich markup, so ``report[bold].txt`` is printed as typed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .core.bundles import (
    BUNDLES,
    BundleError,
    BundleStatus,
    UnknownBundleError,
    bundle_dir,
    check_bundle,
    corrupt_message,
    is_cached,
    list_bundles,
    pull_bundle,
)
from .core.embeddings import EmbeddingsUnavailableError
from .core.models import load_model
from .core.specpc import DEFAULT_DRAFT, CompressionResult, SpecPC
from .demo import DEFAULT_ANSWERER
from .demo import run as run_demo
from .render import summary_line, to_html, to_rich

app = typer.Typer(
    help="Draft-model prompt compression (SpecPC) for RAG pipelines.",
    no_args_is_help=True,
    add_completion=False,
)
models_app = typer.Typer(help="List and download offline model bundles.", no_args_is_help=True)
app.add_typer(models_app, name="models")

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

DraftOption = Annotated[str, typer.Option("--draft", "-d", help="Bundle name, local folder or hub id.")]
_KEEP_HELP = "Fraction of document tokens to keep, in (0, 1]."
KeepOption = Annotated[float | None, typer.Option("--keep", "-k", help=_KEEP_HELP)]
DemoKeepOption = Annotated[float, typer.Option("--keep", "-k", help=_KEEP_HELP)]
"""``--keep`` where a ratio always applies (the demo's default is 0.25, never None)."""
MaxTokensOption = Annotated[int | None, typer.Option("--max-tokens", "-n", help="Absolute budget in draft tokens.")]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, mps.")]
HtmlOption = Annotated[Path | None, typer.Option("--html", help="Also write a page with kept text highlighted.")]


class InputError(ValueError):
    """A file or path argument that cannot be used as given (the message says why and what to do)."""


def _error(message: object) -> None:
    """Print one red ``error:`` line; the message is user text, so markup in it is escaped.

    ``soft_wrap`` keeps a long message one line (rich would otherwise break it at the
    terminal width, 80 columns when stderr is not a terminal).
    """
    err.print(f"[bold red]error:[/] {escape(str(message))}", soft_wrap=True, highlight=False)


def _one_line(error: BaseException) -> str:
    """The message of an error the user can fix, as one line.

    pydantic's own rendering takes five lines and a URL per field; the field, the value
    given and what is allowed is all the user needs.
    """
    if isinstance(error, ValidationError):
        return "; ".join(
            f"invalid {'.'.join(str(part) for part in item['loc']) or 'value'} {item['input']!r}: "
            f"{item['msg'][:1].lower()}{item['msg'][1:]}"
            for item in error.errors()
        )
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return str(error)


def _friendly(action: Callable[[], T]) -> T:
    """Run ``action``; turn errors a user can fix into one line and exit status 2."""
    try:
        return action()
    except (
        ValueError,
        TypeError,
        BundleError,
        UnknownBundleError,
        FileNotFoundError,
        EmbeddingsUnavailableError,
    ) as error:
        _error(_one_line(error))
        raise typer.Exit(2) from error


def _read_file(source: str) -> str:
    """Read one document argument as UTF-8, or say in one line why it cannot be read."""
    path = Path(source)
    if path.is_dir():
        raise InputError(f"{source} is a directory, not a file; pass the files in it (e.g. {source}/*.txt)")
    if not path.exists():
        raise InputError(f"no such file: {source}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(_undecodable(source, error)) from error
    except OSError as error:
        raise InputError(f"cannot read {source}: {error.strerror or error}") from error


def _undecodable(source: str, error: UnicodeDecodeError) -> str:
    byte = error.object[error.start : error.start + 1].hex()
    return (
        f"{source} is not UTF-8 text (byte 0x{byte} at offset {error.start}); documents are read as "
        f"UTF-8: convert it first, e.g. iconv -f latin1 -t utf-8 {source} > {source}.utf8"
    )


def _read_stdin() -> str:
    try:
        return sys.stdin.read()
    except UnicodeDecodeError as error:
        raise InputError(_undecodable("stdin", error)) from error


def _read_documents(sources: list[str], split_paragraphs: bool) -> list[str]:
    """The documents in argument order; '-' is stdin."""
    documents: list[str] = []
    for source in sources:
        text = _read_stdin() if source == "-" else _read_file(source)
        if split_paragraphs:
            documents.extend(part for part in text.split("\n\n") if part.strip())
        else:
            documents.append(text)
    return documents


def _check_writable(path: Path | None, option: str = "--html") -> None:
    """Refuse an output path that cannot be written, before any (slow) work is done.

    Opening for append is the only honest test: permission bits say nothing to root, on a
    read-only filesystem or through a missing folder. A file created by the probe is
    removed again, so a later failure leaves nothing behind.
    """
    if path is None:
        return
    if path.is_dir():
        raise InputError(f"{option} {path} is a directory; give a file name, e.g. {path / 'kept.html'}")
    existed = path.exists()
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as error:
        raise InputError(f"cannot write {option} {path}: {error.strerror or error}; choose a writable path") from error
    if not existed:
        path.unlink(missing_ok=True)


def _emit(result: CompressionResult, *, as_json: bool, show: bool, html_path: Path | None) -> None:
    """Print the result, then write the page: the context reaches stdout even if the page fails."""
    if as_json:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    elif show:
        out.print(to_rich(result))
    else:
        sys.stdout.write(result.context() + "\n")
        err.print(escape(summary_line(result)), style="dim", soft_wrap=True)
    sys.stdout.flush()
    if html_path is not None:
        try:
            html_path.write_text(to_html(result), encoding="utf-8")
        except OSError as error:
            _error(
                f"could not write --html {html_path}: {error.strerror or error}; the result above is "
                "complete, run again with a writable --html path for the page"
            )
            raise typer.Exit(1) from error
        err.print(f"wrote {escape(str(html_path))}", soft_wrap=True, highlight=False)


@app.command()
def compress(
    files: Annotated[
        list[str] | None, typer.Argument(help="Documents, one per file; '-' or nothing reads stdin.")
    ] = None,
    question: Annotated[str, typer.Option("--question", "-q", help="The question the context must answer.")] = "",
    instruction: Annotated[str | None, typer.Option(help="Instruction placed before the documents; never cut.")] = None,
    keep: KeepOption = None,
    max_tokens: MaxTokensOption = None,
    draft: DraftOption = DEFAULT_DRAFT,
    device: DeviceOption = "auto",
    paragraphs: Annotated[bool, typer.Option(help="Treat blank-line separated paragraphs as documents.")] = False,
    snap: Annotated[
        str, typer.Option(help="sentence: keep whole sentences and clauses; word: rank word by word.")
    ] = "sentence",
    embedder: Annotated[
        str,
        typer.Option(
            help="minilm: fuse sentence-to-question similarity with the draft's attention; none: attention alone."
        ),
    ] = "minilm",
    target_tokenizer: Annotated[
        str | None,
        typer.Option(
            help="Count --keep/--max-tokens in this model's tokens (bundle name, folder or hub id "
            "of the answering LLM); default: the draft's tokens."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
    show: Annotated[bool, typer.Option("--show", help="Highlight kept versus dropped text.")] = False,
    html_path: HtmlOption = None,
) -> None:
    """Compress documents for a question; the compressed context goes to stdout."""

    def run() -> CompressionResult:
        if not question.strip():
            raise ValueError("--question is required and must not be empty")
        _check_writable(html_path)  # before the draft loads: a bad path must not cost a compression
        budget = {} if keep is None and max_tokens is None else {"keep_ratio": keep, "max_tokens": max_tokens}
        # Built before reading stdin, so a bad option fails before the user pipes anything.
        chosen = None if embedder.strip().lower() == "none" else embedder
        pc = SpecPC(
            draft,
            device=device,
            embedder=chosen,
            snap=snap,
            target_tokenizer=target_tokenizer,
            **budget,  # type: ignore[arg-type]
        )
        documents = _read_documents(files or ["-"], paragraphs)
        return pc.compress(documents, question, instruction)

    _emit(_friendly(run), as_json=as_json, show=show, html_path=html_path)


@app.command()
def demo(
    question: Annotated[
        str | None,
        typer.Option("--question", "-q", help="Question to ask; default the first bundled one."),
    ] = None,
    keep: DemoKeepOption = 0.25,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Passages to retrieve.")] = 4,
    retriever: Annotated[
        str, typer.Option(help="auto (MiniLM embeddings if installed, else BM25), minilm or bm25.")
    ] = "auto",
    draft: DraftOption = DEFAULT_DRAFT,
    device: DeviceOption = "auto",
    answer: Annotated[bool, typer.Option("--answer/--no-answer", help="Also answer with --llm (loads it).")] = False,
    llm: Annotated[
        str, typer.Option("--llm", help="Answering model: bundle name, local folder or hub id.")
    ] = DEFAULT_ANSWERER,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Longest answer, in tokens.")] = 64,
    html_path: HtmlOption = None,
) -> None:
    """Retrieve from a bundled corpus, compress with SpecPC, show what was kept; --answer too."""

    def run() -> None:
        _check_writable(html_path)
        try:
            run_demo(
                out,
                question=question,
                keep_ratio=keep,
                top_k=top_k,
                retriever=retriever,  # type: ignore[arg-type]  # run_demo validates it
                draft=draft,
                device=device,
                answer_with=llm if answer else None,
                max_new_tokens=max_new_tokens,
                html_path=html_path,
            )
        except EmbeddingsUnavailableError as error:  # --retriever minilm without the model
            raise ValueError(str(error)) from error

    _friendly(run)


@app.command()
def bench(
    tasks: Annotated[
        str, typer.Option(help="Comma list: quoref, multihop, niah_single, niah_multikey, niah_multivalue, vt.")
    ] = "quoref",
    lengths: Annotated[str, typer.Option(help="Comma list of context lengths in target tokens.")] = "2048",
    limit: Annotated[int, typer.Option(min=1, help="Items per task and length.")] = 20,
    seed: Annotated[int, typer.Option(help="Seeds item construction and the random baseline.")] = 0,
    start: Annotated[
        int,
        typer.Option(
            min=0,
            help="Skip the first this many items of each task and length, to share a run between "
            "processes: --start 20 --limit 40 runs items 20-39.",
        ),
    ] = 0,
    items: Annotated[
        str | None,
        typer.Option(
            help="Comma list of item indices below --limit to run, per task and length (the same items a "
            "full run has there): --limit 40 --items 0,3,5. Not with --start.",
        ),
    ] = None,
    methods: Annotated[str, typer.Option(help="Comma list, or all / pc / kv.")] = "pc",
    budgets: Annotated[str, typer.Option(help="Comma list of kept fractions (target tokens).")] = "0.1,0.25,0.5",
    draft: DraftOption = DEFAULT_DRAFT,
    target: Annotated[str, typer.Option("--target", "-t", help="Answering model.")] = "qwen2.5-coder-1.5b",
    out: Annotated[Path, typer.Option(help="Per-item JSONL; finished results in it are skipped.")] = Path(
        "bench-results.jsonl"
    ),
    answer: Annotated[
        bool, typer.Option("--answer/--no-answer", help="Let the target answer (EM/F1, timings).")
    ] = False,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Longest answer, greedy.")] = 16,
    lookahead: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Answer tokens scoring the cache in kv_speckv(_overlap, _pc), kv_oracle "
            "(default: max-new-tokens, at most 64).",
        ),
    ] = None,
    share_prefill: Annotated[
        bool,
        typer.Option(
            "--share-prefill/--no-share-prefill",
            help="KV rows of an item answer from one target prefill (not kv_speckv_pc, kv_speckv_overlap): "
            "same answers, seconds composed from the shared forward.",
        ),
    ] = False,
    device: DeviceOption = "auto",
    tables: Annotated[Path | None, typer.Option(help="Write markdown tables (95 % CIs) here.")] = None,
    img_dir: Annotated[Path | None, typer.Option(help="Write plots here.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (1 is fastest on a busy CPU).")] = None,
    export_kv_prompts: Annotated[
        Path | None,
        typer.Option(help="Write the KV rows' prompts and budgets here for the kvpress worker, and stop."),
    ] = None,
    import_kvpress: Annotated[
        list[Path] | None,
        typer.Option(help="Add the kvpress worker's answers (JSONL) to --out as kvpress_* rows, and stop."),
    ] = None,
) -> None:
    """Benchmark prompt-compression and KV methods at equal budgets (resumable).

    kvpress's presses run in their own environment: --export-kv-prompts, then
    src/specrag/bench/kvpress_worker.py there, then --import-kvpress (docs/kvpress.md).
    """
    from .bench.suite import export_command, import_command, run_command

    def run() -> None:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        if export_kv_prompts is not None:
            count = export_command(
                tasks=tasks,
                lengths=lengths,
                limit=limit,
                start=start,
                items=items,
                seed=seed,
                budgets=budgets,
                target=target,
                max_new_tokens=max_new_tokens,
                device=device,
                path=export_kv_prompts,
            )
            err.print(f"{count} prompts in {escape(str(export_kv_prompts))}", soft_wrap=True)
            return
        if import_kvpress:
            added = import_command(import_kvpress, out=out, budgets=budgets, tables=tables)
            err.print(f"{added} kvpress results added to {escape(str(out))}", soft_wrap=True)
            return
        records = run_command(
            tasks=tasks,
            lengths=lengths,
            limit=limit,
            start=start,
            items=items,
            seed=seed,
            methods=methods,
            budgets=budgets,
            draft=draft,
            target=target,
            out=out,
            answer=answer,
            max_new_tokens=max_new_tokens,
            device=device,
            tables=tables,
            img_dir=img_dir,
            lookahead=lookahead,
            share_prefill=share_prefill,
        )
        err.print(f"{len(records)} results in {escape(str(out))}", soft_wrap=True)

    _friendly(run)


_COLUMNS = ("name", "role", "architecture", "size", "licence", "cached", "path")


def _cached_cell(status: BundleStatus) -> str:
    """What the ``cached`` column says: a corrupt bundle must not look like a healthy one."""
    size = f"{status.size_bytes / 2**20:.0f} MiB"
    if status.state == "corrupt":
        return f"CORRUPT ({status.problem}); run specrag models pull {status.spec.name} --force"
    if status.state == "unrecorded":
        return f"yes ({size}, unverified: no manifest until its next load)"
    return f"yes ({size})" if status.cached else "no"


def _row(status: BundleStatus) -> tuple[str, ...]:
    spec = status.spec
    return (
        spec.name,
        spec.role,
        spec.architecture,
        spec.parameters,
        spec.licence,
        _cached_cell(status),
        str(status.path),
    )


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the offline bundles, which are cached, and whether the cached ones are intact.

    Cached bundles are hashed against their manifest (a fraction of a second per 100 MB),
    because only a hash sees bytes overwritten in place. A table fits the terminal; piped
    output is one tab-separated line per bundle with nothing cut, or JSON with ``--json``.
    """
    statuses = list_bundles()
    if as_json:
        sys.stdout.write(json.dumps([s.model_dump(mode="json") for s in statuses], indent=2) + "\n")
        return
    if not sys.stdout.isatty():
        # rich would fit the table into 80 columns and cut names and paths with an ellipsis.
        for line in (_COLUMNS, *(_row(status) for status in statuses)):
            sys.stdout.write("\t".join(line) + "\n")
        return
    table = Table(title="specrag offline bundles")
    for column in _COLUMNS:
        table.add_column(column, no_wrap=column == "name", overflow="fold")
    for status in statuses:
        table.add_row(*(escape(cell) for cell in _row(status)))
    out.print(table)


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="Bundle name (see `specrag models list`).")],
    force: Annotated[bool, typer.Option(help="Rebuild even if cached.")] = False,
) -> None:
    """Download, verify and convert a bundle into the local cache; rebuild it if corrupt."""
    state, problem = _friendly(lambda: check_bundle(name))
    path = _friendly(lambda: pull_bundle(name, force=force))
    repaired = f" (repaired: {problem})" if state == "corrupt" else ""
    out.print(escape(f"{name}: ready at {path}{repaired}"), soft_wrap=True, highlight=False)


@models_app.command("verify")
def models_verify(
    name: Annotated[str | None, typer.Argument(help="Bundle name; default every cached bundle.")] = None,
) -> None:
    """Check cached bundles against the sizes and sha256 recorded when they were converted.

    A bundle converted before manifests existed is loaded once on the CPU to check it
    (finite weights) and then gets its manifest. Exit status 1 if any bundle is corrupt.
    """

    def names() -> list[str]:
        if name is None:
            return [known for known in BUNDLES if is_cached(known)]
        if not is_cached(name):  # also refuses unknown names, with the known ones
            raise ValueError(f"bundle {name!r} is not pulled; run specrag models pull {name}")
        return [name]

    corrupt = 0
    checked = _friendly(names)
    if not checked:
        out.print("no bundles are pulled; run specrag models pull NAME (see specrag models list)")
    for bundle in checked:
        state, problem = check_bundle(bundle)
        message: str | None = None
        if state == "unrecorded":
            try:
                load_model(bundle, device="cpu", progress=False)  # checks it, records the manifest
            except BundleError as error:
                state, message = "corrupt", str(error)
            else:
                state, problem = check_bundle(bundle)
        if state == "corrupt":
            corrupt += 1
            _error(message or corrupt_message(bundle, bundle_dir(bundle), problem or "files differ"))
        elif state == "ok":
            out.print(escape(f"{bundle}: ok (sizes and sha256 match the manifest)"), highlight=False)
        else:
            out.print(escape(f"{bundle}: unverified (no manifest could be recorded)"), highlight=False)
    if corrupt:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
