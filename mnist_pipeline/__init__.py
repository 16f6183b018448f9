"""mnist-pipeline: fetch MNIST, train a CNN, gate it, export to ONNX, check parity, register."""

from __future__ import annotations

__version__ = "0.1.0"
