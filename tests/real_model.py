"""A briefly trained model on real MNIST, and real test digits, for the Node.js and web examples.

`real_model(tmp_path_factory)` fetches MNIST from tests.conftest.SHARED_MNIST into a temporary
folder, trains one short epoch (REAL_TRAIN: 300 batches, about 97% accurate) and exports it with
the pipeline's own export function, once per test session. Callers skip when real MNIST is absent
(`requires_real_mnist`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_pipeline import idx
from tests.conftest import REPO_ROOT, SHARED_MNIST

EXAMPLES = REPO_ROOT / "examples"
REAL_TRAIN = {"epochs": 1, "max_batches_per_epoch": 300, "val_size": 1000, "num_threads": 2}


@dataclass(frozen=True)
class RealModel:
    onnx: Path
    data_dir: Path


_built: dict[str, RealModel] = {}


def real_model(tmp_path_factory: pytest.TempPathFactory) -> RealModel:
    """The session's real-data model (built on first use)."""
    if "model" not in _built:
        from mnist_pipeline.export import export_onnx
        from mnist_pipeline.fetch import fetch
        from mnist_pipeline.layout import Layout
        from mnist_pipeline.params import DataParams, ExportParams, TrainParams
        from mnist_pipeline.train import train

        layout = Layout(tmp_path_factory.mktemp("real-model"))
        fetch(DataParams(mirrors=(str(SHARED_MNIST),)), layout.data_dir, show_progress=False)
        params = TrainParams(**REAL_TRAIN)
        train(params, layout.data_dir, layout)
        export_onnx(ExportParams(), params.arch, layout.state_dict, layout.onnx, {})
        _built["model"] = RealModel(layout.onnx, layout.data_dir)
    return _built["model"]


def test_digits(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's test split: uint8 images [N, 28, 28] (white on black) and labels [N]."""
    images = idx.parse_images((data_dir / "t10k-images-idx3-ubyte").read_bytes(), "test images")
    labels = idx.parse_labels((data_dir / "t10k-labels-idx1-ubyte").read_bytes(), "test labels")
    return images, labels


test_digits.__test__ = False  # a helper, not a test


def node_skip_reason(example: str) -> str | None:
    """Why the Node.js-based example `example` cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed (needed for the examples/ tests)"
    if not (EXAMPLES / example / "node_modules").is_dir():
        return (
            f"examples/{example}/node_modules is missing: run `npm ci --prefix examples/{example}`"
        )
    return None


def node_major() -> int:
    out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().lstrip("v").split(".")[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dark_on_light(
    digit: np.ndarray, scale: float, size: tuple[int, int], at: tuple[int, int]
) -> Image.Image:
    """A real digit as a person would photograph it: dark ink on light paper, scaled, offset."""
    side = round(28 * scale)
    ink = np.asarray(Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BICUBIC))
    paper = np.full((size[1], size[0]), 236, np.uint8)
    x, y = at
    paper[y : y + side, x : x + side] = np.minimum(paper[y : y + side, x : x + side], ink)
    return Image.fromarray(paper)
