"""The pipeline's reports, typed like its params: metrics.json, parity.json, model.json and
reports/ingest.json are written and read through these models only, and a registered version's
card is read through `ModelCard`.

Unknown or missing fields, or values of the wrong type, are a PipelineError naming the file and
the field (`read_report`), so a reader never digs through a dict by string key and a report
from another version of the pipeline is refused with a reason rather than misread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mnist_pipeline.core import json_text
from mnist_pipeline.core.atomic import write_text
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.regular_file import read_regular

R = TypeVar("R", bound="Report")
MAX_REPORT_BYTES = 64 * 1024 * 1024  # the reports are kilobytes; a file far larger is none


class Report(BaseModel):
    """A report: frozen, no unknown fields, no coercion (a string is not a number)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON data, fields in their declared order; optional fields that were
        never given stay absent."""
        return self.model_dump(mode="json", exclude_unset=True)

    def text(self) -> str:
        """The report as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def write(self, path: Path) -> None:
        """Atomically write the report as indented JSON."""
        write_text(path, self.text())


class ClassScores(Report):
    precision: float
    recall: float
    f1: float
    support: int


class HoldoutScores(Report):
    """The extra holdout's scores (total 0: evaluated without one)."""

    total: int
    holdout_sha256: str
    extra_sha256: str
    min_extra_accuracy: float | None
    accuracy: float | None
    correct: int
    passed: bool
    per_class: dict[str, ClassScores] | None = None


class Metrics(Report):
    """reports/metrics.json: evaluate's whole report and its gate verdict."""

    accuracy: float
    loss: float
    correct: int
    total: int
    min_accuracy: float
    passed: bool
    per_class: dict[str, ClassScores]
    confusion_matrix: list[list[int]]
    extra: HoldoutScores
    calibration: dict[str, Any]  # ece, bins, table (metrics.calibration)
    robustness: dict[str, Any] | None  # overall, accuracy, per_transform (quality.py)
    dataset_sha256: str
    state_dict_sha256: str
    arch: str
    # SHA-256 of every other file evaluate wrote (predictions, headline, plots) by path under
    # the run folder; metrics.json is written last, so a later stage finds an unfinished one.
    outputs: dict[str, str] | None = None


class Parity(Report):
    """reports/parity.json: onnxruntime against PyTorch, and its verdict."""

    passed: bool
    max_abs_diff_logits: float | None
    max_abs_diff_probabilities: float | None
    max_rel_diff_logits: float | None
    argmax_mismatches: int
    images: int
    batch_sizes: list[int]
    atol: float
    onnx_sha256: str
    state_dict_sha256: str
    onnx_path: str
    per_batch_size: dict[str, dict[str, Any]]
    reference_evaluator: dict[str, Any]
    versions: dict[str, str]


class Fingerprint(Report):
    """What a training learnt from, hashed (training/fingerprint.py)."""

    sha256: str
    dataset_sha256: str
    extra_sha256: str
    code_sha256: str
    params: dict[str, dict[str, Any]]  # the `model` and `train` sections


class TrainRecord(Report):
    """models/model.json: which weights a training wrote, from which inputs."""

    state_dict_sha256: str
    fingerprint: Fingerprint
    temperature: dict[str, Any] | None = None
    history_sha256: str | None = None  # reports/train_history.csv, written with model.pt
    # what `train.precision` resolved to where it ran ("auto": bf16 only on native hardware);
    # None in records written before it was recorded
    precision: Literal["bf16", "fp32"] | None = None


class IngestReport(Report):
    """reports/ingest.json: what ingest took per split and digit, and what it refused, why."""

    counts: dict[str, int]
    per_class: dict[str, list[int]]
    rejected: dict[str, str]  # source -> reason
    duplicates: dict[str, str]  # source -> the file it duplicates
    holdout_percent: int
    inbox_sha256: str
    extra_sha256: str


class CardMetrics(Report):
    """The card's copy of the headline test scores (and the extra holdout's, if any)."""

    accuracy: float
    loss: float
    correct: int
    total: int
    per_class: dict[str, ClassScores] | None = None
    extra: dict[str, Any] | None = None  # accuracy, correct, total, holdout_sha256, min_extra...


class CardGate(Report):
    min_accuracy: float
    evaluated_min_accuracy: float | None
    passed: bool


class CardParity(Report):
    passed: bool
    max_abs_diff_logits: float | None
    max_abs_diff_probabilities: float | None
    argmax_mismatches: int
    images: int
    atol: float
    onnx_sha256: str


class Comparison(Report):
    """Challenger vs production on one labelled set (pipeline/promotion.py). Paired: both
    models' answers on the same images, n01 = images only production gets right, n10 = only
    the challenger; p_value is McNemar's exact two-sided test on them. Unpaired (no per-image
    answers for the challenger): only the recorded accuracies, n01/n10/p_value None."""

    images: int
    paired: bool
    challenger_accuracy: float
    champion_accuracy: float
    gain: float  # challenger - production accuracy
    n01: int | None = None
    n10: int | None = None
    p_value: float | None = None
    per_digit: dict[str, float] = Field(default_factory=dict)  # accuracy delta per true digit
    verdict: Literal["better", "worse", "same"]
    why: str  # the verdict in words


class PromotionEvidence(Report):
    """What a promotion decision rested on: the policy and a comparison per labelled set."""

    significance: float
    min_gain: float
    per_digit_tolerance: float
    promote_on_holdout: bool
    mnist: Comparison | None = None  # None: not compared (no production, or see reason)
    holdout: Comparison | None = None  # None: no extra holdout (or not comparable)
    holdout_sha256: str | None = None


class CardDecision(Report):
    """The alias a version was given when registered, why, and against which production."""

    alias: str
    reason: str
    champion: int | None
    margin: float | None = None
    holdout: dict[str, Any] | None = None  # the extra-holdout comparison, when there was one
    evidence: PromotionEvidence | None = None  # since paired promotion (older cards: margin)
    proposed: str | None = None  # the alias the rules called for, held back for approval


class CardData(Report):
    dataset_sha256: str | None
    extra_sha256: str | None = None


class ModelCard(Report):
    """A registered version's card: the registry's fields (name, version, created, files,
    alias_trail, seal, decision, signature) and the pipeline's description (pipeline/card.py)."""

    schema_: int = Field(alias="schema")
    name: str
    version: int
    created: str
    inputs: str | None = None
    metrics: CardMetrics
    gate: CardGate
    parity: CardParity
    decision: CardDecision
    params: dict[str, Any]  # every section as configured (model, train: as trained)
    data: CardData
    fingerprint: Fingerprint | None = None
    origin: dict[str, Any] | None = None
    code: dict[str, Any] | None = None
    libraries: dict[str, str | None] | None = None
    files: dict[str, str]
    alias_trail: str | None = None  # the audit trail's last event at registration (newer cards)
    card_sha256: str
    signature: dict[str, str] | None = None


def parse_report(model: type[R], data: Any, where: str) -> R:
    """Validate parsed JSON as `model`; PipelineError naming `where` and the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise PipelineError(f"{where}: field {field!r}: {first['msg']}") from None


def parse_json_report(model: type[R], data: bytes, where: str) -> R:
    """`model` from a report file's bytes (PipelineError naming `where` and the field)."""
    try:
        parsed = json_text.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PipelineError(f"{where} is not readable JSON: {exc}") from None
    return parse_report(model, parsed, where)


def read_report(model: type[R], path: Path, stage: str) -> R:
    """A stage's report from `path`; a missing, malformed or mistyped one is an error naming
    the file, the field and the stage to run."""
    try:
        data = json_text.loads(read_regular(path, MAX_REPORT_BYTES))
    except FileNotFoundError:
        raise PipelineError(f"no report at {path}: run `mnist-pipeline {stage}`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PipelineError(
            f"{path} is not readable JSON ({exc}): run `mnist-pipeline {stage}`"
        ) from None
    return parse_report(model, data, str(path))
