"""The pipeline's stages in one table: what each one runs, reads and writes.

Every stage entry function has the same shape, `entry(*sections, layout) -> Result`: it takes
the params sections listed here, in order, then the `Layout` (which also says where the data is).
The CLI (and so `dvc repro`, whose stages are CLI commands) and the Prefect flow both run a stage
through `run`, so neither encodes which params a stage needs. Entry modules are imported only
when their stage runs: the CLI starts without torch, and `models`/`predict` never load it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import Params

ALL_PARAMS = ("*",)  # `sections` of a stage that takes the whole Params


@dataclass(frozen=True)
class Stage:
    """One stage: its entry function, the params it reads, the Layout paths it reads and writes."""

    name: str
    entry: str  # "module:function"
    sections: tuple[str, ...]  # params sections passed to the entry, in order
    reads: tuple[str, ...]  # Layout attributes
    writes: tuple[str, ...]  # Layout attributes
    help: str

    def function(self) -> Callable[..., Any]:
        module, _, name = self.entry.partition(":")
        return getattr(importlib.import_module(module), name)


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage(
            "fetch",
            "mnist_pipeline.data.fetch:fetch",
            ("data",),
            reads=(),
            writes=("data_dir",),
            help="Download and verify the four MNIST files into data/mnist/.",
        ),
        Stage(
            "ingest",
            "mnist_pipeline.inbox.ingest:ingest",
            ("ingest",),
            reads=("inbox",),
            writes=("extra_dir", "ingest_report"),
            help="Check and preprocess the labelled digits in data/extra/ into data/ingested/.",
        ),
        Stage(
            "train",
            "mnist_pipeline.training.train:train",
            ("model", "train"),
            reads=("data_dir", "extra_dir"),
            writes=("state_dict", "train_record", "train_history"),
            help="Train the CNN (resumes from models/checkpoint.pt); writes models/model.pt.",
        ),
        Stage(
            "evaluate",
            "mnist_pipeline.evaluation.evaluate:evaluate",
            ("model", "evaluate"),
            reads=("data_dir", "extra_dir", "state_dict", "train_record", "train_history"),
            writes=("metrics", "scores", "predictions", "plots"),
            help="Score models/model.pt on the test set, write reports/, apply the accuracy gate.",
        ),
        Stage(
            "export",
            "mnist_pipeline.export.export:export",
            ("model", "export", "evaluate"),  # the gates as set now
            reads=("data_dir", "extra_dir", "state_dict", "metrics"),
            writes=("onnx",),
            help="Export models/model.pt to models/model.onnx (refused if the gate failed).",
        ),
        Stage(
            "parity",
            "mnist_pipeline.export.parity:parity",
            ("model", "parity"),
            reads=("data_dir", "state_dict", "onnx"),
            writes=("parity_report", "parity_scores"),
            help="Check onnxruntime against PyTorch on the test set; writes reports/parity.json.",
        ),
        Stage(
            "register",
            "mnist_pipeline.pipeline.register:register",
            ALL_PARAMS,  # the model card records every effective param
            reads=(
                "state_dict",
                "train_record",
                "onnx",
                "metrics",
                "parity_report",
                "train_history",
                "plots",
            ),
            writes=(),  # the registry at params' registry.root, outside the layout
            help="Register what the pipeline last produced as the next version.",
        ),
    )
}


def run(name: str, params: Params, layout: Layout, **options: Any) -> Any:
    """Run stage `name` with its params sections and `layout`; returns the stage's result."""
    stage = STAGES[name]
    if stage.sections == ALL_PARAMS:
        sections: list[Any] = [params]
    else:
        sections = [getattr(params, section) for section in stage.sections]
    return stage.function()(*sections, layout, **options)
