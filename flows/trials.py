"""A training's outcome as a Prefect artifact: how a sweep reads its child runs' results.

A retraining run that trained publishes `mnist-trial`, a one-row table: its validation accuracy,
inputs fingerprint and the SHA-256 of the weights it trained (and the version, once registered).
A run that found its inputs registered publishes `up_to_date`, that version and the fingerprint.
The artifact lives in the Prefect server's database, so a sweep reads it over the API wherever
the child ran; a flow run's return value would need result storage every machine can reach (a
worker's default result storage is its own disk).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.client.schemas.sorting import ArtifactSort

from mnist_pipeline.core import json_text
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.reports import TrainRecord, read_report

TRIAL_KEY = "mnist-trial"


def trial_row(layout: Layout, val_accuracy: float | None) -> dict[str, Any]:
    """What a sweep compares and checks: validation accuracy, fingerprint, weights' SHA-256,
    and the data trained on (MNIST's and the labelled digits' hashes, which the fingerprint
    includes: trials on different data are not a comparison of configs alone)."""
    record = read_report(TrainRecord, layout.train_record, "train")
    return {
        "val_accuracy": val_accuracy,
        "fingerprint": record.fingerprint.sha256,
        "state_dict_sha256": record.state_dict_sha256,
        "dataset_sha256": record.fingerprint.dataset_sha256,
        "extra_sha256": record.fingerprint.extra_sha256,
    }


def publish_trial(row: dict[str, Any]) -> None:
    """The row as this run's `mnist-trial` table artifact."""
    create_table_artifact(
        table=[row],
        key=TRIAL_KEY,
        description="Validation accuracy and weights of this training (read by sweeps).",
    )


def read_trial(client: SyncPrefectClient, flow_run_id: UUID) -> dict[str, Any] | None:
    """The `mnist-trial` row flow run `flow_run_id` published (None: it published none)."""
    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[TRIAL_KEY]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
        ),
        sort=ArtifactSort.CREATED_DESC,
        limit=1,
        offset=0,  # explicit: the server refuses a null offset (tests/flow_helpers.py)
    )
    if not found:
        return None
    data = found[0].data
    rows = json_text.loads(data) if isinstance(data, str) else data
    return rows[0] if rows else None
