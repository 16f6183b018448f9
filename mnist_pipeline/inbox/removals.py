"""Images removed from the shared inbox, remembered in the store: `removed/<sha256>.json`.

A host knows an image it holds was removed elsewhere when it saw it in the store before (its
record of what it saw, seen.py). A host without that record (a new worker given an older
snapshot of `data/extra/`, a restored backup, a host whose record was deleted) would take each
removed image it holds for one dropped in by hand, and publish it back to every host. So a
removal leaves a marker first (created once; a removal cut short after it still keeps every host
from publishing the image back), a sync deletes an unseen image that has one instead of
publishing it, and a publication by `data add` or an accepted review (a person adding the image
again) clears it. A marker beside a record (a removal that found the image relabelled or added
again meanwhile) is never read: only an image the store lacks is looked up.
"""

from __future__ import annotations

import json
from contextlib import suppress
from typing import TYPE_CHECKING

from mnist_pipeline.core.errors import DataError

if TYPE_CHECKING:
    from mnist_pipeline.inbox.shared import SharedInbox
    from mnist_pipeline.inbox.store import Entry

REMOVED = "removed/"


def key(digest: str) -> str:
    return f"{REMOVED}{digest}.json"


def remember(shared: SharedInbox, digest: str, labels: list[int]) -> None:
    """Mark `digest` as removed from the store (its copies had `labels`)."""
    body = json.dumps({"sha256": digest, "labels": labels}, sort_keys=True).encode()
    shared.call(lambda: shared.storage.create(key(digest), body))  # False: marked already


def was_removed(shared: SharedInbox, digest: str) -> bool:
    """Whether `digest` was removed from the store and not added again since."""
    return removed_labels(shared, digest) is not None


def removed_labels(shared: SharedInbox, digest: str) -> set[int] | None:
    """The labels `digest` had where it was removed from the store (None: it was not, or was
    added again since; empty: a marker whose labels cannot be read)."""
    data = shared.call(lambda: shared.storage.read(key(digest)))
    if data is None:
        return None
    try:
        labels = json.loads(data)["labels"]
        return {label for label in labels if isinstance(label, int)}
    except (ValueError, KeyError, TypeError):
        return set()


def forget(shared: SharedInbox, digest: str) -> None:
    """`digest` was added again: no longer a removed image. Best effort: a marker left beside
    the image's record changes nothing (it is read only for an image the store lacks), so a
    store that fails now does not fail the add that stored the image."""
    with suppress(DataError):  # StoreUnavailable
        shared.call(lambda: shared.storage.delete(key(digest)))


def delete_removed(
    shared: SharedInbox, digest: str, local: list[Entry], seen_label: int | None
) -> tuple[bool, str | None]:
    """Delete this host's copies of `digest`, removed from the store elsewhere. A host that saw
    it there (`seen_label`) deletes the copies with that label or one the removal names; a
    copy under another label (labelled here by hand, never in the store) was removed by nobody:
    it stays, and the warning returned says so. A host that never saw it there deletes every
    copy (a marker is created once, so its labels may be those of an earlier removal). Returns
    whether a copy was deleted, and that warning."""
    if seen_label is None:
        gone = {entry.label for entry in local}
    else:
        gone = (removed_labels(shared, digest) or set()) | {seen_label}
    deleted = False
    for entry in local:
        if entry.label in gone:
            entry.path.unlink(missing_ok=True)
            deleted = True
    kept = sorted({entry.label for entry in local if entry.label not in gone})
    if not kept:
        return deleted, None
    return deleted, (
        f"{digest[:12]}: removed from the shared inbox {shared.location} elsewhere (labelled "
        f"{', '.join(map(str, sorted(gone)))} there); the copy labelled "
        f"{', '.join(map(str, kept))} here was never there and stays, unpublished (`data add "
        f"--label {kept[0] if len(kept) == 1 else 'N'} FILE` with a copy of it publishes it)"
    )
