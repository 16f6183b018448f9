"""Prefect artifacts of a retraining run: a markdown report, per-class table, mistake grid."""

from __future__ import annotations

import base64
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from mnist_pipeline.layout import Layout
from mnist_pipeline.params import Params

REPORT_KEY = "mnist-retrain-report"
PER_CLASS_KEY = "mnist-per-class-metrics"
MISTAKES_KEY = "mnist-misclassified"
MISTAKES_PNG = "misclassified.png"


def _embedded_png(layout: Layout, name: str) -> str:
    path = layout.plots / name
    if not path.is_file():
        return f"_{name} was not produced_"
    data = base64.b64encode(path.read_bytes()).decode()
    return f"![{name}](data:image/png;base64,{data})"


def report_markdown(
    params: Params,
    layout: Layout,
    metrics: Any,
    parity: Any,
    registration: Any,
    timings: dict[str, float],
) -> str:
    """The run report: metrics, gate verdict, parity, version, alias decision, where plots are."""
    gate = params.evaluate.min_accuracy
    lines = [
        f"# MNIST retraining: {params.registry.model_name} v{registration.version}",
        "",
        "| | |",
        "|---|---|",
        f"| test accuracy | {metrics.correct}/{metrics.total} ({metrics.accuracy:.2%}) |",
        f"| test loss | {metrics.loss:.4f} |",
        f"| gate | passed (≥ {gate:.2%}) |",
        f"| ONNX parity | passed: max abs diff {parity.max_abs_diff_logits:.2e} (logits), "
        f"{parity.argmax_mismatches} argmax mismatches |",
        f"| registered | version {registration.version}, alias `{registration.alias}` |"
        if registration.registered
        else f"| registered | nothing: {registration.reason} |",
        f"| alias decision | {registration.reason} |"
        if registration.registered
        else f"| alias decision | none (v{registration.version} keeps `{registration.alias}`) |",
        f"| plots | `{layout.plots.resolve()}` |",
        "",
        "Task seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()),
    ]
    return "\n".join(lines)


def publish_report(
    params: Params,
    layout: Layout,
    metrics: Any,
    parity: Any,
    registration: Any,
    timings: dict[str, float],
) -> None:
    """Create the keyed artifacts (each key keeps its history across runs in the Prefect UI)."""
    create_markdown_artifact(
        key=REPORT_KEY,
        markdown=report_markdown(params, layout, metrics, parity, registration, timings),
        description="Retraining report: metrics, gate, parity, registry decision",
    )
    rows = [
        {"digit": digit, **{k: round(float(v), 4) for k, v in stats.items()}}
        for digit, stats in sorted(metrics.per_class.items())
    ]
    create_table_artifact(key=PER_CLASS_KEY, table=rows, description="Per-class test metrics")
    create_markdown_artifact(
        key=MISTAKES_KEY,
        markdown="## Most confident mistakes\n\n" + _embedded_png(layout, MISTAKES_PNG),
        description="Misclassified test images, most confident first",
    )


def publish_up_to_date(params: Params, version: int, fingerprint: dict[str, Any]) -> None:
    """The report of a run that found its inputs already registered (trained nothing)."""
    name = params.registry.model_name
    lines = [
        f"# MNIST retraining: up to date ({name} v{version})",
        "",
        f"v{version} was trained on the same inputs, so this run trained and registered nothing "
        "(run with `force` to retrain anyway).",
        "",
        "| input | value |",
        "|---|---|",
        f"| fingerprint | `{fingerprint['sha256']}` |",
        f"| dataset SHA-256 | `{fingerprint['dataset_sha256']}` |",
        f"| package source SHA-256 | `{fingerprint['code_sha256']}` |",
    ]
    create_markdown_artifact(
        key=REPORT_KEY,
        markdown="\n".join(lines),
        description="Retraining report: up to date, nothing trained",
    )
