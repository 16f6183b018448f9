"""The `mnist-pipeline` command line: thin shims that resolve params and paths, then call stages.

DVC stages and the Prefect flow call the same stage functions these commands call.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.layout import Layout
from mnist_pipeline.params import DEFAULT_PARAMS_PATH, Params, load_params

app = typer.Typer(
    help="Train, gate, export and register an MNIST CNN.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


@dataclass(frozen=True)
class CliState:
    """Options shared by every command."""

    params_path: Path
    root: Path

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    def params(self) -> Params:
        return load_params(self.params_path)


def state(ctx: typer.Context) -> CliState:
    """The shared options of the current invocation."""
    return ctx.ensure_object(CliState) if ctx.obj is None else ctx.obj


@app.callback()
def _options(
    ctx: typer.Context,
    params: Annotated[
        Path, typer.Option("--params", "-p", help="params.yaml to read.")
    ] = DEFAULT_PARAMS_PATH,
    root: Annotated[
        Path, typer.Option("--root", help="Working directory for data/, models/, reports/.")
    ] = Path("."),
) -> None:
    ctx.obj = CliState(params_path=params, root=root)


@app.command()
def fetch(ctx: typer.Context) -> None:
    """Download and verify the four MNIST files into data/mnist/."""
    from mnist_pipeline.fetch import fetch as fetch_stage

    st = state(ctx)
    result = fetch_stage(st.params().data, st.layout.data_dir)
    for name, mirror in result.downloaded.items():
        console.print(f"fetched {name} from {mirror}")
    if result.already_present:
        console.print(f"already present and verified: {len(result.already_present)} file(s)")
    console.print(f"dataset ready in {result.data_dir}")


from mnist_pipeline.registry.cli import models_app  # noqa: E402 - torch-free, light

app.add_typer(models_app, name="models")


@app.command()
def train(ctx: typer.Context) -> None:
    """Train the CNN (resumes from models/checkpoint.pt); writes models/model.pt."""
    from mnist_pipeline.train import train as train_stage

    st = state(ctx)
    result = train_stage(st.params().train, st.layout.data_dir, st.layout)
    resumed = f", resumed after epoch {result.resumed_from}" if result.resumed_from else ""
    val = f"{result.val_accuracy:.4f}" if result.val_accuracy is not None else "n/a"
    console.print(
        f"trained {result.epochs_run} epoch(s){resumed} in {result.seconds:.1f} s: "
        f"train loss {result.train_loss:.4f}, val accuracy {val} -> {result.state_dict}"
    )


@app.command()
def evaluate(ctx: typer.Context) -> None:
    """Score models/model.pt on the test set, write reports/, apply the accuracy gate."""
    from mnist_pipeline.evaluate import evaluate as evaluate_stage

    st = state(ctx)
    params = st.params()
    result = evaluate_stage(params.evaluate, params.train.arch, st.layout.data_dir, st.layout)
    console.print(f"metrics in {result.metrics_path}")


@app.command()
def export(
    ctx: typer.Context,
    model_version: Annotated[
        str | None, typer.Option("--model-version", help="Version recorded in the metadata.")
    ] = None,
) -> None:
    """Export models/model.pt to models/model.onnx (refused if the accuracy gate failed)."""
    from mnist_pipeline.export import run_export

    st = state(ctx)
    p = st.params()
    result = run_export(p.export, p.train.arch, st.layout, model_version)
    console.print(
        f"exported {result.onnx_path} (opset {result.opset}, {result.size_bytes:,} bytes, "
        f"sha256 {result.sha256})",
        soft_wrap=True,
    )


@app.command()
def parity(ctx: typer.Context) -> None:
    """Check onnxruntime against PyTorch on the test set; writes reports/parity.json."""
    from mnist_pipeline.parity import run_parity

    st = state(ctx)
    p = st.params()
    result = run_parity(p.export, p.train.arch, st.layout)
    console.print(
        f"parity passed on {result.images} images: max |logits diff| "
        f"{result.max_abs_diff_logits:.3g}, max |probabilities diff| "
        f"{result.max_abs_diff_probabilities:.3g}; report {result.report_path}",
        soft_wrap=True,
    )


@app.command()
def predict(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG, ...).")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="An .onnx path (or any path with a slash), or a registry version or alias. "
            "Default: the registry's production model, else models/model.onnx.",
        ),
    ] = None,
    top: Annotated[
        int | None, typer.Option("--top", min=1, max=10, help="Also list the top K digits.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list.")] = False,
) -> None:
    """Classify image files with the ONNX model (onnxruntime only); exit 1 if any failed."""
    import json

    from mnist_pipeline.predict import predict_files, resolve_model

    st = state(ctx)
    model_path = resolve_model(model, st.layout, st.params().registry)
    result = predict_files(model_path, images, top=top or 1)
    if as_json:
        print(json.dumps([p.to_dict(with_top=top is not None) for p in result.predictions]))
    else:
        console.print(f"model: {result.model_path}", highlight=False, soft_wrap=True)
        for p in result.predictions:
            if p.error is not None:
                console.print(f"[red]{escape(p.file)}: error: {escape(p.error)}[/]", soft_wrap=True)
                continue
            line = f"{p.file}: {p.digit} (p={p.probability:.3f})"
            if top is not None:
                line += "  top: " + ", ".join(f"{d} ({q:.3f})" for d, q in p.top)
            print(line)
    if result.failed:
        raise typer.Exit(1)


# ---- end of commands ----


def main() -> None:
    """Console-script entry: run the app; user-facing errors become one message and an exit code."""
    try:
        app()
    except PipelineError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
