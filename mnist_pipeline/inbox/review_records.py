"""The review log on the shared inbox's store: one record per review, naming the claims it
decides (review_shared.py takes the reviewers' lease around every call here).

    <store>/review-log/<sha256>/<claims id>.json    one review (as data/review-log.jsonl)

A review cut short after its record is finished by the next review of the same kind; an accept
whose label the shared inbox can no longer take (a `data add` gave the image another label
meanwhile) is withdrawn: its record deleted and the withdrawal logged on this host.
Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mnist_pipeline.core import json_text
from mnist_pipeline.core.errors import DataError
from mnist_pipeline.inbox import pending
from mnist_pipeline.inbox.claims import Pending
from mnist_pipeline.inbox.shared import SharedInbox

REVIEW_LOG = "review-log/"


def _records(shared: SharedInbox, sha256: str) -> list[tuple[str, dict, set[str]]]:
    """The store's review records of image `sha256`: each one's key, body and the claim keys it
    names (what is not a record this program writes decides nothing, and is left out)."""
    names = shared.call(lambda: shared.storage.list(f"{REVIEW_LOG}{sha256}/"))
    found = []
    bodies = shared.call(lambda: shared.storage.read_many(names))
    for name, body in zip(names, bodies, strict=True):
        try:
            record = dict(json_text.loads(body or b""))
            found.append((name, record, set(record["claims"])))
        except (ValueError, KeyError, TypeError):
            continue
    return found


def decided_claims(shared: SharedInbox, sha256: str) -> set[str]:
    """The keys of the claims of image `sha256` that a recorded review decides."""
    return {key for _, _, claims in _records(shared, sha256) for key in claims}


def decided_by(
    shared: SharedInbox, item: Pending, keys: list[str], action: str, label: int | None = None
) -> dict | None:
    """The recorded review that already decided every claim in `keys` (a review cut short after
    its record): None when there is none; DataError when one decided any of them otherwise than
    `action` with `label` (the review is finished as it was decided; a claim that arrived
    since does not make it undecided)."""
    for _, record, claims in _records(shared, item.sha256):
        try:
            earlier = str(record["action"])
        except KeyError:
            continue  # not a record this program writes: it decides nothing
        covered = set(keys) <= claims
        if claims & set(keys) and (earlier, record.get("label")) != (action, label):
            how = f" --label {record.get('label')}" if earlier == "accept" else ""
            raise DataError(
                f"{item.sha256[:12]}: {record.get('who')} decided to {earlier} it at "
                f"{record.get('time')}, and that review was cut short: {earlier} it{how} to "
                "finish"
            )
        if covered:
            return record
    return None


def record(shared: SharedInbox, inbox: Path, keys: list[str], line: dict[str, object]) -> None:
    """One review of the claims at `keys`, in the store (naming them: a review cut short after
    this is finished without a second record) and in this host's review log."""
    decided = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:32]
    key = f"{REVIEW_LOG}{line['sha256']}/{decided}.json"
    body = json.dumps({**line, "claims": sorted(keys)}).encode()
    if shared.call(lambda: shared.storage.create(key, body)):
        pending.append_log(inbox.parent / pending.REVIEW_LOG, line)
        return
    # another review recorded these very claims since this one read the queue
    try:
        there = dict(json_text.loads(shared.call(lambda: shared.storage.read(key)) or b"{}"))
    except (ValueError, TypeError):
        there = {}  # not a record this program writes: not this decision either
    if (there.get("action"), there.get("label")) != (line["action"], line.get("label")):
        raise DataError(
            f"{str(line['sha256'])[:12]}: reviewed elsewhere meanwhile ({there.get('who')} "
            f"decided to {there.get('action')} it); this review stops here"
        )


def drop_unfinishable(
    shared: SharedInbox, inbox: Path, item: Pending, keys: list[str], who: str
) -> None:
    """Withdraw the accept records of `item`'s pending claims (`keys`) that can never be
    carried out, the shared inbox holding the image with another label: each is deleted from
    the store and logged here as withdrawn by `who` (with the record it undoes), so the claims
    can be reviewed again. A finished review's claims are gone, so its record is kept; so is
    every record while the image's label record cannot be read."""
    there = shared.readable_record(item.sha256)  # None: no label record, or a damaged one
    if there is None:
        return
    for name, found, claims in _records(shared, item.sha256):
        in_progress = bool(claims & set(keys))
        if in_progress and found.get("action") == "accept" and found.get("label") != there.label:
            shared.call(lambda n=name: shared.storage.delete(n))
            line = pending.review_line(who, "withdraw", item, found.get("label"))
            line["withdrawn"] = {k: found.get(k) for k in ("who", "time", "claims")}
            pending.append_log(inbox.parent / pending.REVIEW_LOG, line)
