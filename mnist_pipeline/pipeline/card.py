"""What the pipeline says about a version in its card: scores, verdicts, params, lineage.

The registry adds its own fields (name, version, created, the files' SHA-256) and seals the
card (registry/card.py); this module builds the pipeline's part and prints a card for people.
Torch-free: library versions come from package metadata, not imports.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from mnist_pipeline.core.params import Params
from mnist_pipeline.core.reports import (
    CardDecision,
    Comparison,
    Fingerprint,
    Metrics,
    ModelCard,
    Parity,
)

LIBRARIES = (
    "mnist-pipeline",
    "torch",
    "torchvision",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "numpy",
    "pydantic",
    "prefect",
    "dvc",
)


def _git(workdir: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=workdir, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def code_version(workdir: Path | None) -> dict[str, Any]:
    """Git commit of `workdir` and whether its tree has uncommitted changes ("unknown": no git)."""
    head = _git(workdir or Path("."), "rev-parse", "HEAD")
    if head is None:
        return {"git_commit": "unknown", "git_dirty": None}
    status = _git(workdir or Path("."), "status", "--porcelain")
    return {
        "git_commit": head.strip(),
        "git_dirty": None if status is None else bool(status.strip()),
    }


def run_origin() -> dict[str, Any]:
    """Where a registration comes from: a Prefect flow run (id, name, deployment) or the CLI."""
    if "prefect" in sys.modules:  # only a process that imported Prefect can be in a flow run
        from prefect.runtime import deployment, flow_run

        if flow_run.id:
            return {
                "kind": "prefect",
                "flow_run_id": flow_run.id,
                "flow_run_name": flow_run.name,
                "deployment": deployment.name,
            }
    return {"kind": "cli"}


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape a model (None when not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def lineage(workdir: Path | None) -> dict[str, Any]:
    """Everything about where a candidate came from that does not depend on its version."""
    return {
        "code": code_version(workdir),
        "libraries": library_versions(),
        "origin": run_origin(),
    }


def _extra_scores(metrics: Metrics) -> dict[str, Any] | None:
    """The extra holdout's headline scores (None: evaluated without one)."""
    held = metrics.extra
    if not held.total:
        return None
    keys = ("accuracy", "correct", "total", "holdout_sha256", "min_extra_accuracy")
    return held.model_dump(mode="json", include=set(keys))


def describe(
    *,
    metrics: Metrics,
    parity: Parity,
    params: Params,
    origin: dict[str, Any],
    fingerprint: Fingerprint | None = None,
) -> dict[str, Any]:
    """The pipeline's part of a version's card (docs/registry.md lists the keys)."""
    scores = metrics.model_dump(mode="json", include={"accuracy", "loss", "correct", "total"})
    per_class = {digit: s.to_dict() for digit, s in metrics.per_class.items()}
    checked = (
        "passed",
        "max_abs_diff_logits",
        "max_abs_diff_probabilities",
        "argmax_mismatches",
        "images",
        "atol",
        "onnx_sha256",
    )
    return {
        "metrics": scores | {"per_class": per_class, "extra": _extra_scores(metrics)},
        "gate": {
            "min_accuracy": params.evaluate.min_accuracy,
            "evaluated_min_accuracy": metrics.min_accuracy,
            "passed": True,
        },
        "parity": parity.model_dump(mode="json", include=set(checked)),
        "params": params.to_dict(),
        # Hashed from the files the run read (evaluate's report), never copied from dvc.lock.
        "data": {
            "dataset_sha256": metrics.dataset_sha256,
            "extra_sha256": None if fingerprint is None else fingerprint.extra_sha256,
        },
        "fingerprint": None if fingerprint is None else fingerprint.to_dict(),
        "origin": origin.get("origin"),
        "code": origin.get("code"),
        "libraries": origin.get("libraries"),
    }


def _compared(label: str, compared: Comparison) -> str:
    if not compared.paired:
        return (
            f"{label}: {compared.verdict}, unpaired: accuracy {compared.challenger_accuracy:.4f}"
            f" vs {compared.champion_accuracy:.4f}"
        )
    line = (
        f"{label}: {compared.verdict}, n10 {compared.n10} / n01 {compared.n01}, "
        f"p {compared.p_value:.3g}, gain {compared.gain:+.4f}"
    )
    if compared.per_digit:
        worst = min(compared.per_digit, key=lambda d: compared.per_digit[d])
        line += f", worst digit {worst} {compared.per_digit[worst]:+.4f}"
    return line


def evidence_lines(decision: CardDecision) -> list[str]:
    """What the promotion decision rested on, one line per labelled set (n10: images only this
    version gets right, n01: only production; p: McNemar's exact test)."""
    evidence = decision.evidence
    if decision.champion is None:
        return ["none (no production version to compare with)"]
    if evidence is None:
        return [f"none recorded (promotion margin {decision.margin})"]
    sets = [("MNIST test", evidence.mnist), ("extra holdout", evidence.holdout)]
    lines = [_compared(label, compared) for label, compared in sets if compared is not None]
    return lines or ["none (see the decision)"]


def summary_lines(card: ModelCard, aliases: list[str]) -> list[str]:
    """A card in a dozen lines for people (`models show`; `--json` prints the whole card)."""
    metrics, parity, decision = card.metrics, card.parity, card.decision
    code, origin = card.code or {}, card.origin or {}
    dirty = {True: " (dirty)", False: "", None: ""}[code.get("git_dirty")]
    came_from = origin.get("kind", "?")
    if came_from == "prefect":
        came_from = f"prefect flow run {origin.get('flow_run_name')}"
        came_from += f" (deployment {origin['deployment']})" if origin.get("deployment") else ""
    model, train = card.params["model"], card.params["train"]
    held = metrics.extra
    extra_line = "extra        none (trained on MNIST alone)"
    if card.data.extra_sha256 not in (None, "none"):
        extra_line = f"extra        data sha256 {card.data.extra_sha256[:16]}…"
        if held:
            extra_line += f"; holdout {held['accuracy']:.4f} ({held['correct']}/{held['total']})"
    fingerprint = None if card.fingerprint is None else card.fingerprint.sha256
    return [
        f"{card.name} v{card.version}  aliases: {', '.join(aliases) or 'none'}",
        f"created      {card.created}",
        f"accuracy     {metrics.accuracy:.4f} ({metrics.correct}/{metrics.total}), "
        f"loss {metrics.loss:.4f}",
        f"gate         passed (min_accuracy {card.gate.min_accuracy})",
        f"parity       max |logits diff| {parity.max_abs_diff_logits:.2e} "
        f"(atol {parity.atol}), {parity.argmax_mismatches} argmax mismatches",
        f"decision     {decision.alias}: {decision.reason}",
        *(
            f"{'evidence' if i == 0 else '':<13}{line}"
            for i, line in enumerate(evidence_lines(decision))
        ),
        f"trained      {model['arch']}, {train['epochs']} epochs, "
        f"batch {train['batch_size']}, seed {train['seed']}",
        f"data         sha256 {card.data.dataset_sha256}",
        extra_line,
        f"fingerprint  {fingerprint}",
        f"code         git {code.get('git_commit', 'unknown')}{dirty}; from {came_from}",
        f"onnx         sha256 {card.files.get('model.onnx', 'none: the card lists no model.onnx')}",
    ]
