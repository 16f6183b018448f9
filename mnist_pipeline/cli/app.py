"""The `mnist-pipeline` command line: thin shims that resolve params and paths, then run stages.

Each stage command runs `stages.run`, the same call the Prefect flow makes (and `dvc repro` runs
these commands). Exit codes: 0 success, 1 a failure the message explains (gate, parity, data,
registry, unreadable image), 2 bad params or usage, 74 an I/O error (read-only or full disk,
permission denied), named with its path.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from filelock import Timeout
from rich.markup import escape

from mnist_pipeline.cli.arguments import check_server_url, given_path, model_reference
from mnist_pipeline.cli.data import data_app
from mnist_pipeline.cli.models import models_app
from mnist_pipeline.cli.state import CliState, console, state
from mnist_pipeline.core.errors import EXIT_IO, PipelineError, describe_os_error
from mnist_pipeline.core.text import printable
from mnist_pipeline.pipeline import stages

app = typer.Typer(
    help="Train, gate, export and register an MNIST CNN.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")


@app.callback()
def _options(
    ctx: typer.Context,
    params: Annotated[
        Path | None,
        typer.Option(
            "--params",
            "-p",
            metavar="FILE",
            parser=given_path,
            help="params.yaml to read (a relative path is from the current folder, not ROOT).",
            show_default="ROOT/params.yaml",
        ),
    ] = None,
    root: Annotated[
        Path,
        typer.Option(
            "--root",
            metavar="DIR",
            help="Working directory for data/, models/, reports/ (an existing folder).",
            exists=True,
            file_okay=False,
        ),
    ] = Path("."),
) -> None:
    ctx.obj = CliState.from_options(root, params)


def _run(ctx: typer.Context, name: str, **options: object) -> None:
    st = state(ctx)
    result = stages.run(name, st.params(), st.layout, **options)
    console.print(result.summary(), markup=False)


@app.command(help=stages.STAGES["fetch"].help)
def fetch(ctx: typer.Context) -> None:
    _run(ctx, "fetch")


@app.command(help=stages.STAGES["ingest"].help)
def ingest(ctx: typer.Context) -> None:
    _run(ctx, "ingest")


@app.command(help=stages.STAGES["train"].help)
def train(ctx: typer.Context) -> None:
    from mnist_pipeline.inbox.ingest import not_ingested

    stale = not_ingested(state(ctx).layout)
    if stale:
        console.print(f"[yellow]warning:[/] {escape(stale)}", soft_wrap=True)
    _run(ctx, "train")


@app.command(help=stages.STAGES["evaluate"].help)
def evaluate(ctx: typer.Context) -> None:
    _run(ctx, "evaluate")


@app.command(help=stages.STAGES["export"].help)
def export(
    ctx: typer.Context,
    model_version: Annotated[
        str | None,
        typer.Option(
            "--model-version", metavar="VERSION", help="Version recorded in the metadata."
        ),
    ] = None,
) -> None:
    _run(ctx, "export", model_version=model_version)


@app.command(help=stages.STAGES["parity"].help)
def parity(ctx: typer.Context) -> None:
    _run(ctx, "parity")


@app.command()
def predict(
    ctx: typer.Context,
    images: Annotated[
        list[Path],
        typer.Argument(metavar="IMAGE...", parser=given_path, help="Image files (PNG, JPEG, ...)."),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            parser=model_reference,
            help="An .onnx path (or any path with a slash; a relative one is from the current "
            "folder, not ROOT), or a registry version or alias. Default: the registry's "
            "production model, else ROOT/models/model.onnx.",
        ),
    ] = None,
    top: Annotated[
        int | None,
        typer.Option("--top", min=1, max=10, metavar="K", help="Also list the top K digits."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list.")] = False,
) -> None:
    """Classify image files with the ONNX model (onnxruntime only); exit 1 if any failed."""
    from mnist_pipeline.serving.predict import is_model_path, predict_files, resolve_model

    st = state(ctx)
    registry = None if is_model_path(model) else st.params().registry  # a path needs no params
    choice = resolve_model(model, st.layout, registry)
    result = predict_files(choice.path, images, top=top or 1)
    if as_json:
        print(json.dumps([p.to_dict(with_top=top is not None) for p in result.predictions]))
    else:
        console.print(f"model: {printable(choice.label)}", markup=False)
        for p in result.predictions:  # a file name's \n or escape sequence shown, not obeyed
            if p.error is not None:
                console.print(f"[red]error: {escape(printable(p.error))}[/]")  # names the file
                continue
            line = f"{printable(str(p.file))}: {p.digit} (p={p.probability:.3f})"
            if top is not None:
                line += "  top: " + ", ".join(f"{d} ({q:.3f})" for d, q in p.top)
            print(line)
    if result.failed:
        raise typer.Exit(1)


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(metavar="HOST", help="Address.", show_default="serve.host")
    ] = None,
    port: Annotated[
        int | None, typer.Option(metavar="PORT", help="Port.", show_default="serve.port")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            metavar="ALIAS|VERSION",
            help="The model to serve.",
            show_default="serve.model",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(metavar="N", help="Worker processes.", show_default="serve.workers"),
    ] = None,
) -> None:
    """Serve the registry's model over HTTP, following its alias (POST /predict, GET /model)."""
    from mnist_pipeline.serving.server import run

    st = state(ctx)
    given = {"host": host, "port": port, "model": model, "workers": workers}
    run(st.params_file(), st.root, {f"serve.{k}": v for k, v in given.items() if v is not None})


@app.command("serve-report")
def serve_report(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            metavar="URL", help="A running server.", show_default="http://serve.host:serve.port"
        ),
    ] = None,
    saved: Annotated[
        Path | None,
        typer.Option(
            "--from",
            metavar="FILE",
            parser=given_path,
            help="A saved GET /model answer instead.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Would the shadow have done better? Its live record and the promotion rule's paired test."""
    from mnist_pipeline.serving import shadow_report

    if saved is not None and url is not None:  # a usage error: exit 2
        raise typer.BadParameter("reads a server or a saved answer, not both", param_hint="--url")
    if url is not None:
        check_server_url(url)
    params = state(ctx).params()
    if saved is not None:
        status = shadow_report.read_status(saved)
    else:
        status = shadow_report.fetch_status(
            f"http://{params.serve.host}:{params.serve.port}" if url is None else url
        )
    found = shadow_report.report(status, params.registry.promotion)
    if as_json:
        print(json.dumps(found, indent=2))
    else:
        for line in shadow_report.lines(found):
            print(line)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    """SIGTERM (kill, timeout, a stopped container) ends the command as Ctrl-C would: by an
    exception, so every temp file of an unfinished write is removed and no lock is left held."""
    sys.exit(128 + signum)


def _shown(message: str) -> str:
    """An error message for the terminal: no markup, and control characters (of a file name it
    quotes) as escapes, line by line (a message of several problems keeps its lines)."""
    return escape("\n".join(printable(line) for line in message.split("\n")))


def _escape_undecodable() -> None:
    """A file name or argument that is not UTF-8 reaches Python as surrogate escapes, which a
    UTF-8 stdout refuses to encode (a traceback half-way through the output): written as
    backslash escapes instead, wherever the CLI prints one."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # not on a test runner's buffer
        if reconfigure is not None and getattr(stream, "errors", None) == "strict":
            reconfigure(errors="backslashreplace")  # surrogateescape (a C locale) stays


def main() -> None:
    """Console-script entry: run the app; user-facing errors become one message and an exit code."""
    main_thread = threading.current_thread() is threading.main_thread()  # signals go there only
    before = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main_thread else None
    _escape_undecodable()
    try:
        app()
    except PipelineError as exc:
        console.print(f"[bold red]error:[/] {_shown(str(exc))}")
        sys.exit(exc.exit_code)
    except Timeout as exc:  # a lock (the inbox's, the dataset's) held past its wait
        console.print(
            f"[bold red]error:[/] {_shown(exc.lock_file)} is still held by another process "
            "(another command, or a server on this folder) after waiting for it: try again "
            "when that is done"
        )
        sys.exit(EXIT_IO)
    except OSError as exc:  # read-only folder, permission denied, disk full: nothing was replaced
        console.print(f"[bold red]error:[/] {_shown(describe_os_error(exc))}")
        sys.exit(EXIT_IO)
    finally:
        if main_thread:  # called in-process (tests): as it was (None: set outside Python)
            signal.signal(signal.SIGTERM, signal.SIG_DFL if before is None else before)


if __name__ == "__main__":
    main()
