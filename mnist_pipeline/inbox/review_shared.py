"""The review queue on the shared inbox's store (params `inbox.shared`): /feedback and `data add
--pending` on any host, `data pending|accept|reject` on any other.

    <store>/review/<sha256>/<source id>.<label>.<nonce>.json   one claim: label, source, time,
                                                               client, format and the image
    <store>/review-log/<time>.<nonce>.json                     one review (as review-log.jsonl)

A claim is one object, written create-only with its image inside it (base64), so no claim ever
names bytes that are gone and a crash leaves a whole claim or none. Its key names the image,
the source (a hash of it) and the label: the quota (images per source awaiting review) and
"this source already claimed this label" are read from one listing, never from the claims.
Reviews take the store's lease (`Storage.exclusive`: a lock file on a folder, a lease object
on S3), so two reviewers never decide one image at once; they read the claims under it, check
every image before anything moves, publish accepted images to the shared inbox, record the
review in the store (and this host's review log), and delete exactly the claims they read: a
claim that arrives meanwhile stays pending. Claims quarantined in this host's data/pending/
before the queue moved to the store are moved into it first (`move_local`), none lost.
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
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.inbox import pending, store
from mnist_pipeline.inbox.pending import Claim, Pending, QuotaExceeded, Submitted
from mnist_pipeline.inbox.shared import SharedInbox

REVIEW = "review/"
REVIEW_LOG = "review-log/"
LEASE = "review"  # the reviewers' lease (Storage.exclusive)
_CLAIM_KEY = re.compile(
    r"^review/(?P<sha>[0-9a-f]{64})/(?P<source>[0-9a-f]{16})\.(?P<label>[0-9])\.[0-9a-f]{32}\.json$"
)


def source_id(source: str) -> str:
    """The part of a claim's key that names its source (a hash: sources are free text)."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


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
) -> Submitted:
    """`pending.submit` into the store: one create-only claim object. Concurrent submissions of
    one source can pass its quota by the few in flight; never by more."""
    digit, digest, suffix = store.validate(data, name, label)
    claim = Claim(digit, source, time or pending.utc_now(), client)
    mine, known = source_id(source), claim_keys(shared)
    if any(m["sha"] == digest and m["source"] == mine and int(m["label"]) == digit for m in known):
        return Submitted("known", digest, claim)
    images = {m["sha"] for m in known if m["source"] == mine}
    if quota is not None and digest not in images and len(images) >= quota:
        raise QuotaExceeded(
            f"{source} has {len(images)} image(s) awaiting review, its quota "
            f"(serve.feedback_quota {quota}); wait until they are reviewed"
        )
    body = {**asdict(claim), "format": suffix, "image": base64.b64encode(data).decode()}
    key = f"{REVIEW}{digest}/{mine}.{digit}.{uuid.uuid4().hex}.json"
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


def queue(shared: SharedInbox) -> Queue:
    """Every claim in the store, read at once."""
    keys = [m.group(0) for m in claim_keys(shared)]
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
    shared: SharedInbox, inbox: Path, refs: list[str], who: str, label: int | None = None
) -> list[store.Added]:
    """`pending.accept` from the store's queue: every reference, label and image checked under
    the reviewers' lease before anything moves; then each image published to the shared inbox,
    the review recorded, the image added here and its claims deleted."""
    chosen_label = None if label is None else store.check_label(label)
    done = []
    with _lease(shared):
        read = queue(shared)
        keys, images = read.keys, read.images
        chosen = pending.resolve_among(read.found, refs, f"{shared.location}/{REVIEW}")
        digits = {}
        for item in chosen:
            digit = pending.accepted_label(item, chosen_label, inbox)
            pending.checked(images[item.sha256], item.sha256, str(item.path), digit)
            digits[item.sha256] = digit
        for item in chosen:
            data, digit = images[item.sha256], digits[item.sha256]
            shared.publish(data, digit, store.image_format(data), f"cli:{who}")
        for item in chosen:
            digit = digits[item.sha256]
            _record(shared, inbox, pending.review_line(who, "accept", item, digit))
            done.append(store.add(inbox, images[item.sha256], str(item.path), digit))
            _delete(shared, keys[item.sha256])
    return done


def reject(shared: SharedInbox, inbox: Path, refs: list[str], who: str) -> list[Pending]:
    """Delete the referenced images' claims from the store's queue (none if a reference is
    refused), each review recorded first."""
    with _lease(shared):
        read = queue(shared)
        chosen = pending.resolve_among(read.found, refs, f"{shared.location}/{REVIEW}")
        for item in chosen:
            _record(shared, inbox, pending.review_line(who, "reject", item, None))
            _delete(shared, read.keys[item.sha256])
    return chosen


def move_local(shared: SharedInbox, folder: Path, inbox: Path) -> int:
    """Move the claims quarantined in this host's `folder` (data/pending/) into the store, each
    with its source, time and client, then delete them here; the number of images moved. An
    image whose move fails stays here (with every claim not yet in the store)."""
    moved = 0
    with store.lock(inbox):
        for item in pending.items(folder):
            data = Path(item.path).read_bytes()
            for claim in item.claims:
                name, source, client = str(item.path), claim.source, claim.client
                submit(shared, data, name, claim.label, source, client, time=claim.time)
            (folder / f"{item.sha256}.json").unlink(missing_ok=True)
            Path(item.path).unlink(missing_ok=True)
            moved += 1
    return moved


def _parse(key: str, body: bytes) -> tuple[Claim, bytes]:
    """The claim stored at `key` and its image; DataError when it is not one `submit` writes."""
    named = _CLAIM_KEY.fullmatch(key)
    try:
        raw = json.loads(body)
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


@contextmanager
def _lease(shared: SharedInbox) -> Iterator[None]:
    """The reviewers' lease on the store (StoreUnavailable when it cannot be taken)."""
    with ExitStack() as held:
        shared.call(lambda: held.enter_context(shared.storage.exclusive(LEASE)))
        yield


def _record(shared: SharedInbox, inbox: Path, line: dict[str, object]) -> None:
    """One review, in the store and in this host's review log."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    key = f"{REVIEW_LOG}{stamp}.{uuid.uuid4().hex}.json"
    shared.call(lambda: shared.storage.create(key, json.dumps(line).encode()))
    pending.append_log(inbox.parent / pending.REVIEW_LOG, line)


def _delete(shared: SharedInbox, keys: list[str]) -> None:
    for key in keys:
        shared.call(lambda k=key: shared.storage.delete(k))
