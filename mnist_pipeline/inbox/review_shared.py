"""Reviews of the queue on the shared inbox's store (params `inbox.shared`): `data
pending|accept|reject` on any host decide the claims /feedback and `data add --pending` stored
on any other (review_queue.py).

    <store>/review-log/<sha256>/<claims id>.json               one review (as review-log.jsonl)

Reviews take the store's lease (`Storage.exclusive`: a lock file on a folder, a lease object
on S3), so two reviewers never decide one image at once; they read the claims under it, check
every image (here and in the shared inbox) before anything moves, then take one image at a time
to its end: record the review in the store (naming the claims it decides) and in this host's
review log, publish the image to the shared inbox, delete exactly the claims read (one that
arrives meanwhile stays pending), add it here. A review cut short is finished by the next one
of the same kind, without a second record; one of the other kind is refused. A review reads the
claims of the images it decides, not the whole queue. (review_move.py moves a host's earlier
data/pending/ into the store.)
Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

from filelock import Timeout

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.inbox import drawings, pending, seen, store
from mnist_pipeline.inbox.claims import Pending
from mnist_pipeline.inbox.review_queue import REVIEW, queue
from mnist_pipeline.inbox.review_records import decided_by, drop_unfinishable, record
from mnist_pipeline.inbox.shared import SharedInbox

LEASE = "review"  # the reviewers' lease (Storage.exclusive)


def accept(
    shared: SharedInbox,
    inbox: Path,
    refs: list[str],
    who: str,
    label: int | None = None,
    each: Callable[[store.Added], None] | None = None,
) -> list[store.Added]:
    """`pending.accept` from the store's queue. Under the reviewers' lease (after withdrawing
    accept records of these claims that the shared inbox can no longer take: a repair) every
    reference, label and image is checked (here and in the shared inbox) before anything moves;
    then each image in turn is taken to its end: the review recorded, the image published to
    the shared inbox, its claims deleted, the image added here (and noted as seen in the store;
    `each` hears it, `new` when the shared inbox did not hold it). A failure partway leaves the
    images before it accepted and the rest pending; an accept that was cut short is finished by
    the next one, and no reject overturns it."""
    chosen_label = None if label is None else store.check_label(label)
    done = []
    with reviewers_lease(shared) as still_held:
        seen.check_not_lost(shared, inbox, "accepted")
        read = queue(shared, refs)
        chosen = pending.resolve_among(read.found, refs, f"{shared.location}/{REVIEW}")
        digits, decided = {}, {}
        listed = store.Listing(inbox)  # each file hashed once for every check and add below
        present = listed.entries()
        for item in chosen:
            still_held()  # the repair deletes records
            drop_unfinishable(shared, inbox, item, read.keys[item.sha256], who)  # a repair
            digit = pending.accepted_label(item, chosen_label, inbox, present)
            pending.checked(read.images[item.sha256], item.sha256, str(item.path), digit)
            store.placed(inbox, read.images[item.sha256], str(item.path), digit, present)
            try:
                shared.known(item.sha256, digit)
            except store.LabelConflict as exc:
                raise store.LabelConflict(f"{exc}; nothing was accepted") from None
            keys = read.keys[item.sha256]
            decided[item.sha256] = decided_by(shared, item, keys, "accept", digit)
            digits[item.sha256] = digit
        accepting = [(read.images[i.sha256], str(i.path), digits[i.sha256]) for i in chosen]
        drawings.check_labels_agree(inbox, accepting, present)
        seen.read_seen(inbox, shared)  # a record here that cannot be read: before any publish
        for item in chosen:
            keys, data, digit = (
                read.keys[item.sha256],
                read.images[item.sha256],
                digits[item.sha256],
            )
            if decided[item.sha256] is None:
                _check_still_pending(shared, item, keys)
                still_held()
                record(shared, inbox, keys, pending.review_line(who, "accept", item, digit))
            still_held()
            try:
                published = shared.publish(data, digit, store.image_format(data), f"cli:{who}")
            except store.LabelConflict:
                still_held()
                drop_unfinishable(shared, inbox, item, keys, who)  # this accept's own record
                raise _labelled_meanwhile(shared, item, digit) from None
            still_held()
            _delete(shared, keys)
            try:
                with store.lock(inbox):  # with the note, so a sync never sees it unnoted
                    added = store.add(
                        inbox, data, str(item.path), digit, locked=True, listed=listed
                    )
                    seen.note_seen(inbox, shared, {added.entry.sha256: digit})  # removals follow
            except Timeout as exc:  # a long sync or ingest here: accepted all the same
                if each is not None:  # counted for the retraining trigger like any accept
                    path = inbox / str(digit) / f"{item.sha256}.{store.image_format(data)}"
                    new = published or decided[item.sha256] is not None
                    each(store.Added(store.Entry(digit, path, item.sha256), new, here=False))
                raise DataError(
                    f"{item.sha256[:12]} was accepted as {digit} into the shared inbox "
                    f"{shared.location}, but this host's inbox stayed busy ({exc}): `data sync` "
                    "brings it here; the images after it are still pending"
                ) from None
            # new to the store, what every host counts; finishing an accept cut short after
            # its publish, the image is this decision's, never counted yet
            added = replace(added, new=published or decided[item.sha256] is not None)
            done.append(added)
            if each is not None:
                each(added)
    return done


def reject(shared: SharedInbox, inbox: Path, refs: list[str], who: str) -> list[Pending]:
    """Delete the referenced images' claims from the store's queue, each review recorded first;
    nothing is deleted if a reference is refused, or names claims an accept cut short decided
    (accept them to finish). An image the shared inbox holds stays there: only claims go."""
    with reviewers_lease(shared) as still_held:
        read = queue(shared, refs)
        chosen = pending.resolve_among(read.found, refs, f"{shared.location}/{REVIEW}")
        for item in chosen:
            still_held()  # the repair deletes records
            drop_unfinishable(shared, inbox, item, read.keys[item.sha256], who)  # a repair
        decided = {i.sha256: decided_by(shared, i, read.keys[i.sha256], "reject") for i in chosen}
        for item in chosen:
            keys = read.keys[item.sha256]
            if decided[item.sha256] is None:
                _check_still_pending(shared, item, keys)
                still_held()
                record(shared, inbox, keys, pending.review_line(who, "reject", item, None))
            still_held()
            _delete(shared, keys)
    return chosen


def _labelled_meanwhile(shared: SharedInbox, item: Pending, digit: int) -> store.LabelConflict:
    """The error for an image a `data add` (which takes no review lease) gave the shared inbox
    with another label after this accept's checks."""
    there = shared.record(item.sha256)
    label = "another label" if there is None else f"label {there.label}"
    return store.LabelConflict(
        f"{item.sha256[:12]}: added to the shared inbox with {label} since this review began; "
        f"it was not accepted as {digit} and its claims stay pending (reject them, or `data "
        f"sync`, `data remove {item.sha256[:12]}` and accept it again)"
    )


@contextmanager
def reviewers_lease(shared: SharedInbox) -> Iterator[Callable[[], None]]:
    """The reviewers' lease on the store (StoreUnavailable when it cannot be taken). It gives
    the check to call before each write: StoreUnavailable once the lease was taken over (this
    review stalled past its time to live, and another reviewer may be deciding its claims)."""
    with ExitStack() as held:
        still_held = shared.call(lambda: held.enter_context(shared.storage.exclusive(LEASE)))
        yield lambda: shared.call(still_held)


def _check_still_pending(shared: SharedInbox, item: Pending, keys: list[str]) -> None:
    """DataError when a claim read under the lease is gone: another review decided it, so this
    one lost its lease (it stalled past the lease's time to live)."""
    there = set(shared.call(lambda: shared.storage.list(f"{REVIEW}{item.sha256}/")))
    if not set(keys) <= there:
        raise DataError(
            f"{item.sha256[:12]}: reviewed elsewhere meanwhile (this review stalled and lost "
            "the store's review lease); it stops here"
        )


def _delete(shared: SharedInbox, keys: list[str]) -> None:
    for key in keys:
        shared.call(lambda k=key: shared.storage.delete(k))
