"""The review queue on the shared inbox's store (params `inbox.shared`): /feedback and `data add
--pending` on any host, `data pending|accept|reject` on any other.

    <store>/review/<sha256>/<source id>.<label>.<nonce>.json   one claim: label, source, time,
                                                               client, format and the image
    <store>/review-log/<sha256>/<claims id>.json               one review (as review-log.jsonl)

A claim is one object, written create-only with its image inside it (base64), so no claim ever
names bytes that are gone and a crash leaves a whole claim or none. Its key names the image,
the source (a hash of it) and the label: the quota (images per source awaiting review) and
"this source already claimed this label" are read from one listing (a repeated claim is then
read, to answer with it as first made: its time and client).
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

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from filelock import Timeout

from mnist_pipeline.core import json_text
from mnist_pipeline.core.errors import DataError
from mnist_pipeline.inbox import pending, seen, store
from mnist_pipeline.inbox.claims import Claim, Pending, QuotaExceeded, Submitted
from mnist_pipeline.inbox.review_records import decided_by, drop_unfinishable, record
from mnist_pipeline.inbox.shared import SharedInbox

REVIEW = "review/"
LEASE = "review"  # the reviewers' lease (Storage.exclusive)
_CLAIM_KEY = re.compile(
    r"^review/(?P<sha>[0-9a-f]{64})/(?P<source>[0-9a-f]{16})\.(?P<label>[0-9])\.[0-9a-f]{32}\.json$"
)


def source_id(source: str) -> str:
    """The part of a claim's key that names its source (a hash: sources are free text)."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def claim_key(digest: str, source: str, digit: int, nonce: str) -> str:
    """Where one claim of image `digest` is stored (`nonce`: 32 hex digits)."""
    return f"{REVIEW}{digest}/{source_id(source)}.{digit}.{nonce}.json"


def claim_keys(shared: SharedInbox) -> list[re.Match[str]]:
    """Every claim's key in the store, parsed (other keys under review/ are ignored)."""
    keys = shared.call(lambda: shared.storage.list(REVIEW))
    return [m for m in (_CLAIM_KEY.fullmatch(k) for k in keys) if m is not None]


def submit(
    shared: SharedInbox,
    data: bytes,
    name: str,
    label: object,
    source: str,
    client: str | None = None,
    quota: int | None = None,
    time: str | None = None,
    nonce: str | None = None,
) -> Submitted:
    """`pending.submit` into the store: one create-only claim object. Concurrent submissions of
    one source can pass its quota by the few in flight; never by more. `nonce` (32 hex digits;
    default random) ends the claim's key: one claim submitted twice is then stored once."""
    digit, digest, suffix = pending.validated(data, name, label)
    claim = Claim(digit, source, time or pending.utc_now(), client)
    mine, known = source_id(source), claim_keys(shared)
    same = [
        m.group(0)
        for m in known
        if (m["sha"], m["source"], m["label"]) == (digest, mine, str(digit))
    ]
    stored = _earliest(shared, same)
    if stored is not None:  # the claim as first made: its time and client
        return Submitted("known", digest, stored)
    images = {m["sha"] for m in known if m["source"] == mine}
    if quota is not None and digest not in images and len(images) >= quota:
        raise QuotaExceeded(
            f"{source} has {len(images)} image(s) awaiting review, its quota "
            f"(serve.feedback_quota {quota}); wait until they are reviewed"
        )
    body = {**asdict(claim), "format": suffix, "image": base64.b64encode(data).decode()}
    key = claim_key(digest, source, digit, nonce or uuid.uuid4().hex)
    shared.call(lambda: shared.storage.create(key, json.dumps(body).encode()))
    return Submitted("pending", digest, claim)


@dataclass(frozen=True)
class Queue:
    """The store's queue as read: each image awaiting review (its `path` the store location of
    its claims), the keys of its claims and its bytes, by SHA-256, and the claim objects that
    are not what `submit` writes, with why (left alone: never accepted, never deleted)."""

    found: list[Pending]
    keys: dict[str, list[str]]
    images: dict[str, bytes]
    problems: dict[str, str]


def queue(shared: SharedInbox, refs: list[str] | None = None) -> Queue:
    """Every claim in the store, read at once; with `refs` (SHA-256 prefixes, as `accept`
    takes them) only the claims of the images they name (DataError: one names no image, or
    several)."""
    listed = claim_keys(shared)
    if refs is not None:
        where = f"{shared.location}/{REVIEW}"
        named = [Pending(sha, f"{where}{sha}", ()) for sha in sorted({m["sha"] for m in listed})]
        chosen = {item.sha256 for item in pending.resolve_among(named, refs, where)}
        listed = [m for m in listed if m["sha"] in chosen]
    keys = [m.group(0) for m in listed]
    bodies = shared.call(lambda: shared.storage.read_many(keys))
    claims: dict[str, list[Claim]] = defaultdict(list)
    read: dict[str, list[str]] = defaultdict(list)
    images: dict[str, bytes] = {}
    problems = {}
    for key, body in zip(keys, bodies, strict=True):
        if body is None:
            continue  # reviewed since it was listed
        digest = key[len(REVIEW) : len(REVIEW) + 64]
        try:
            claim, data = _parse(key, body)
        except DataError as exc:
            problems[f"{shared.location}/{key}"] = str(exc)
            continue
        claims[digest].append(claim)
        read[digest].append(key)
        images.setdefault(digest, data)
    found = [
        Pending(sha, f"{shared.location}/{REVIEW}{sha}", tuple(sorted(c, key=lambda c: c.time)))
        for sha, c in sorted(claims.items())
    ]
    return Queue(found, dict(read), images, problems)


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
        for item in chosen:
            still_held()  # the repair deletes records
            drop_unfinishable(shared, inbox, item, read.keys[item.sha256], who)  # a repair
            digit = pending.accepted_label(item, chosen_label, inbox)
            pending.checked(read.images[item.sha256], item.sha256, str(item.path), digit)
            try:
                shared.known(item.sha256, digit)
            except store.LabelConflict as exc:
                raise store.LabelConflict(f"{exc}; nothing was accepted") from None
            keys = read.keys[item.sha256]
            decided[item.sha256] = decided_by(shared, item, keys, "accept", digit)
            digits[item.sha256] = digit
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
                    added = store.add(inbox, data, str(item.path), digit, locked=True)
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


def _parse(key: str, body: bytes) -> tuple[Claim, bytes]:
    """The claim stored at `key` and its image; DataError when it is not one `submit` writes."""
    named = _CLAIM_KEY.fullmatch(key)
    try:
        raw = json_text.loads(body)
        data = base64.b64decode(raw["image"], validate=True)
        claim = Claim(int(raw["label"]), str(raw["source"]), str(raw["time"]), raw.get("client"))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise DataError(f"not a review claim ({exc})") from None
    if (
        named is None
        or hashlib.sha256(data).hexdigest() != named["sha"]
        or claim.label != int(named["label"])
        or source_id(claim.source) != named["source"]
    ):
        raise DataError("its image, label or source is not the one its key names")
    return claim, data


def _earliest(shared: SharedInbox, keys: list[str]) -> Claim | None:
    """The first made of the claims stored at `keys` that are still there and are claims
    (None: none is; one reviewed since it was listed is not, nor one `queue` lists as a
    problem)."""
    bodies = shared.call(lambda: shared.storage.read_many(keys)) if keys else []
    claims = []
    for key, body in zip(keys, bodies, strict=True):
        try:
            if body is not None:
                claims.append(_parse(key, body)[0])
        except DataError:
            continue
    return min(claims, key=lambda claim: claim.time, default=None)


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
