"""A registration candidate: the files one pipeline run produced, and the checks they must pass
before the registry is asked to keep them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from mnist_pipeline.core.errors import GateError, PipelineError, RegistryError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import Params
from mnist_pipeline.core.regular_file import NOT_REGULAR, NotRegularFile, read_regular
from mnist_pipeline.core.reports import Metrics, Parity, TrainRecord, parse_json_report
from mnist_pipeline.data.manifest import MNIST_FILES, dataset_sha256
from mnist_pipeline.evaluation import gate
from mnist_pipeline.pipeline.versions import (
    HISTORY_FILE,
    METRICS_FILE,
    ONNX_FILE,
    PARITY_FILE,
    PLOTS_DIR,
    STATE_DICT_FILE,
    TRAIN_RECORD_FILE,
)


@dataclass(frozen=True)
class Candidate:
    """Paths of what to register; `workdir` is where git is asked for lineage. The training
    record (train.py) binds model.pt to its inputs fingerprint and the params it was trained
    with; the card takes both from it."""

    onnx: Path
    state_dict: Path
    train_record: Path
    metrics: Path
    parity: Path
    plots: tuple[Path, ...] = ()
    train_history: Path | None = None
    workdir: Path | None = None
    extra_dir: Path | None = None  # the ingested extra data: promotion re-scores its holdout
    # evaluate's per-image MNIST test answers and the MNIST folder they were made on: promotion
    # compares production with them image by image (None: recorded accuracy only, unpaired)
    predictions: Path | None = None
    data_dir: Path | None = None

    def files(self) -> dict[str, Path]:
        """Where each source file goes inside the version folder."""
        files = {
            ONNX_FILE: self.onnx,
            STATE_DICT_FILE: self.state_dict,
            TRAIN_RECORD_FILE: self.train_record,
            METRICS_FILE: self.metrics,
            PARITY_FILE: self.parity,
        }
        if self.train_history is not None:
            files[HISTORY_FILE] = self.train_history
        for plot in self.plots:
            rel = f"{PLOTS_DIR}/{plot.name}"
            if rel in files:
                raise RegistryError(f"two candidate plots are both named {plot.name!r}")
            files[rel] = plot
        return files

    def read(self) -> dict[str, bytes]:
        """Every file's bytes, read once (the checks and the registry see the same bytes)."""
        contents, missing = {}, []
        for rel, path in self.files().items():
            try:
                contents[rel] = read_regular(path)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                missing.append(str(path))
            except NotRegularFile:  # a pipe: refused, not waited on
                raise RegistryError(f"candidate file {path} is {NOT_REGULAR}") from None
        if missing:
            raise RegistryError("candidate files not found: " + ", ".join(missing))
        return contents


def candidate_from_layout(layout: Layout) -> Candidate:
    """What the pipeline last produced under `layout` (errors name the stage that is missing)."""
    needed = {
        layout.onnx: "export",
        layout.state_dict: "train",
        layout.train_record: "train",
        layout.metrics: "evaluate",
        layout.predictions: "evaluate",
        layout.parity_report: "parity",
    }
    missing = [
        f"{path} (run `mnist-pipeline {stage}`)"
        for path, stage in needed.items()
        if not path.is_file()
    ]
    if missing:
        raise RegistryError("nothing to register; missing: " + "; ".join(missing))
    # not a hidden temp file a killed write left (evaluate lists none of those either)
    plots = tuple(sorted(layout.plots.glob("[!.]*.png"))) if layout.plots.is_dir() else ()
    history = layout.train_history if layout.train_history.is_file() else None
    return Candidate(
        onnx=layout.onnx,
        state_dict=layout.state_dict,
        train_record=layout.train_record,
        metrics=layout.metrics,
        parity=layout.parity_report,
        plots=plots,
        train_history=history,
        workdir=layout.project,
        extra_dir=layout.extra_dir,
        predictions=layout.predictions,
        data_dir=layout.data_dir,
    )


@dataclass(frozen=True)
class RunReports:
    """A candidate's three reports, typed."""

    metrics: Metrics
    parity: Parity
    record: TrainRecord

    @classmethod
    def parse(cls, contents: dict[str, bytes]) -> RunReports:
        """From the candidate's file bytes (PipelineError naming the file and field)."""
        return cls(
            parse_json_report(Metrics, contents[METRICS_FILE], METRICS_FILE),
            parse_json_report(Parity, contents[PARITY_FILE], PARITY_FILE),
            parse_json_report(TrainRecord, contents[TRAIN_RECORD_FILE], TRAIN_RECORD_FILE),
        )


def check_reports(
    reports: RunReports, hashes: dict[str, str], params: Params
) -> tuple[float, Params]:
    """The candidate's accuracy and the params its weights were trained with, if the chain holds.

    `hashes` maps every stored file to its SHA-256. Refuses (GateError) a model that failed
    evaluation or parity, whose verdicts were reached under a laxer gate than params sets now,
    or any report made from other files than these: metrics and parity for another model.pt,
    parity for another model.onnx, the training record for another model.pt.
    """
    weights = hashes[STATE_DICT_FILE]
    metrics, parity = reports.metrics, reports.parity
    try:
        accuracy = gate.evaluation_passed(metrics, METRICS_FILE, params.evaluate.min_accuracy)
        gate.extra_passed(metrics, METRICS_FILE, params.evaluate.min_extra_accuracy)
        gate.parity_passed(parity, hashes[ONNX_FILE], PARITY_FILE, params.parity.atol)
        for name, recorded, stage in (
            (TRAIN_RECORD_FILE, reports.record.state_dict_sha256, "train"),
            (METRICS_FILE, metrics.state_dict_sha256, "evaluate"),
            (PARITY_FILE, parity.state_dict_sha256, "parity"),
        ):
            gate.made_from(recorded, weights, name, STATE_DICT_FILE, stage)
        _check_run_files(reports, hashes)
        trained = trained_params(reports.record, params)
    except PipelineError as exc:
        raise type(exc)(f"refusing to register: {exc}") from None
    return accuracy, trained


def _check_run_files(reports: RunReports, hashes: dict[str, str]) -> None:
    """GateError unless the plots are those metrics.json lists (no more, no fewer, the same
    bytes) and the history is the one model.json records: an evaluate or a train killed after
    some writes leaves files of another run beside the reports."""
    outputs = reports.metrics.outputs
    if outputs is not None:  # recorded since evaluate lists what it wrote
        recorded = {
            f"{PLOTS_DIR}/{PurePosixPath(rel).name}": sha256
            for rel, sha256 in outputs.items()
            if PurePosixPath(rel).parent.name == PLOTS_DIR and rel.endswith(".png")
        }
        stored = [rel for rel in hashes if rel.startswith(f"{PLOTS_DIR}/")]
        gate.outputs_made_with(recorded, hashes, METRICS_FILE, "evaluate")
        for rel in stored:
            if rel not in recorded:
                raise GateError(
                    f"{rel} is not among the files {METRICS_FILE} records (put there by hand, "
                    "or written by an `evaluate` that did not finish): move it out of the "
                    "plots folder, or run `mnist-pipeline evaluate`"
                )
    history = reports.record.history_sha256
    if history is not None:  # recorded since train hashes its history
        if HISTORY_FILE not in hashes:
            raise GateError(
                f"{HISTORY_FILE} is missing but {TRAIN_RECORD_FILE} records it: "
                "run `mnist-pipeline train`"
            )
        gate.made_from(history, hashes[HISTORY_FILE], TRAIN_RECORD_FILE, HISTORY_FILE, "train")


def trained_params(record: TrainRecord, params: Params) -> Params:
    """`params` with the `model` and `train` sections the weights were trained with."""
    sections = record.fingerprint.params
    update = {}
    for name in ("model", "train"):
        try:
            update[name] = type(getattr(params, name)).model_validate(sections[name])
        except ValidationError as exc:  # recorded by a version of mnist-pipeline with other keys
            problems = "; ".join(
                f"{'.'.join(str(part) for part in (name, *item['loc']))}: {item['msg']}"
                for item in exc.errors()[:3]
            )
            raise RegistryError(
                f"{TRAIN_RECORD_FILE}: its training params do not fit this version of "
                f"mnist-pipeline ({problems}): the weights were trained by another version; "
                "run `mnist-pipeline train` again"
            ) from None
        except (KeyError, TypeError, ValueError) as exc:
            why = f"no {exc} section" if isinstance(exc, KeyError) else str(exc)
            raise RegistryError(f"{TRAIN_RECORD_FILE}: no valid training params ({why})") from None
    return params.model_copy(update=update)


def exported_params(params: Params, onnx_bytes: bytes) -> Params:
    """`params` with `export.opset` as model.onnx has it: the card says what the file is,
    also when params.yaml was changed after the export (a registration without re-export)."""
    import onnx  # only here: the rest of registration does not need it

    try:
        imports = onnx.load_model_from_string(onnx_bytes).opset_import
    except Exception as exc:  # noqa: BLE001 - a file parity ran on, but onnx cannot read
        raise RegistryError(f"{ONNX_FILE} cannot be read by onnx: {exc}") from None
    opset = next((o.version for o in imports if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset == params.export.opset:
        return params
    return params.model_copy(update={"export": params.export.model_copy(update={"opset": opset})})


def check_evaluated_data(candidate: Candidate, metrics: Metrics) -> None:
    """GateError unless the candidate's dataset folder holds the dataset metrics.json was
    measured on, when registration reads it (the drift reference's images, the paired
    comparison's labels): a fetch of another dataset since evaluate would pair this model's
    answers with other images. Nothing to check without predictions or all four files."""
    data_dir = candidate.data_dir
    if candidate.predictions is None or data_dir is None:
        return
    if not all((data_dir / f.name).is_file() for f in MNIST_FILES):
        return
    found, recorded = dataset_sha256(data_dir), str(metrics.dataset_sha256)
    if found != recorded:  # `evaluate` alone would refuse weights trained on the other dataset
        raise GateError(
            f"refusing to register: {METRICS_FILE} was measured on another dataset (sha256 "
            f"{recorded[:12]}) than {data_dir} holds ({found[:12]}): fetch that one back, or "
            "run `mnist-pipeline train` and `evaluate` again (`dvc repro` does)"
        )
