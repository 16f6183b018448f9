"""A tiny project that has been through the pipeline once, and checks that every file a user sees
in it is whole, for the fault and kill tests."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import onnx
import pytest
import torch
import yaml
from PIL import Image

from mnist_pipeline.cli.app import main
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.data import idx
from mnist_pipeline.inbox import store as inbox
from mnist_pipeline.model.weights import load_model
from mnist_pipeline.registry import Registry
from tests.synthetic import make_dataset, write_data_dir
from tests.test_ingest import stroke_png

PIPELINE = ("ingest", "train", "evaluate", "export", "parity")
PARAMS = {
    "train": {"epochs": 1, "batch_size": 32, "val_size": 32, "num_threads": 1},
    "evaluate": {"min_accuracy": 0.0},
}
# A killed writer's temp file: hidden, beside its target, named after it (core/atomic.py).
TEMP_FILE = re.compile(r"\.(?P<target>.+)\.[^.]+\.tmp(\.\w+)?")


def cli(root: Path, *args: str) -> int:
    """The console script in this process; its exit code."""
    argv = ["mnist-pipeline", "--root", str(root), *args]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", argv)
        try:
            main()
        except SystemExit as done:
            return int(done.code or 0)
    return 0


def prepared_project(folder: Path) -> Path:
    """A project on tiny synthetic data after ingest, train, evaluate, export and parity."""
    root = folder / "project"
    write_data_dir(Layout(root).data_dir, make_dataset())
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    for stage in PIPELINE:
        assert cli(root, stage) == 0, stage
    return root


def copy_project(prepared: Path, folder: Path) -> Path:
    root = folder / "project"
    shutil.copytree(prepared, root)
    return root


def new_inputs(root: Path, *stages: str) -> None:
    """Change the seed (so the next training makes other weights), add labelled digits to the
    inbox, and run `stages`: the situation of a retraining whose later stages are still to come."""
    for seed in range(4):
        inbox.add(Layout(root).inbox, stroke_png(seed), f"s{seed}.png", seed)
    set_params(root, train={**PARAMS["train"], "seed": 7})
    for stage in stages:
        assert cli(root, stage) == 0, stage


def set_params(root: Path, **sections: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS | sections))


def visible_files(root: Path) -> dict[str, str]:
    """SHA-256 of every file a user sees (no dot files), by path relative to `root`."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.is_file() and TEMP_FILE.fullmatch(p.name)]


def assert_complete(root: Path) -> None:
    """Every visible file under `root` (no dot file or folder inside it: where `root` itself
    lies does not matter) loads with the reader the pipeline uses for its kind; the model,
    its ONNX export and the metrics are among them."""
    checked = set()
    for path in root.rglob("*"):
        if not path.is_file() or any(p.startswith(".") for p in path.relative_to(root).parts):
            continue
        checked.add(path.relative_to(root).as_posix())
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".onnx":
            onnx.checker.check_model(onnx.load(str(path)))
        elif path.suffix == ".png":
            with Image.open(path) as image:
                image.load()
        elif path.name == "model.pt":
            load_model("classic", path)
        elif path.suffix == ".pt":  # the training checkpoint, read as training resumes it
            assert torch.load(path, map_location="cpu", weights_only=True)["format"]
        elif path.suffix == ".csv":
            rows = list(csv.reader(path.read_text().splitlines()))
            assert len(rows) > 1 and len({len(row) for row in rows}) == 1, path
        elif path.name.endswith("-ubyte"):
            idx.parse_idx(path.read_bytes(), path.name)
    assert {"models/model.pt", "models/model.onnx", "reports/metrics.json"} <= checked, checked


def registered(root: Path) -> tuple[list[dict], dict[str, int]]:
    registry = Registry(root / "registry", "mnist-cnn")
    assert registry.verify() == []
    return registry.versions(), registry.aliases()
