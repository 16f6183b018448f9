"""Quarantine: labelled digits from the server's /feedback and `data add --pending` wait here.

    data/pending/<sha256>.<format>   the image, once per content
    data/pending/<sha256>.json       its claims, one per submission: label, source, time, client

Nothing here is training data: ingest reads data/extra/ only, and data/pending/ is neither a DVC
output nor a dependency. A reviewer lists the claims (`data pending`), then `accept` moves an
image into the inbox through `store.add` (its duplicate and conflict rules) or `reject` deletes
it. Submitting, accepting and rejecting run under the inbox's lock; a review resolves its
references, and an accept reads and checks every image (content matching its SHA-256 name,
decodable, no label conflict), inside that lock before anything moves: all or nothing. Each
reviewed image gets one line in data/review-log.jsonl (who, when, action, image, label,
sources). A submission never consults the inbox: an image already there is quarantined like any
other (its answer must not tell a client what the training data holds). Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from mnist_pipeline.core import json_text
from mnist_pipeline.core.atomic import append_line, write_bytes, write_json
from mnist_pipeline.core.contract import CLASS_LABELS
from mnist_pipeline.core.errors import DataError, describe_os_error
from mnist_pipeline.core.regular_file import read_regular
from mnist_pipeline.inbox import drawings, lookup, store
from mnist_pipeline.inbox.claims import (
    BadRecord,
    BadSubmission,
    Claim,
    Pending,
    QuotaExceeded,
    Submitted,
)

REVIEW_LOG = "review-log.jsonl"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_RECORD_BYTES = 16 * 1024 * 1024  # a record is about 1 kB a claim


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def review_log(folder: Path) -> Path:
    """The append-only log of accepts and rejects, beside the pending folder."""
    return folder.parent / REVIEW_LOG


def items(folder: Path) -> list[Pending]:
    """Every pending image, by SHA-256 (a sidecar whose image is gone is skipped); BadRecord
    for a sidecar that is not one `submit` writes."""
    found = []
    if folder.exists() and not folder.is_dir():  # not "nothing pending": submit would fail
        raise DataError(f"the pending area {folder} is not a folder")
    # not ".<name>.json.<random>.tmp.json": a write in progress, or one a killed process left
    for sidecar in sorted(folder.glob("[!.]*.json")) if folder.is_dir() else []:
        try:
            record = json_text.loads(read_regular(sidecar, MAX_RECORD_BYTES))
        except FileNotFoundError:
            continue  # accepted or rejected since the folder was listed
        except OSError as exc:  # a folder, or a pipe (which would block under the inbox lock)
            raise _bad(sidecar, f"not a pending-image record ({exc.strerror})") from None
        except ValueError as exc:
            raise _bad(sidecar, f"not a pending-image record ({exc})") from None
        try:
            image = folder / Path(record["file"]).name
            claims = tuple(Claim(**claim) for claim in record["claims"])
            sha256 = str(record["sha256"])
        except KeyError as exc:
            raise _bad(sidecar, f"not a pending-image record (no {exc} key)") from None
        except (ValueError, TypeError) as exc:
            raise _bad(sidecar, f"not a pending-image record ({exc})") from None
        if not _SHA256.match(sha256) or sha256 != sidecar.stem or image.stem != sha256:
            raise _bad(sidecar, "its sha256 and file are not the SHA-256 it is named by")
        if not claims or any(
            not isinstance(c.label, int) or str(c.label) not in CLASS_LABELS for c in claims
        ):
            raise _bad(sidecar, "a claim without a label 0-9")
        if image.is_file():
            found.append(Pending(sha256, image, claims))
    return found


def _bad(sidecar: Path, why: str) -> BadRecord:
    """A sidecar `submit` did not write, named with what to do: the queue waits on it."""
    return BadRecord(f"{sidecar}: {why}; move it and its image out of {sidecar.parent}")


def submit(
    folder: Path,
    inbox: Path,
    data: bytes,
    name: str,
    label: object,
    source: str,
    client: str | None = None,
    quota: int | None = None,
) -> Submitted:
    """Quarantine one image (`data`, called `name` in messages; validated as `store.add`
    would) as claimed to show `label` by `source` from `client`, now; QuotaExceeded when
    `source` already has `quota` images pending."""
    digit, digest, suffix = validated(data, name, label)
    claim = Claim(digit, source, utc_now(), client)
    with store.lock(inbox):  # serialised with reviews; the inbox itself is not read
        known = {item.sha256: item for item in items(folder)}
        item = known.get(digest)
        claims = item.claims if item is not None else ()
        image = folder / f"{digest}.{suffix}"
        absent = not image.is_file()
        if not absent and not _intact(image, digest):  # damaged: this copy repairs it
            write_bytes(image, data)
        stored = next((c for c in claims if c.source == source and c.label == digit), None)
        if stored is not None:  # the claim as first made: its time and client
            return Submitted("known", digest, stored)
        mine = sum(any(c.source == claim.source for c in i.claims) for i in known.values())
        already = item is not None and any(c.source == claim.source for c in claims)
        if quota is not None and not already and mine >= quota:
            raise QuotaExceeded(
                f"{claim.source} has {mine} image(s) awaiting review, its quota "
                f"(serve.feedback_quota {quota}); wait until they are reviewed"
            )
        if absent:
            write_bytes(image, data)
        claimed = [asdict(c) for c in (*claims, claim)]
        record = {"sha256": digest, "file": image.name, "claims": claimed}
        try:
            write_json(folder / f"{digest}.json", record)
        except BaseException:  # no image without its sidecar
            if absent:
                image.unlink(missing_ok=True)
            raise
    return Submitted("pending", digest, claim)


def _intact(image: Path, digest: str) -> bool:
    """Whether the pending copy `image` still holds the image its name says."""
    try:
        return hashlib.sha256(read_regular(image, store.MAX_FILE_BYTES)).hexdigest() == digest
    except OSError:
        return False


def validated(data: bytes, name: str, label: object) -> tuple[int, str, str]:
    """`store.validate` for a submission: BadSubmission when the image or label is refused."""
    try:
        return store.validate(data, name, label)
    except DataError as exc:
        raise BadSubmission(str(exc)) from None


def resolve(folder: Path, refs: list[str]) -> list[Pending]:
    """The pending images named by SHA-256 prefixes (8+ hex digits), in the order given; one
    DataError for the first reference that matches none or several."""
    return resolve_among(items(folder), refs, folder)


def resolve_among(known: list[Pending], refs: list[str], where: Path | str) -> list[Pending]:
    """`resolve` among `known` (in `where`, for messages)."""
    chosen: list[Pending] = []
    for ref in refs:
        key = ref.strip().lower()
        matches = [i for i in known if len(key) >= 8 and i.sha256.startswith(key)]
        if len(matches) != 1:
            what = "no pending image" if not matches else f"{len(matches)} pending images"
            raise lookup.unmatched(ref, what, where)
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


def accept(
    folder: Path,
    inbox: Path,
    refs: list[str],
    who: str,
    label: int | None = None,
    each: Callable[[store.Added], None] | None = None,
) -> list[store.Added]:
    """Move the referenced images into the inbox under their claimed label (`label` overrides:
    needed where claims conflict); every reference, label and image is checked under the
    inbox's lock before anything moves: on an error nothing moves, and a write that fails
    partway leaves those before it accepted (`each` hears each one). (With a shared inbox the
    queue is the store's: review_shared.accept.)"""
    chosen_label = None if label is None else store.check_label(label)
    done = []
    with store.lock(inbox):
        chosen = resolve(folder, refs)  # under the lock: no claim arrives unseen meanwhile
        digits, contents = {}, {}
        listed = store.Listing(inbox)  # each file hashed once for every check and add below
        present = listed.entries()
        for item in chosen:
            digit = accepted_label(item, chosen_label, inbox, present)
            digits[item.sha256], contents[item.sha256] = digit, _content(item, digit)
            store.placed(inbox, contents[item.sha256], str(item.path), digit, present)  # room
        accepting = [(contents[i.sha256], str(i.path), digits[i.sha256]) for i in chosen]
        drawings.check_labels_agree(inbox, accepting, present)
        for item in chosen:
            digit = digits[item.sha256]
            # logged first: an image never reaches the inbox (and training) unlogged; a line
            # whose write to the inbox then failed is followed by the retry's own
            _log(folder, who, "accept", item, digit)
            data = contents[item.sha256]
            done.append(store.add(inbox, data, str(item.path), digit, locked=True, listed=listed))
            if each is not None:  # counted as soon as it is in the inbox
                each(done[-1])
            _forget(folder, item)
    return done


def accepted_label(
    item: Pending, label: int | None, inbox: Path, present: list[store.Entry] | None = None
) -> int:
    """The digit `item` is accepted as (`label`, or the one its claims agree on); DataError
    when the claims disagree and no label is given, LabelConflict when the inbox holds the
    image under another (`present`: as for `store.find`)."""
    if label is None and item.conflict:
        raise DataError(
            f"{item.sha256[:12]}: the claims disagree (labels {item.labels}); "
            "pass --label to choose one"
        )
    digit = item.labels[0] if label is None else label
    there = store.find(inbox, item.sha256, present)
    if there is not None and there.label != digit:
        raise store.LabelConflict(
            f"{item.sha256[:12]}: already in the inbox labelled {there.label} "
            f"({there.path}); nothing was accepted"
        )
    return digit


def reject(folder: Path, inbox: Path, refs: list[str], who: str) -> list[Pending]:
    """Delete the referenced pending images (nothing is deleted if any reference is refused)."""
    with store.lock(inbox):
        chosen = resolve(folder, refs)  # under the lock: every claim made is in the log
        for item in chosen:
            _log(folder, who, "reject", item, None)
            _forget(folder, item)
    return chosen


def _content(item: Pending, digit: int) -> bytes:
    """The pending image's bytes, checked against its SHA-256 name and as `store.add` would."""
    try:
        data = read_regular(item.path, store.MAX_FILE_BYTES)
    except FileNotFoundError:
        raise DataError(f"{item.path}: the image is gone; nothing was accepted") from None
    except OSError as exc:
        raise DataError(f"{describe_os_error(exc)}; nothing was accepted") from None
    return checked(data, item.sha256, str(item.path), digit)


def checked(data: bytes, sha256: str, name: str, digit: int) -> bytes:
    """`data`, once it is the image of this SHA-256 and one `store.add` takes as `digit`."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise DataError(
            f"{name}: its content is not the SHA-256 it is named by (damaged?); nothing was "
            "accepted: the image sent again repairs it, `data reject` removes it"
        )
    store.validate(data, name, digit)
    return data


def _forget(folder: Path, item: Pending) -> None:
    (folder / f"{item.sha256}.json").unlink(missing_ok=True)
    Path(item.path).unlink(missing_ok=True)


def _log(folder: Path, who: str, action: str, item: Pending, label: int | None) -> None:
    """Append one review line and flush it to disk (the caller holds the inbox's lock)."""
    append_log(review_log(folder), review_line(who, action, item, label))


def review_line(who: str, action: str, item: Pending, label: int | None) -> dict[str, object]:
    """One review of one image: who, when, accept or reject, the label stored, what was claimed
    and by whom."""
    return {
        "time": utc_now(),
        "who": who,
        "action": action,
        "sha256": item.sha256,
        "label": label,
        "claimed": item.labels,
        "sources": sorted({claim.source for claim in item.claims}),
    }


def append_log(path: Path, line: dict[str, object]) -> None:
    """Append `line` to the review log at `path` as JSON, whole, and flush it to disk."""
    append_line(path, json.dumps(line))
