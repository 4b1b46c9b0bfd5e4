"""The ``specrag`` command: compress documents, manage offline models, run the demo.

Thin on purpose: every command parses arguments, calls the public Python API and prints.
Errors the user can fix (bad budget, unknown model, empty question) become one red line
and exit status 2 instead of a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .core.bundles import BundleError, UnknownBundleError, list_bundles, pull_bundle
from .core.embeddings import EmbeddingsUnavailableError
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
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        err.print(f"[bold red]error:[/] {message}")
        raise typer.Exit(2) from error


def _read_documents(files: list[str], split_paragraphs: bool) -> list[str]:
    sources = files or ["-"]
    documents: list[str] = []
    for source in sources:
        if source == "-":
            text = sys.stdin.read()
        else:
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"no such file: {source}")
            text = path.read_text(encoding="utf-8")
        if split_paragraphs:
            documents.extend(part for part in text.split("\n\n") if part.strip())
        else:
            documents.append(text)
    return documents


def _emit(result: CompressionResult, *, as_json: bool, show: bool, html_path: Path | None) -> None:
    if html_path is not None:
        html_path.write_text(to_html(result), encoding="utf-8")
        err.print(f"wrote {html_path}")
    if as_json:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    elif show:
        out.print(to_rich(result))
    else:
        sys.stdout.write(result.context() + "\n")
        err.print(summary_line(result), style="dim")


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
        str, typer.Option(help="word, or sentence: keep whole sentences where the budget allows.")
    ] = "word",
    embedder: Annotated[
        str | None,
        typer.Option(
            help="minilm: fuse sentence-to-question similarity (embeddings extra) with the draft's attention."
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
        budget = {} if keep is None and max_tokens is None else {"keep_ratio": keep, "max_tokens": max_tokens}
        # Built before reading stdin, so a bad option fails before the user pipes anything.
        pc = SpecPC(draft, device=device, embedder=embedder, snap=snap, **budget)  # type: ignore[arg-type]
        documents = _read_documents(files or [], paragraphs)
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
        str, typer.Option(help="Comma list: quoref, niah_single, niah_multikey, niah_multivalue, vt.")
    ] = "quoref",
    lengths: Annotated[str, typer.Option(help="Comma list of context lengths in target tokens.")] = "2048",
    limit: Annotated[int, typer.Option(min=1, help="Items per task and length.")] = 20,
    seed: Annotated[int, typer.Option(help="Seeds item construction and the random baseline.")] = 0,
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
    device: DeviceOption = "auto",
    tables: Annotated[Path | None, typer.Option(help="Write markdown tables (95 % CIs) here.")] = None,
    img_dir: Annotated[Path | None, typer.Option(help="Write plots here.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (1 is fastest on a busy CPU).")] = None,
) -> None:
    """Benchmark prompt-compression and KV methods at equal budgets (resumable)."""
    from .bench.suite import run_command

    def run() -> None:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        records = run_command(
            tasks=tasks,
            lengths=lengths,
            limit=limit,
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
        )
        err.print(f"{len(records)} results in {out}")

    _friendly(run)


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the offline bundles and which are cached."""
    statuses = list_bundles()
    if as_json:
        sys.stdout.write(json.dumps([s.model_dump(mode="json") for s in statuses], indent=2) + "\n")
        return
    table = Table(title="specrag offline bundles")
    for column in ("name", "role", "architecture", "size", "licence", "cached", "path"):
        table.add_column(column)
    for status in statuses:
        spec = status.spec
        cached = f"yes ({status.size_bytes / 2**20:.0f} MiB)" if status.cached else "no"
        table.add_row(spec.name, spec.role, spec.architecture, spec.parameters, spec.licence, cached, str(status.path))
    out.print(table)


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="Bundle name (see `specrag models list`).")],
    force: Annotated[bool, typer.Option(help="Rebuild even if cached.")] = False,
) -> None:
    """Download, verify and convert a bundle into the local cache."""
    path = _friendly(lambda: pull_bundle(name, force=force))
    out.print(f"{name}: ready at {path}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
