"""params.yaml, parsed once into frozen, validated, typed sections (the only YAML reader)."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mnist_pipeline.core.contract import MNIST_TRAIN_IMAGES
from mnist_pipeline.core.errors import ParamsError
from mnist_pipeline.core.params_file import read_params_file
from mnist_pipeline.core.params_overrides import apply_overrides, check_moved
from mnist_pipeline.core.service_params import (
    RegistryParams,
    ScheduleParams,
    Section,
    ServeParams,
)
from mnist_pipeline.core.validators import (
    check_location,
    check_mirror,
    describe_errors,
    empty_sections_as_mappings,
)
from mnist_pipeline.data.manifest import DEFAULT_SHA256

DEFAULT_PARAMS_PATH = Path("params.yaml")
MIRROR_ENV = "MNIST_MIRROR"
# The mirrors torchvision uses, in its order.
DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)


class DataParams(Section):
    """Where the dataset comes from."""

    mirrors: tuple[str, ...] = Field(default=DEFAULT_MIRRORS, min_length=1)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)  # a socket timeout: at most an hour
    # Expected SHA-256 of each decompressed file; override only to serve other (test) data.
    sha256: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_SHA256))

    @field_validator("sha256")
    @classmethod
    def _known_files(cls, value: dict[str, str]) -> dict[str, str]:
        if set(value) != set(DEFAULT_SHA256):
            raise ValueError(f"must name exactly the files {sorted(DEFAULT_SHA256)}")
        hexdigits = set("0123456789abcdef")
        bad = [k for k, v in value.items() if len(v) != 64 or not set(v) <= hexdigits]
        if bad:
            raise ValueError(f"not a lowercase hex SHA-256 for {bad}")
        return value

    @field_validator("mirrors", mode="before")
    @classmethod
    def _mirror_list(cls, value: Any) -> Any:
        """A YAML list as the tuple; a blank entry (it would read as the current folder), one
        with white space around it and a URL that fetch cannot read (s3://, http:/ with one
        slash) refused."""
        for mirror in value if isinstance(value, list | tuple) else ():
            if isinstance(mirror, str):  # not a string: the field's type check says so
                if not mirror.strip():
                    raise ValueError("a mirror is blank: give a URL or a folder")
                check_mirror(mirror)
        return tuple(value) if isinstance(value, list) else value


class ModelParams(Section):
    """The network, read by every stage that builds it (train, evaluate, export, parity)."""

    arch: Literal["classic", "wide"] = "classic"


class AugmentParams(Section):
    """Random affine warps of training batches (augment.py), when `enabled`."""

    enabled: bool = True
    rotate_deg: float = Field(default=10.0, ge=0, le=90)
    scale: float = Field(default=0.1, ge=0, lt=1)  # 1 +- this
    shear_deg: float = Field(default=10.0, ge=0, le=45)
    translate_px: float = Field(default=2.0, ge=0, le=14)


class TrainParams(Section):
    """Optimisation: everything besides the architecture that shapes the trained weights."""

    epochs: int = Field(default=12, ge=1, le=1000)
    batch_size: int = Field(default=128, ge=1, le=65536)
    learning_rate: float = Field(default=0.001, gt=0, le=10)
    lr_schedule: Literal["onecycle", "constant"] = "onecycle"
    max_learning_rate: float = Field(default=0.005, gt=0, le=10)
    # OneCycle: the share of the steps spent rising to max_learning_rate (the rest anneals).
    warmup_fraction: float = Field(default=0.3, gt=0, lt=1)
    # Adam's (beta1, beta2): its moving averages of the gradient and of its square.
    adam_betas: tuple[float, float] = (0.9, 0.999)
    seed: int = Field(default=1, ge=0, le=2**63 - 2)  # torch seeds are 64-bit; shuffle uses +1
    val_size: int = Field(default=5000, ge=0)
    device: Literal["cpu", "cuda"] = "cpu"
    num_threads: int = Field(default=2, ge=1, le=256)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    max_batches_per_epoch: int | None = Field(default=None, ge=1)
    # Each labelled digit users added (the extra train split) is seen this many times an epoch.
    extra_weight: int = Field(default=4, ge=1, le=1000)
    # Probability of every dropout layer of any arch while training; None: the arch's own.
    dropout: float | None = Field(default=0.0, ge=0, lt=1)
    # Fit a temperature on the validation split after training and fold it into the last layer
    # (temperature.py): calibrated probabilities, the same predictions. Needs val_size > 0.
    temperature_scaling: bool = True
    # Cross-entropy against targets that give this share of each label to all ten classes.
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    augment: AugmentParams = AugmentParams()

    @field_validator("adam_betas", mode="before")
    @classmethod
    def _betas_list_to_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("val_size")
    @classmethod
    def _leaves_training_images(cls, value: int) -> int:
        if value >= MNIST_TRAIN_IMAGES:
            raise ValueError(
                f"{value} leaves no images to train on: the validation split is held out of "
                f"MNIST's {MNIST_TRAIN_IMAGES:,} training images"
            )
        return value

    @field_validator("adam_betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= beta < 1 for beta in value):
            raise ValueError(f"each of adam_betas must be in [0, 1), got {list(value)}")
        return value

    @model_validator(mode="after")
    def _onecycle_rises(self) -> TrainParams:
        if self.lr_schedule == "onecycle" and self.max_learning_rate < self.learning_rate:
            raise ValueError(
                f"max_learning_rate ({self.max_learning_rate}) must be >= learning_rate "
                f"({self.learning_rate}): onecycle rises from learning_rate to max_learning_rate"
            )
        if self.temperature_scaling and self.val_size == 0:
            raise ValueError(
                "temperature_scaling is on but val_size is 0: it is fitted on the validation "
                "split, so set val_size > 0 or temperature_scaling: false"
            )
        return self


class EvaluateParams(Section):
    """The accuracy gate and evaluation batch size."""

    min_accuracy: float = Field(default=0.98, ge=0, le=1)
    # The gate on the extra holdout (labelled digits users added); None: reported, not gated.
    min_extra_accuracy: float | None = Field(default=None, ge=0, le=1)
    batch_size: int = Field(default=250, ge=1, le=65536)
    # Test digits per transformation of the robustness set (robustness.py); 0: no robustness report.
    robustness_per_transform: int = Field(default=500, ge=0, le=10_000)


class IngestParams(Section):
    """The labelled digits users add (data/extra/): the share held out for evaluation."""

    # Per image, by its content hash: the same image is always on the same side.
    holdout_percent: int = Field(default=20, ge=0, le=90)


class InboxParams(Section):
    """Where the inbox is shared between hosts that share no folder (inbox/shared.py)."""

    # s3://BUCKET/PREFIX (or a folder): `data add`, `data accept` and `data remove` change it
    # first, and `data sync` / the retraining flow bring data/extra/ in line with it before ingest.
    shared: str | None = Field(default=None, min_length=1)

    @field_validator("shared")
    @classmethod
    def _shared(cls, value: str | None) -> str | None:
        return None if value is None else check_location(value)


class ExportParams(Section):
    """ONNX export."""

    opset: int = Field(default=18, ge=17, le=23)


class ParityParams(Section):
    """The onnxruntime-vs-PyTorch parity gate."""

    # at most 0.01: probabilities differ by at most 1, so a tolerance near it checks nothing
    # but the argmax; float32 exports agree to ~1e-5
    atol: float = Field(default=1e-4, gt=0, le=0.01)
    batch_sizes: tuple[Annotated[int, Field(ge=1, le=65536)], ...] = Field(
        default=(1, 7), min_length=1
    )

    @field_validator("batch_sizes", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value


class Params(Section):
    """All of params.yaml."""

    data: DataParams = DataParams()
    ingest: IngestParams = IngestParams()
    inbox: InboxParams = InboxParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()
    parity: ParityParams = ParityParams()
    registry: RegistryParams = RegistryParams()
    schedule: ScheduleParams = ScheduleParams()
    serve: ServeParams = ServeParams()

    @model_validator(mode="after")
    def _exportable(self) -> Params:
        if self.model.arch == "wide" and self.export.opset < 18:  # found by export otherwise
            raise ValueError(
                "model.arch wide needs export.opset 18 or later: its global average pooling "
                f"exports as ReduceMean with its axes as an input, which opset {self.export.opset} "
                "lacks"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dict (for model cards and reports)."""
        return self.model_dump(mode="json")


def parse_params(
    raw: Any,
    source: str = "params",
    overrides: Mapping[str, Any] | None = None,
    set_by: Mapping[str, str] | None = None,
) -> Params:
    """Validate an already-loaded mapping (plus dotted overrides) into `Params`; errors call an
    override's value an override, or what `set_by` names for its key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: top level must be a mapping of sections")
    raw = copy.deepcopy(raw)  # overrides change the copy, never the caller's mapping
    check_moved(raw, source)
    empty_sections_as_mappings(raw, Params)
    apply_overrides(raw, overrides or {}, source, set(Params.model_fields))
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        set_elsewhere = {key: "override" for key in overrides or {}} | dict(set_by or {})
        raise ParamsError(describe_errors(exc, source, Params, set_elsewhere)) from None


def load_params(
    path: Path | str = DEFAULT_PARAMS_PATH,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Params:
    """Read and validate params.yaml (or a recipe that extends it, core/params_file.py);
    `MNIST_MIRROR` (comma-separated) replaces data.mirrors."""
    path = Path(path)
    raw, source = read_params_file(path)
    merged, set_by = dict(overrides or {}), {}
    env_mirror = (os.environ if environ is None else environ).get(MIRROR_ENV, "").strip()
    if env_mirror and "data.mirrors" not in merged:
        mirrors = [m.strip() for m in env_mirror.split(",") if m.strip()]
        if not mirrors:
            raise ParamsError(f"{MIRROR_ENV}={env_mirror!r} names no mirror (comma-separated)")
        merged["data.mirrors"] = mirrors
        set_by["data.mirrors"] = MIRROR_ENV  # an error in it names the variable
    return parse_params(raw, source=source, overrides=merged, set_by=set_by)
