"""Prefect artifacts and tags of a retraining run: what the run page shows at a glance.

Every run publishes its effective params (after params.yaml and the flow's overrides); a run that
registers publishes the report (metrics, gate, parity, the registered version's identity and
its delta against the champion, with the training curves, confusion matrix and mistakes), the
per-class table and the mistakes grid; a run rejected by the gate or parity publishes the
rejected candidate's report instead. Runs are tagged with their outcome, so the runs list can be
filtered (`registered`, `alias:production`, `rejected:evaluate`, `up-to-date`, ...).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import Params
from mnist_pipeline.core.reports import Metrics, ModelCard, Parity, read_report
from mnist_pipeline.core.text import printable
from mnist_pipeline.evaluation.gate import accuracy_passes
from mnist_pipeline.pipeline.card import evidence_lines
from mnist_pipeline.pipeline.versions import read_card
from mnist_pipeline.registry import Registry

REPORT_KEY = "mnist-retrain-report"
PER_CLASS_KEY = "mnist-per-class-metrics"
MISTAKES_KEY = "mnist-misclassified"
PARAMS_KEY = "mnist-effective-params"
INGEST_KEY = "mnist-ingest"
MISTAKES_PNG = "misclassified.png"
CURVES_PNG = "training_curves.png"
CONFUSION_PNG = "confusion_matrix.png"
MARKDOWN_PUNCTUATION = set("\\`*_{}[]<>()#+-.!|~")


def _embedded_png(folder: Path, name: str) -> str:
    path = folder / name
    if not path.is_file():
        return f"_{name} was not produced_"
    data = base64.b64encode(path.read_bytes()).decode()
    return f"![{name}](data:image/png;base64,{data})"


def best_effort(what: str, publish: Callable[[], object]) -> bool:
    """`publish` (artifacts, tags) where a failure must not become the run's: after a registry
    commit, or beside a stage's own failure. A failure is logged as a warning naming `what`;
    returns whether it was done."""
    try:
        publish()
    except Exception as exc:  # noqa: BLE001 - the run's outcome is decided elsewhere
        message = f"could not {what}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        try:
            get_run_logger().warning(message)
        except MissingContextError:  # retrain.fn(): no run to log into
            logging.getLogger("mnist_pipeline.flows").warning(message)
        return False
    return True


def tag_run(*tags: str, drop: tuple[str, ...] = (), run_id: Any = None) -> None:
    """Add `tags` to flow run `run_id` (default: the current one), removing `drop` (nothing
    outside a flow run)."""
    run_id = run_id or flow_run.id
    if not run_id:
        return
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(run_id).tags
        client.update_flow_run(run_id, tags=sorted({*current, *tags} - set(drop)))


def publish_params(params: Params) -> None:
    """The effective params as a table (the Parameters tab shows only the overrides given)."""
    rows = [
        {"key": f"{section}.{key}", "value": json.dumps(value)}
        for section, keys in params.to_dict().items()
        for key, value in keys.items()
    ]
    create_table_artifact(
        key=PARAMS_KEY, table=rows, description="Effective params: params.yaml + overrides"
    )


def publish_ingest(result: Any) -> None:
    """What ingest took from the inbox and every file it refused, with the reason."""
    counts = result.counts
    lines = [
        f"**Labelled digits users added**: {counts['train']} train + {counts['holdout']} "
        f"holdout, {len(result.rejected)} refused (inbox `{result.inbox_sha256[:12]}`)",
    ]
    if result.rejected:
        lines += ["", "| refused file | reason |", "|---|---|"]
        lines += [f"| {_cell(src)} | {_cell(why)} |" for src, why in result.rejected.items()]
    create_markdown_artifact(key=INGEST_KEY, markdown="\n".join(lines), description="Ingest")


def _cell(text: str) -> str:
    """User text (a file name, a reason naming files) as one markdown table cell: control
    characters escaped (no line of its own), markdown's punctuation taken literally."""
    shown = printable(text)
    return "".join(f"\\{c}" if c in MARKDOWN_PUNCTUATION else c for c in shown)


def report_markdown(
    params: Params,
    layout: Layout,
    metrics: Any,
    parity: Any,
    registration: Any,
    card: ModelCard,
    champion_accuracy: float | None,
) -> str:
    """The report of a run that got through the gate and parity."""
    gate = params.evaluate.min_accuracy
    code = card.code or {}
    dirty = " (uncommitted changes)" if code.get("git_dirty") else ""
    delta = (
        "first version"
        if champion_accuracy is None
        else f"{metrics.accuracy - champion_accuracy:+.2%} against production "
        f"v{registration.champion} ({champion_accuracy:.2%})"
    )
    outcome = (
        f"version {registration.version}, alias `{registration.alias}`: {registration.reason}"
        if registration.registered
        else f"nothing new: {registration.reason} (v{registration.version} keeps "
        f"`{registration.alias}`)"
    )
    lines = [
        f"# MNIST retraining: {params.registry.model_name} v{registration.version}",
        "",
        "| item | value |",
        "|---|---|",
        f"| test accuracy | {metrics.correct}/{metrics.total} ({metrics.accuracy:.2%}), {delta} |",
        f"| test loss | {metrics.loss:.4f} |",
        f"| gate | passed (≥ {gate:.2%}) |",
        f"| ONNX parity | passed: max abs diff {parity.max_abs_diff_logits:.2e} (logits), "
        f"{parity.argmax_mismatches} argmax mismatches |",
        f"| registered | {outcome} |",
        f"| promotion evidence | {'; '.join(evidence_lines(card.decision))} |",
        f"| ONNX SHA-256 | `{card.files['model.onnx']}` |",
        f"| dataset SHA-256 | `{card.data.dataset_sha256}` |",
        f"| code | git `{code.get('git_commit', 'unknown')}`{dirty} |",
        f"| files | {len(card.files)} in {card.name} v{card.version} (model, reports, "
        f"plots: `mnist-pipeline models show {card.version} --json`) |",
        "",
        _embedded_png(layout.plots, CURVES_PNG),
        "",
        _embedded_png(layout.plots, CONFUSION_PNG),
        "",
        _embedded_png(layout.plots, MISTAKES_PNG),
    ]
    return "\n".join(lines)


def publish_report(
    params: Params, layout: Layout, results: dict[str, Any], registry: Registry
) -> None:
    """Create the keyed artifacts of a run that registered (each key keeps its history across
    runs in the Prefect UI), `results` being its stages' results."""
    metrics, parity, registration = results["evaluate"], results["parity"], results["register"]
    champion = registration.champion
    champion_accuracy = None if champion is None else read_card(registry, champion).metrics.accuracy
    card = read_card(registry, registration.version)
    create_markdown_artifact(
        key=REPORT_KEY,
        markdown=report_markdown(
            params, layout, metrics, parity, registration, card, champion_accuracy
        ),
        description="Retraining report: metrics, gate, parity, registry decision",
    )
    rows = [
        {"digit": digit, **{k: round(float(v), 4) for k, v in stats.items()}}
        for digit, stats in sorted(metrics.per_class.items())
    ]
    create_table_artifact(key=PER_CLASS_KEY, table=rows, description="Per-class test metrics")
    create_markdown_artifact(
        key=MISTAKES_KEY,
        markdown="## Most confident mistakes\n\n" + _embedded_png(layout.plots, MISTAKES_PNG),
        description="Misclassified test images, most confident first",
    )
    tags = [f"alias:{a}" for a in registration.aliases]
    tag_run("registered" if registration.registered else "not-registered", *tags)


def gate_rows(metrics: Metrics) -> list[str]:
    """Table rows of the gates evaluate applied, each with the threshold it used: MNIST test,
    and the extra holdout when it had one (either alone can reject a candidate)."""
    test = accuracy_passes(metrics.accuracy, metrics.min_accuracy)
    rows = [
        f"| test accuracy | {metrics.correct}/{metrics.total} ({metrics.accuracy:.2%}) |",
        f"| gate | {'passed' if test else 'missed'}: evaluate.min_accuracy "
        f"{metrics.min_accuracy:.2%} |",
    ]
    held = metrics.extra
    if held.total and held.accuracy is not None:
        needed = held.min_extra_accuracy
        rows += [
            f"| extra holdout accuracy | {held.correct}/{held.total} ({held.accuracy:.2%}) |",
            f"| extra holdout gate | {'passed' if held.passed else 'missed'}: "
            + ("none set |" if needed is None else f"evaluate.min_extra_accuracy {needed:.2%} |"),
        ]
    return rows


def publish_rejected(layout: Layout, stage: str, message: str) -> None:
    """The report of a candidate the gate or parity rejected: when an operator needs it most."""
    lines = [f"# MNIST retraining: rejected at {stage}", "", f"> {message}", ""]
    if layout.metrics.is_file():
        metrics = read_report(Metrics, layout.metrics, "evaluate")
        lines += ["| item | value |", "|---|---|", *gate_rows(metrics)]
    if stage == "parity" and layout.parity_report.is_file():
        parity = read_report(Parity, layout.parity_report, "parity")
        lines.append(
            f"| ONNX parity | failed: max abs diff {parity.max_abs_diff_logits} (logits), "
            f"{parity.argmax_mismatches} argmax mismatches, parity.atol {parity.atol} |"
        )
    lines += ["", "Nothing was registered.", "", _embedded_png(layout.plots, MISTAKES_PNG)]
    create_markdown_artifact(
        key=REPORT_KEY, markdown="\n".join(lines), description=f"Rejected at {stage}"
    )
    tag_run("rejected", f"rejected:{stage}")


def publish_up_to_date(params: Params, version: int, fingerprint: dict[str, Any]) -> None:
    """The report of a run that found its inputs already registered (trained nothing)."""
    name = params.registry.model_name
    lines = [
        f"# MNIST retraining: up to date ({name} v{version})",
        "",
        f"v{version} was trained on the same inputs (or a run with them reproduced its files), "
        "so this run trained and registered nothing (run with `force` to retrain anyway).",
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
    tag_run("up-to-date")
