"""A host's earlier review queue (data/pending/, from before `inbox.shared` was set) moved into
the shared inbox's store, where every host reviews it (review_shared.py). Torch-free."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.regular_file import read_regular
from mnist_pipeline.inbox import pending, store
from mnist_pipeline.inbox.claims import Claim
from mnist_pipeline.inbox.review_queue import claim_key, submit
from mnist_pipeline.inbox.review_records import decided_claims
from mnist_pipeline.inbox.review_shared import reviewers_lease
from mnist_pipeline.inbox.seen import check_not_lost
from mnist_pipeline.inbox.shared import SharedInbox


def move_local(shared: SharedInbox, folder: Path, inbox: Path) -> tuple[int, list[str]]:
    """Move the claims quarantined in this host's `folder` (data/pending/) into the store, each
    with its source, time and client, then delete them here: the number of images moved, and
    why others stayed (a damaged record: none moves; an image that is not its SHA-256 or does
    not decode: that one stays). A move cut short is finished by the next: each claim's key
    comes from the claim, so one the store already has is not added twice, and one that a
    review on another host decided since (its record names that key) is not put back: the
    move holds the reviewers' lease, so no review decides a claim while it looks. A store
    this host synced with that lost its identity (wiped, a share not mounted) is refused:
    StoreUnavailable, nothing moved."""
    moved, stayed = 0, []
    if not folder.is_dir() or not any(folder.iterdir()):
        return moved, stayed  # nothing quarantined: the reviewers' lease is not taken
    # the lease first, as a review takes it: no review decides a claim of it meanwhile
    with reviewers_lease(shared) as still_held, store.lock(inbox):
        try:
            found = pending.items(folder)
        except pending.BadRecord as exc:
            return 0, [f"{exc}; nothing in {folder} was moved to the shared inbox's queue"]
        if found:  # into a wiped store or an unmounted share, the claims would be lost
            check_not_lost(shared, inbox, f"moved from {folder}")
        for item in found:
            try:
                data = read_regular(item.path, store.MAX_FILE_BYTES)
                for digit in item.labels:
                    pending.checked(data, item.sha256, str(item.path), digit)
            except (OSError, DataError) as exc:
                stayed.append(f"{item.path} stays in {folder}: {exc}")
                continue
            decided = decided_claims(shared, item.sha256)
            for claim in item.claims:
                nonce = _nonce(item.sha256, claim)
                if claim_key(item.sha256, claim.source, claim.label, nonce) in decided:
                    continue  # moved by a move cut short, and reviewed since on another host
                name, source, client = str(item.path), claim.source, claim.client
                still_held()
                submit(
                    shared, data, name, claim.label, source, client, time=claim.time, nonce=nonce
                )
            (folder / f"{item.sha256}.json").unlink(missing_ok=True)
            Path(item.path).unlink(missing_ok=True)
            moved += 1
    return moved, stayed


def _nonce(sha256: str, claim: Claim) -> str:
    """The end of a moved claim's key, the same each time the claim is moved."""
    text = "\n".join([sha256, claim.source, str(claim.label), claim.time, claim.client or ""])
    return hashlib.sha256(text.encode()).hexdigest()[:32]
