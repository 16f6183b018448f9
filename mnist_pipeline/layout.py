"""Where every stage reads and writes, relative to one working directory (the repo root)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """Output locations of the pipeline; dvc.yaml and the README use the same paths."""

    root: Path = Path(".")

    @property
    def data_dir(self) -> Path:
        """The four decompressed MNIST IDX files (a DVC output of `fetch`)."""
        return self.root / "data" / "mnist"

    @property
    def model_dir(self) -> Path:
        return self.root / "models"

    @property
    def state_dict(self) -> Path:
        """Trained weights (`torch.save(state_dict)`)."""
        return self.model_dir / "model.pt"

    @property
    def checkpoint(self) -> Path:
        """Per-epoch training checkpoint, for resuming."""
        return self.model_dir / "checkpoint.pt"

    @property
    def onnx(self) -> Path:
        return self.model_dir / "model.onnx"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def train_history(self) -> Path:
        """Per-epoch history, CSV (DVC plots)."""
        return self.reports / "train_history.csv"

    @property
    def metrics(self) -> Path:
        """Evaluation metrics JSON (DVC metrics)."""
        return self.reports / "metrics.json"

    @property
    def predictions(self) -> Path:
        """Per-image test predictions CSV (DVC confusion plot)."""
        return self.reports / "predictions.csv"

    @property
    def parity_report(self) -> Path:
        return self.reports / "parity.json"

    @property
    def plots(self) -> Path:
        """PNG plots: misclassified, correct, confusion matrix, training curves."""
        return self.reports / "plots"

    def registry_root(self, configured: str) -> Path:
        """The registry folder from params (relative paths are under `root`)."""
        path = Path(configured)
        return path if path.is_absolute() else self.root / path
