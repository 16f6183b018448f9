"""A pending image and the claims made about it, as the review queue holds them (pending.py on
this host, review_queue.py on a shared store), and the queue's own errors. Torch-free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from mnist_pipeline.core.errors import DataError


class QuotaExceeded(DataError):
    """The source already has its maximum of images awaiting review."""


class BadSubmission(DataError):
    """The submitted image or label is refused (the submitter's to fix, not the server's)."""


class BadRecord(DataError):
    """A sidecar in the pending folder that is not what `submit` writes (a problem of the
    server's disk, not of a request)."""


@dataclass(frozen=True)
class Claim:
    """One submission: the label claimed, who sent it (`token:<name>`, `cli:<user>`), when
    (UTC, ISO 8601) and from which client address (None: not over the network)."""

    label: int
    source: str
    time: str
    client: str | None = None

    def __post_init__(self) -> None:
        """TypeError for a field of another type (a record damaged or written by hand): the
        queue's readers refuse such a record, naming it."""
        if type(self.label) is not int:  # bool is an int, and no label
            raise TypeError(f"label {self.label!r} is not a number 0-9")
        for name in ("source", "time", "client"):
            value = getattr(self, name)
            if not isinstance(value, str) and not (name == "client" and value is None):
                raise TypeError(f"{name} {value!r} is not text")


@dataclass(frozen=True)
class Pending:
    """One image awaiting review and every claim made about it; `path` is its file here, or
    the store location of its claims (review_queue.py)."""

    sha256: str
    path: Path | str
    claims: tuple[Claim, ...]

    @property
    def labels(self) -> list[int]:
        return sorted({claim.label for claim in self.claims})

    @property
    def conflict(self) -> bool:
        """Claims disagree on the label."""
        return len(self.labels) > 1

    @property
    def duplicate(self) -> bool:
        """The image was submitted more than once."""
        return len(self.claims) > 1

    def to_dict(self) -> dict[str, object]:
        return {
            "sha256": self.sha256,
            "path": str(self.path),
            "labels": self.labels,
            "claims": [asdict(claim) for claim in self.claims],
        }


@dataclass(frozen=True)
class Submitted:
    """What `submit` did: `status` is "pending" (a new claim) or "known" (this source already
    claimed this label for this image)."""

    status: str
    sha256: str
    claim: Claim
