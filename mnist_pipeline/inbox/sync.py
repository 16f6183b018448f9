"""A host's inbox folder kept in step with the shared inbox (shared.py): a three-way sync.

The base is what the store held after this host's last sync (data/.extra.shared.json: image
SHA-256 -> label, and which store). An image only on one side is new there, unless the base
has it, in which case the other side removed it:

    store and here   same label: nothing; otherwise the store's copy is placed too, so ingest
                     refuses the image ("labelled [3, 5]"), unless the base shows the store
                     relabelled it (then the store's label replaces this host's)
    store only       new there: downloaded (SHA-256 checked)  | in the base: removed here: retracted
    here only        new here: published                      | in the base: removed there: deleted

Runs under the inbox's lock (no `data add` or ingest meanwhile). `data add`, `data accept` and
`data remove` also write through at once (`publish_entry`, `note_retracted`); whatever they
could not (the store down) the next sync finishes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from mnist_pipeline.core.atomic import write_bytes, write_json
from mnist_pipeline.core.errors import DataError
from mnist_pipeline.inbox import store
from mnist_pipeline.inbox.shared import Record, SharedInbox, StoreUnavailable


@dataclass
class SyncResult:
    """What one sync changed, by image SHA-256."""

    downloaded: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    deleted_here: list[str] = field(default_factory=list)  # retracted on another host
    retracted: list[str] = field(default_factory=list)  # removed on this host
    conflicts: list[str] = field(default_factory=list)  # two labels: ingest refuses the image
    problems: dict[str, str] = field(default_factory=dict)  # not synced, and why

    def summary(self) -> str:
        parts = [
            f"{len(self.downloaded)} downloaded",
            f"{len(self.published)} published",
            f"{len(self.deleted_here)} deleted here (retracted elsewhere)",
            f"{len(self.retracted)} retracted from the store",
            f"{len(self.conflicts)} label conflict(s)",
        ]
        return ", ".join(parts) + (f", {len(self.problems)} not synced" if self.problems else "")


def base_file(inbox: Path) -> Path:
    """data/.extra.shared.json: beside the inbox (inside, DVC would hash it with the images)."""
    return inbox.parent / f".{inbox.name}.shared.json"


def read_base(inbox: Path, location: str) -> dict[str, int]:
    """Image SHA-256 -> label the store held at the last sync (empty for another store)."""
    try:
        raw = json.loads(base_file(inbox).read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or raw.get("store") != location:
            return {}
        return {str(sha): int(label) for sha, label in dict(raw.get("images", {})).items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(
            f"cannot read {base_file(inbox)}: {exc} (delete it: the next sync starts afresh)"
        ) from None


def write_base(inbox: Path, location: str, images: dict[str, int]) -> None:
    write_json(base_file(inbox), {"store": location, "images": dict(sorted(images.items()))})


def note_retracted(shared: SharedInbox, inbox: Path, entries: list[store.Entry]) -> None:
    """Retract images just removed here; the base keeps them first, so that a sync retracts
    them if the store cannot be reached now (rather than downloading them back)."""
    with store.lock(inbox):
        base = read_base(inbox, shared.location)
        write_base(inbox, shared.location, base | {e.sha256: e.label for e in entries})
    for entry in entries:
        shared.retract(entry.sha256)


def sync(shared: SharedInbox, inbox: Path, by: str) -> SyncResult:
    """Bring the inbox folder and the store in step (see the module's table)."""
    result = SyncResult()
    inbox.mkdir(parents=True, exist_ok=True)
    with store.lock(inbox):
        base = read_base(inbox, shared.location)
        remote = shared.records()
        here: dict[str, list[store.Entry]] = defaultdict(list)
        for entry in store.entries(inbox):
            here[entry.sha256].append(entry)
        for sha in sorted(remote.keys() | here.keys()):
            _sync_one(shared, inbox, sha, remote.get(sha), here.get(sha, []), base, by, result)
        kept = {sha: r.label for sha, r in remote.items() if sha not in result.retracted}
        kept |= {sha: here[sha][0].label for sha in result.published}
        for sha in result.problems:  # tried again next time, as if this sync had not been
            kept.pop(sha, None)
            if sha in base:
                kept[sha] = base[sha]
        write_base(inbox, shared.location, kept)
    return result


def _sync_one(
    shared: SharedInbox,
    inbox: Path,
    sha: str,
    record: Record | None,
    local: list[store.Entry],
    base: dict[str, int],
    by: str,
    result: SyncResult,
) -> None:
    labels = {e.label for e in local}
    try:
        if record is not None and local:
            if labels == {record.label}:
                return
            if len(labels) == 1 and base.get(sha) in labels:  # relabelled on another host
                _download(shared, inbox, sha, record)
                for entry in local:
                    entry.path.unlink(missing_ok=True)
                result.downloaded.append(sha)
            elif record.label not in labels:
                _download(shared, inbox, sha, record)
                result.conflicts.append(sha)
            else:
                result.conflicts.append(sha)
        elif record is not None:
            if sha in base:
                shared.retract(sha)
                result.retracted.append(sha)
            else:
                _download(shared, inbox, sha, record)
                result.downloaded.append(sha)
        elif sha in base:
            for entry in local:
                entry.path.unlink(missing_ok=True)
            result.deleted_here.append(sha)
        elif len(labels) > 1:
            result.conflicts.append(sha)
        else:
            publish_entry(shared, local[0], by)
            result.published.append(sha)
    except StoreUnavailable:
        raise  # stop: the base is not written, so the next sync starts from the same point
    except DataError as exc:  # a label conflict, an altered image, a file here that is no image
        result.problems[sha] = str(exc)


def _download(shared: SharedInbox, inbox: Path, sha: str, record: Record) -> None:
    write_bytes(inbox / str(record.label) / f"{sha}.{record.format}", shared.image(sha))


def publish_entry(shared: SharedInbox, entry: store.Entry, by: str) -> None:
    """Publish one image of this inbox (checked as `data add` checks it). LabelConflict when the
    store has it with another label; StoreUnavailable when it cannot be reached."""
    data = entry.path.read_bytes()
    _, _, fmt = store.validate(data, str(entry.path), entry.label)  # as `data add` checks it
    shared.publish(data, entry.label, fmt, by)
