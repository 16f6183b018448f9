"""Where every stage reads and writes: a run's own folder, and the project's shared registry.

`root` holds what one run reads and writes (data/mnist, models/, reports/); `home`, the project
folder, holds the registry that runs share. For the CLI and `dvc repro` both are the repository
root; each Prefect flow run works in its own `runs/<flow-run-name>/`, with a hard-linked snapshot
of the project's verified dataset (runs.snapshot_dataset).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from mnist_pipeline.core.errors import ParamsError

RUNS_DIR = "runs"


def within(path: Path, folder: Path) -> bool:
    """Whether `path` lies in `folder` (or is it), as written or with links resolved (a link
    loop: as written)."""
    return path.absolute().is_relative_to(folder.absolute()) or resolved(path).is_relative_to(
        resolved(folder)
    )


def resolved(path: Path) -> Path:
    """`path` with links resolved; as written (made absolute) when they loop."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symbolic link loop (Python 3.11-3.12)
        return path.absolute()


@dataclass(frozen=True)
class Layout:
    """Output locations of the pipeline; dvc.yaml and the README use the same paths."""

    root: Path = Path(".")
    home: Path | None = None  # the project folder (the registry); None: the same as root

    @classmethod
    def for_run(cls, project: Path, run_name: str) -> Layout:
        """An isolated run folder, project/runs/<run_name>/, sharing the project's registry."""
        return cls(root=project / RUNS_DIR / run_name, home=project)

    @property
    def project(self) -> Path:
        return self.root if self.home is None else self.home

    @property
    def data_dir(self) -> Path:
        """The four decompressed MNIST IDX files (a DVC output of `fetch`)."""
        return self.root / "data" / "mnist"

    @property
    def inbox(self) -> Path:
        """Labelled digits users add: data/extra/<digit>/<sha256>.<format> (inbox.py). The
        project's, also for a flow run: users add to one inbox, and ingest reads it from there."""
        return self.project / "data" / "extra"

    @property
    def pending(self) -> Path:
        """Labelled digits awaiting review (/feedback, `data add --pending`): data/pending/
        (inbox/pending.py). Never read by ingest, not tracked by DVC."""
        return self.project / "data" / "pending"

    @property
    def extra_dir(self) -> Path:
        """The ingested inbox (ingest.py): preprocessed IDX files per split and a manifest."""
        return self.root / "data" / "ingested"

    @property
    def robustness_cache(self) -> Path:
        """The rendered robustness set, one verified .npz per key (evaluation/robustness_cache.py):
        the project's, shared by runs; git-ignored, never a DVC output, safe to delete."""
        return self.project / ".cache" / "robustness"

    @property
    def model_dir(self) -> Path:
        return self.root / "models"

    @property
    def state_dict(self) -> Path:
        """Trained weights (`torch.save(state_dict)`)."""
        return self.model_dir / "model.pt"

    @property
    def train_record(self) -> Path:
        """What model.pt was trained from: its SHA-256 and the inputs fingerprint (JSON)."""
        return self.model_dir / "model.json"

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
        """Per-epoch history, CSV (DVC plots): losses, accuracies, learning rate, no timings."""
        return self.reports / "train_history.csv"

    @property
    def train_timings(self) -> Path:
        """Each epoch's wall-clock seconds, CSV: beside the history, never a DVC output."""
        return self.reports / "train_timings.csv"

    @property
    def metrics(self) -> Path:
        """Evaluation metrics JSON (DVC metrics)."""
        return self.reports / "metrics.json"

    @property
    def scores(self) -> Path:
        """Headline evaluation numbers only: the DVC metrics file (metrics.json has the rest)."""
        return self.reports / "scores.json"

    @property
    def parity_scores(self) -> Path:
        """Headline parity numbers only: a DVC metrics file (parity.json has the rest)."""
        return self.reports / "parity_scores.json"

    @property
    def ingest_report(self) -> Path:
        """What ingest took and what it refused, with the reason for each (JSON)."""
        return self.reports / "ingest.json"

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

    def in_project(self, configured: str) -> Path:
        """A path from params: relative ones are under the project folder."""
        path = Path(configured)
        return path if path.is_absolute() else self.project / path

    def registry_root(self, configured: str, setting: str = "registry.root") -> Path | str:
        """The registry from params: a URL (s3://...) as given, a folder with relative paths
        under the project folder; a file: URL is its path, percent-decoded (file:///srv/a%20b,
        file://localhost/srv/x: checked by validators.check_location). ParamsError naming
        `setting` for the filesystem root, where a store's files would land among the system's."""
        if configured[:5].lower() == "file:":
            folder = self.in_project(unquote(urlparse(configured).path))
        elif "://" in configured:
            return configured
        else:
            folder = self.in_project(configured)
        if resolved(folder) == resolved(folder).parent:  # "/", or ".." enough times
            raise ParamsError(
                f"{setting} {configured!r} is the filesystem root: a store needs a folder of "
                "its own"
            )
        return folder

    def shared_inbox(self, configured: str) -> Path | str:
        """`inbox.shared` as registry_root reads it, a folder with `..` and links resolved (a
        host knows its store by where it is, however the project folder was named: `--root .`
        or the flow's resolved workdir); a ParamsError for a folder that is the inbox or inside
        it, whose store files ingest would read as labelled digits, the pending area or inside
        it (its files read as claims to move into the store), or a folder of the project
        that holds the inbox (the project folder, `data`: the store's files among the
        project's). A folder above the project (a team's mount) is the user's to choose."""
        where = self.registry_root(configured, "inbox.shared")
        if not isinstance(where, Path):
            return where  # a URL
        where = resolved(where)  # `..` and links resolved: the folder it really is
        if within(where, self.inbox):
            raise ParamsError(
                f"inbox.shared {configured!r} is {where}, inside the inbox {self.inbox}: "
                "the store needs a folder of its own (or an s3:// URL)"
            )
        if within(where, self.pending):  # its records would be read as claims waiting to move
            raise ParamsError(
                f"inbox.shared {configured!r} is {where}, inside the pending area "
                f"{self.pending}: the store needs a folder of its own (or an s3:// URL)"
            )
        if within(where, self.project) and within(self.inbox, where):
            raise ParamsError(
                f"inbox.shared {configured!r} is {where}, a folder of the project holding the "
                f"inbox {self.inbox}: the store needs a folder of its own (or an s3:// URL)"
            )
        return where
