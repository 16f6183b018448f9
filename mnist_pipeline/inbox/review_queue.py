"""The review queue's claims on the shared inbox's store (params `inbox.shared`): submitted by
/feedback and `data add --pending` on any host, read by reviews (review_shared.py).

    <store>/review/<sha256>/<source id>.<label>.<nonce>.json   one claim: label, source, time,
                                                               client, format and the image

A claim is one object, written create-only with its image inside it (base64), so no claim ever
names bytes that are gone and a crash leaves a whole claim or none. Its key names the image,
the source (a hash of it) and the label: the quota (images per source awaiting review) and
"this source already claimed this label" are read from one listing (a repeated claim is
answered with the claim as first made, read back: its time and client). Torch-free.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass

from mnist_pipeline.core import json_text
from mnist_pipeline.core.errors import DataError
from mnist_pipeline.inbox import pending
from mnist_pipeline.inbox.claims import Claim, Pending, QuotaExceeded, Submitted
from mnist_pipeline.inbox.shared import SharedInbox

REVIEW = "review/"
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
    """`pending.submit` into the store: one create-only claim object (again where the claims
    of this source and label are all damaged). Concurrent submissions of one source can pass
    its quota by the few in flight; never by more. `nonce` (32 hex digits; default random)
    ends the claim's key: one claim submitted twice is then stored once."""
    digit, digest, suffix = pending.validated(data, name, label)
    claim = Claim(digit, source, time or pending.utc_now(), client)
    mine, known = source_id(source), claim_keys(shared)
    same = [
        m.group(0)
        for m in known
        if (m["sha"], m["source"], m["label"]) == (digest, mine, str(digit))
    ]
    key = claim_key(digest, source, digit, nonce or uuid.uuid4().hex)
    first = _earliest(shared, same)  # the claim as first made (its time and client)
    if first is not None or key in same:  # (a damaged object where this claim goes: left)
        return Submitted("known", digest, first or claim)
    # none, or only claims that are damaged (not what this writes) or reviewed since the
    # listing: stored afresh, as sending a damaged pending file again repairs it
    images = {m["sha"] for m in known if m["source"] == mine}
    if quota is not None and digest not in images and len(images) >= quota:
        raise QuotaExceeded(
            f"{source} has {len(images)} image(s) awaiting review, its quota "
            f"(serve.feedback_quota {quota}); wait until they are reviewed"
        )
    body = {**asdict(claim), "format": suffix, "image": base64.b64encode(data).decode()}
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
            claim, data = parse(key, body)
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


def parse(key: str, body: bytes) -> tuple[Claim, bytes]:
    """The claim stored at `key` and its image; DataError when it is not one `submit` writes."""
    named = _CLAIM_KEY.fullmatch(key)
    try:
        raw = json_text.loads(body)
        data = base64.b64decode(raw["image"], validate=True)
        claim = Claim(raw["label"], raw["source"], raw["time"], raw.get("client"))  # types checked
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
    (None: none is, reviewed since they were listed or not what `submit` writes)."""
    bodies = shared.call(lambda: shared.storage.read_many(keys)) if keys else []
    claims = []
    for key, body in zip(keys, bodies, strict=True):
        try:
            if body is not None:
                claims.append(parse(key, body)[0])
        except DataError:
            continue
    return min(claims, key=lambda claim: claim.time, default=None)
