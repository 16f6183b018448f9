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
from functools import partial
from typing import TYPE_CHECKING

from mnist_pipeline.core import json_text
from mnist_pipeline.core.errors import DataError

if TYPE_CHECKING:
    from mnist_pipeline.inbox.shared import SharedInbox
    from mnist_pipeline.inbox.store import Entry

REMOVED = "removed/"


def key(digest: str) -> str:
    return f"{REMOVED}{digest}.json"


SWAP_ATTEMPTS = 100


def remember(shared: SharedInbox, digest: str, labels: list[int]) -> None:
    """Mark `digest` as removed from the store (its copies had `labels`): the labels are added
    to those of a marker an earlier removal left (by compare-and-swap; one that cannot be read
    is replaced), so a host that never saw the image deletes exactly the labels removed."""
    for _ in range(SWAP_ATTEMPTS):
        found = shared.call(lambda: shared.storage.read_document(key(digest)))
        known = set() if found is None else _labels(found[0]) or set()
        if found is not None and known >= set(labels):
            return  # marked already
        merged = sorted(known | set(labels))
        body = json.dumps({"sha256": digest, "labels": merged}, sort_keys=True).encode()
        revision = None if found is None else found[1]
        if shared.call(partial(shared.storage.swap, key(digest), body, revision)):
            return
    raise DataError(f"{shared.location}: the removal marker of {digest[:12]} kept changing")


def was_removed(shared: SharedInbox, digest: str) -> bool:
    """Whether `digest` was removed from the store and not added again since."""
    return removed_labels(shared, digest) is not None


def removed_labels(shared: SharedInbox, digest: str) -> set[int] | None:
    """The labels `digest` had where it was removed from the store (None: it was not, or was
    added again since; empty: a marker whose labels cannot be read)."""
    data = shared.call(lambda: shared.storage.read(key(digest)))
    return None if data is None else _labels(data) or set()


def _labels(data: bytes) -> set[int] | None:
    """The labels a marker's bytes name (None: they cannot be read)."""
    try:
        labels = json_text.loads(data)["labels"]  # nested too deep: a ValueError
        return {label for label in labels if type(label) is int}
    except (ValueError, KeyError, TypeError):
        return None


def forget(shared: SharedInbox, digest: str) -> None:
    """`digest` was added again: no longer a removed image. Best effort: a marker left beside
    the image's record changes nothing (it is read only for an image the store lacks), so a
    store that fails now does not fail the add that stored the image."""
    with suppress(DataError):  # StoreUnavailable
        shared.call(lambda: shared.storage.delete(key(digest)))


def delete_removed(
    shared: SharedInbox, digest: str, local: list[Entry], seen_label: int | None
) -> tuple[bool, str | None]:
    """Delete this host's copies of `digest`, removed from the store elsewhere: those with the
    label this host saw there (`seen_label`, None: never seen) or one a removal names (the
    marker holds every label removed); a copy under another label (labelled here by hand,
    never in the store) was removed by nobody: it stays, and the warning returned says so.
    Returns whether a copy was deleted, and that warning."""
    gone = removed_labels(shared, digest) or set()
    if seen_label is not None:
        gone.add(seen_label)
    deleted = False
    for entry in local:
        if entry.label in gone:
            entry.path.unlink(missing_ok=True)
            deleted = True
    kept = sorted({entry.label for entry in local if entry.label not in gone})
    if not kept:
        return deleted, None
    here = f"the copy labelled {', '.join(map(str, kept))} here"
    where = f"{digest[:12]}: removed from the shared inbox {shared.location} elsewhere"
    if not gone:  # nothing known of what was removed: nothing deleted
        return deleted, (
            f"{where}, but its marker ({key(digest)}) cannot be read, so the labels removed are "
            f"unknown: {here} stays (`data remove` it to drop it)"
        )
    return deleted, (
        f"{where} (labelled {', '.join(map(str, sorted(gone)))} there); {here} was never there "
        f"and stays, unpublished (`data add --label {kept[0] if len(kept) == 1 else 'N'} FILE` "
        "with a copy of it publishes it)"
    )


def lost_from_store(shared: SharedInbox, sha: str, labels: set[int]) -> str:
    """Why an image seen in the store, which no removal marked, is kept here."""
    label = next(iter(labels)) if len(labels) == 1 else "N"
    return (
        f"{sha[:12]} was in the shared inbox {shared.location} and is gone from it without a "
        "removal (`data remove` marks one first): lost by the store, so kept here. To publish "
        f"it again, copy it out of the inbox, `data remove` it, and `data add --label {label}` "
        "the copy; to drop it everywhere, `data remove` it"
    )
