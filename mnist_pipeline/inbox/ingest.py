"""Ingest stage: the inbox of labelled digits -> MNIST-style IDX files, a manifest and a report.

Every image in data/extra/<digit>/ is read as `predict` reads it (decoded, size-checked,
preprocessed to a 28x28 white-on-black digit) and stored as uint8, like MNIST. Files that
preprocess to identical pixels (one drawing saved twice, or re-saved losslessly) are one digit:
kept once, or refused together when their labels differ, so no digit is trained on and held out
at once. A deterministic split by content hash holds out `ingest.holdout_percent` of them for
evaluation: a digit's side depends only on its own bytes (the smallest hash among its files),
so it never moves when other digits are added (a copy of it with a smaller hash moves it,
and removing that copy moves it back). A bad file never blocks the others: it is listed with
its reason in reports/ingest.json (and the CLI's warnings), and the inbox itself is only read,
never changed. An empty inbox is normal: empty splits, and training on MNIST alone. Torch-free.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import Timeout

from mnist_pipeline.core import json_text
from mnist_pipeline.core.atomic import check_writable, folder_lock, json_bytes, write_many
from mnist_pipeline.core.contract import NUM_CLASSES
from mnist_pipeline.core.errors import DataError, describe_os_error
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import IngestParams
from mnist_pipeline.core.regular_file import FileTooLarge, read_regular
from mnist_pipeline.core.reports import IngestReport
from mnist_pipeline.core.text import printable
from mnist_pipeline.data import idx
from mnist_pipeline.data.preprocess import ImageError
from mnist_pipeline.inbox import events as inbox_events
from mnist_pipeline.inbox import extra, tracked
from mnist_pipeline.inbox import store as inbox
from mnist_pipeline.inbox.drawings import to_pixels

DIGITS = range(NUM_CLASSES)
LOCK_TIMEOUT_S = 300


@dataclass(frozen=True)
class Accepted:
    """One usable image: its identity, label, source and the split its hash puts it in."""

    sha256: str
    label: int
    source: str
    split: str
    pixels: np.ndarray  # uint8 [28, 28]


@dataclass(frozen=True)
class IngestResult:
    """What ingest took (per split) and refused (source -> reason)."""

    counts: dict[str, int]
    rejected: dict[str, str]
    duplicates: dict[str, str] = field(default_factory=dict)
    inbox_sha256: str = ""
    extra_sha256: str = extra.NO_EXTRA_SHA256
    report_path: Path = Path()

    def summary(self) -> str:
        line = (
            f"ingested {self.counts['train']} train + {self.counts['holdout']} holdout "
            f"labelled digit(s), {len(self.rejected)} refused -> {printable(str(self.report_path))}"
        )
        refused = (
            f"refused: {printable(src)}: {printable(why)}" for src, why in self.rejected.items()
        )
        return "\n".join([line, *refused])


def _misplaced(path: Path, folder: Path) -> str:
    """Why ingest refuses a file `listing` did not give as a digit folder's image."""
    if path.parent.parent == folder and path.parent.name in inbox.CLASS_LABELS:
        return "not a regular file (a pipe, a device or a link to a folder)"
    return "not in a digit folder (data/extra/<0-9>/<file>)"


def split_of(sha256: str, holdout_percent: int) -> str:
    """'holdout' for `holdout_percent` of all hashes, 'train' otherwise (by the hash alone)."""
    return "holdout" if int(sha256[:8], 16) % 100 < holdout_percent else "train"


def read_limited(path: Path) -> bytes:
    """A file's bytes, refused (ImageError) over the inbox's size limit before reading it; a
    pipe or device in its place is an OSError (core.regular_file), never waited on."""
    try:
        return read_regular(path, inbox.MAX_FILE_BYTES)
    except FileTooLarge as exc:
        raise ImageError(
            f"{exc.size:,} bytes, over the limit of {inbox.MAX_FILE_BYTES:,}"
        ) from None


@dataclass(frozen=True)
class Collected:
    """The inbox read: usable images (by split, then hash), refused and duplicate files."""

    accepted: list[Accepted]
    rejected: dict[str, str]  # source -> reason
    duplicates: dict[str, str]  # source -> the source kept instead
    inbox_sha256: str
    pending: tuple[int, int]  # the trigger's count and its generation when read (events.py)


def collect(folder: Path, holdout_percent: int) -> Collected:
    """Read and check every file of the inbox at `folder`, under its lock (no `data add` or
    `data remove` meanwhile); each file is read once, and hashed and preprocessed from those
    bytes, with the retraining trigger's pending count then (inbox_events)."""
    with inbox.lock(folder):
        found, misplaced = inbox.listing(folder)  # hashed below, from the bytes read
        rejected = {str(p.relative_to(folder)): _misplaced(p, folder) for p in misplaced}
        read: list[tuple[int, str, bytes, str]] = []  # label, source, bytes, their SHA-256
        for label, path in found:
            source = str(path.relative_to(folder))
            try:
                data = read_limited(path)
            except ImageError as exc:
                rejected[source] = str(exc)
                continue
            except OSError as exc:
                rejected[source] = describe_os_error(exc)
                continue
            read.append((label, source, data, hashlib.sha256(data).hexdigest()))
        pending = inbox_events.read_count(folder)
    accepted, duplicates = _judge(read, holdout_percent, rejected)
    ordered = sorted(accepted.values(), key=lambda a: (a.split, a.sha256))
    pairs = [inbox.Entry(label, folder / source, sha) for label, source, _, sha in read]
    sha256 = inbox.inbox_sha256(pairs)
    return Collected(ordered, dict(sorted(rejected.items())), duplicates, sha256, pending)


def _judge(
    read: list[tuple[int, str, bytes, str]], holdout_percent: int, rejected: dict[str, str]
) -> tuple[dict[str, Accepted], dict[str, str]]:
    """The files `read` (label, source, bytes, SHA-256) judged as one digit per distinct 28x28
    result: files that preprocess to the same pixels (one image saved twice, or re-saved) are
    one digit, kept once on one side of the split, or refused together when their labels
    differ. Fills `rejected`; returns (kept by SHA-256, duplicate source -> kept source)."""
    digits: dict[bytes, list[tuple[int, str, str, np.ndarray]]] = defaultdict(list)
    pixels_of: dict[str, np.ndarray] = {}  # by SHA-256: identical files preprocess once
    for label, source, data, sha in sorted(read, key=lambda r: r[3]):  # stable: listing order
        if sha not in pixels_of:
            try:
                pixels_of[sha] = to_pixels(data, source)
            except ImageError as exc:
                rejected[source] = str(exc)
                continue
        digits[pixels_of[sha].tobytes()].append((label, source, sha, pixels_of[sha]))
    accepted: dict[str, Accepted] = {}
    duplicates: dict[str, str] = {}
    for files in digits.values():
        labels = sorted({label for label, *_ in files})
        if len(labels) > 1:
            sources = ", ".join(sorted(source for _, source, *_ in files))
            for _, source, *_ in files:
                rejected[source] = f"the same image is labelled {labels} in the inbox: {sources}"
            continue
        label, kept, sha, pixels = files[0]  # the smallest hash: its side is the digit's
        accepted[sha] = Accepted(sha, label, kept, split_of(sha, holdout_percent), pixels)
        duplicates.update({source: kept for _, source, *_ in files[1:]})
    return accepted, dict(sorted(duplicates.items()))


def ingest(params: IngestParams, layout: Layout, take_pending: bool = True) -> IngestResult:
    """Stage entry: layout.inbox -> layout.extra_dir (IDX + manifest) and layout.ingest_report;
    the retraining trigger's count of new digits is taken as used, unless `take_pending` is
    False (a sweep's trial, which registers nothing, leaves them new).

    One ingest of a folder at a time (`dvc repro` beside a CLI `ingest`): each writes seven files,
    which two at once could interleave (one's images beside the other's labels)."""
    check_writable(layout.extra_dir.parent, layout.reports)
    tracked.check_inbox(layout.project, layout.inbox)  # never an empty ingest in its place
    lock = folder_lock(layout.extra_dir)
    try:
        lock.acquire(timeout=LOCK_TIMEOUT_S)
    except Timeout:
        raise DataError(
            f"another ingest has held {lock.lock_file} for {LOCK_TIMEOUT_S} s; try again"
        ) from None
    try:  # held from reading the inbox to the report: the later run writes last
        return _ingest(params, layout, take_pending)
    finally:
        lock.release()


def _ingest(params: IngestParams, layout: Layout, take_pending: bool = True) -> IngestResult:
    collected = collect(layout.inbox, params.holdout_percent)
    accepted = collected.accepted
    manifest, files = [], {}
    for split in extra.SPLITS:
        chosen = [a for a in accepted if a.split == split]
        images = np.stack([a.pixels for a in chosen]) if chosen else extra.Split.empty().images
        labels = np.array([a.label for a in chosen], dtype=np.uint8)
        files[layout.extra_dir / extra.images_file(split)] = idx.encode_idx(images)
        files[layout.extra_dir / extra.labels_file(split)] = idx.encode_idx(labels)
        manifest += [
            {"sha256": a.sha256, "label": a.label, "source": a.source, "split": split, "index": i}
            for i, a in enumerate(chosen)
        ]
    files[layout.extra_dir / extra.MANIFEST_FILE] = json_bytes(manifest)
    # first: it names the new files, so one not replaced yet (Ctrl-C between renames) is refused
    sums = extra.checksums({path.name: data for path, data in files.items()})
    files = {layout.extra_dir / extra.CHECKSUMS_FILE: sums, **files}
    counts = {split: sum(a.split == split for a in accepted) for split in extra.SPLITS}
    result = IngestResult(
        counts=counts,
        rejected=collected.rejected,
        duplicates=collected.duplicates,
        inbox_sha256=collected.inbox_sha256,
        extra_sha256=extra.extra_sha256_of({p.name: b for p, b in files.items()}),
        report_path=layout.ingest_report,
    )
    files[layout.ingest_report] = report(result, accepted, params).text().encode()
    # All written before any replaces the last ingest's (images with labels), the report last.
    write_many(files)
    if take_pending:
        inbox_events.take_pending(layout.inbox, *collected.pending)
    return result


def not_ingested(layout: Layout) -> str | None:
    """A line when the inbox holds other labelled digits than the last ingest took (what the
    train stage reads), else None: `data add` then `train` would train without them. Nothing
    when it cannot tell (no inbox here, as in a run folder; a report of an older version)."""
    if not layout.inbox.is_dir():
        return None
    try:
        found = _as_ingest_reads(layout.inbox)
        took = _ingested_inbox(layout.ingest_report)
    except (OSError, ValueError):
        return None
    if took is None and found and not layout.ingest_report.exists():
        return (
            f"{layout.inbox} holds {len(found)} labelled digit(s) and no ingest took them: run "
            "`mnist-pipeline ingest` first to train on them"
        )
    if took is not None and took != inbox.inbox_sha256(found):
        return (
            f"{layout.inbox} has changed since the last ingest ({layout.ingest_report}): run "
            "`mnist-pipeline ingest` first to train on what it holds"
        )
    return None


def _as_ingest_reads(folder: Path) -> list[inbox.Entry]:
    """The inbox's images as `collect` counts them in its identity: read by `read_limited`,
    so none over the size limit and none it cannot read."""
    found = []
    for label, path in inbox.listing(folder)[0]:
        try:
            data = read_limited(path)
        except (ImageError, OSError):
            continue
        found.append(inbox.Entry(label, path, hashlib.sha256(data).hexdigest()))
    return found


def _ingested_inbox(report_path: Path) -> str | None:
    """The inbox identity the last ingest recorded; None without a report or (a report of an
    older version) without that field."""
    if not report_path.is_file():
        return None
    document = json_text.loads(read_regular(report_path))
    took = document.get("inbox_sha256") if isinstance(document, dict) else None
    return took if isinstance(took, str) else None


def report(result: IngestResult, accepted: list[Accepted], params: IngestParams) -> IngestReport:
    """reports/ingest.json: counts per split and digit, refused files with reasons, identities."""
    per_class = {
        split: [sum(a.split == split and a.label == d for a in accepted) for d in DIGITS]
        for split in extra.SPLITS
    }
    return IngestReport(
        counts=result.counts,
        per_class=per_class,
        rejected=result.rejected,
        duplicates=result.duplicates,
        holdout_percent=params.holdout_percent,
        inbox_sha256=result.inbox_sha256,
        extra_sha256=result.extra_sha256,
    )
