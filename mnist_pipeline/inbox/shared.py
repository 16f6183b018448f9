"""The inbox on object storage (params `inbox.shared`), for hosts that share no folder.

    <store>/images/<sha256>.<nonce>  the image's bytes, one object per publication
    <store>/labels/<sha256>.json     {"label": 7, "format": "png", "by": "...", "time": "...",
                                      "image": "images/<sha256>.<nonce>"}
    <store>/inbox.json               {"id": ...}: the store's identity (sync.py)
    <store>/removed/<sha256>.json    an image removed, until it is added again (removals.py)
    <store>/pending.json             {"pending": 12, "recent": [...]}: images added since the
                                     last retraining event, by every host (events.py;
                                     compare-and-swap), and what its last writes counted

Images, records and the identity are created only if absent (S3: `If-None-Match: *`); the
count is replaced by compare-and-swap (`If-Match`). The label record is the commit: a
publication writes the image's bytes under a key of its own first, then the record naming that
key, so of two hosts labelling one image differently exactly one wins and the other gets a
LabelConflict naming both labels, whatever the timing (the loser deletes its unreferenced
bytes). Retracting deletes the record, then the bytes it named, which no other record can name:
a record never points at nothing, however a retraction and a publication of one image
interleave. Records written before the nonce (no "image") name `images/<sha256>`. Bytes a
publisher left without a record are collected by orphans.py.
Keys and records are read by shared_records.py. Each host keeps its own inbox folder (what
ingest reads and DVC tracks) in step with the store through sync.py. The store is any backend
of the registry's storage interface (registry.open_storage): s3://BUCKET/PREFIX or a folder.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

from mnist_pipeline.core import json_text
from mnist_pipeline.core.errors import DataError, RegistryError, describe_os_error
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.inbox import removals
from mnist_pipeline.inbox.shared_records import (
    FORMAT,
    IMAGES,
    LABELS,
    SHA256,
    Record,
    image_sha256,
    parse_record,
    pending_document,
)
from mnist_pipeline.inbox.store import LabelConflict, check_label
from mnist_pipeline.registry import local_folder, open_storage

IDENTITY = "inbox.json"  # {"id": ...}: created with the store's first image, never removed
PENDING = "pending.json"  # {"pending": n}: the retraining trigger's count, shared by every host
RECENT_WRITES = 64  # pending.json keeps its last writes' results: a retry finds its own landed
READERS = 8  # label records read at once (one small GET each)
T = TypeVar("T")
Retraction = Literal["removed", "absent", "kept"]  # what SharedInbox.retract did


class StoreUnavailable(DataError):
    """The store cannot be used: unreachable, no bucket, credentials refused (one line naming
    the store and its endpoint)."""


def open_shared(location: str | None, layout: Layout) -> SharedInbox | None:
    """The shared inbox params name (`inbox.shared`; None: not configured); a relative folder
    is under the project folder."""
    return None if location is None else SharedInbox(layout.shared_inbox(location))


class SharedInbox:
    """The labelled images on one store, by SHA-256."""

    def __init__(self, location: str | Path) -> None:
        folder = self.call(lambda: local_folder(location, role="shared inbox"))
        if folder is not None and not folder.is_dir():
            raise StoreUnavailable(  # an unmounted share must not look like an empty store
                f"shared inbox {folder} is not a folder: create it (or mount it) first"
            )
        self.storage = self.call(lambda: open_storage(location, role="shared inbox"))
        self.location = self.storage.location
        self._identity: str | None = None

    def records(self) -> tuple[dict[str, Record], dict[str, str]]:
        """Every image the store holds, with its label (records read in parallel), and the
        label records that could not be read, with why (by image SHA-256)."""
        keys = [
            k
            for k in self.call(lambda: self.storage.list(LABELS))
            if k.endswith(".json") and SHA256.fullmatch(k[len(LABELS) : -5])
        ]

        def read(key: str) -> tuple[str, Record | None | str]:
            try:
                return key[len(LABELS) : -5], self._record(key)
            except StoreUnavailable:
                raise
            except DataError as exc:  # one bad record stops nothing else
                return key[len(LABELS) : -5], str(exc)

        with ThreadPoolExecutor(READERS) as pool:
            found = list(pool.map(read, keys))
        records = {sha: r for sha, r in found if isinstance(r, Record)}
        return records, {sha: r for sha, r in found if isinstance(r, str)}

    def record(self, digest: str) -> Record | None:
        """The store's record of the image with this SHA-256 (None: not there)."""
        return self._record(f"{LABELS}{digest}.json")

    def readable_record(self, digest: str) -> Record | None:
        """`record`, None also for a record that is not one (an unreachable store raises)."""
        try:
            return self.record(digest)
        except StoreUnavailable:
            raise
        except DataError:
            return None

    def image(self, digest: str, record: Record) -> bytes:
        """The bytes `record` names, checked against the SHA-256 (DataError when missing or
        altered)."""
        data = self.call(lambda: self.storage.read(record.image))
        if data is None:
            raise DataError(
                f"shared inbox {self.location}: image {digest[:12]} is missing ({record.image})"
            )
        if hashlib.sha256(data).hexdigest() != digest:
            raise DataError(f"shared inbox {self.location}: image {digest} does not match its hash")
        return data

    def publish(self, data: bytes, label: int, image_format: str, by: str) -> bool:
        """Share one image under `label`: True if this call added it, False if the store had it
        already with that label; LabelConflict if it has it with another."""
        digest, label = hashlib.sha256(data).hexdigest(), check_label(label)
        self.identity(create=True)
        if self.known(digest, label):
            return False
        key = f"{IMAGES}{digest}.{uuid.uuid4().hex}"  # this publication's own: no record has it
        self.call(lambda: self.storage.create(key, data))
        fmt = image_format if FORMAT.fullmatch(image_format) else "img"
        record = {"label": label, "format": fmt, "image": key, "by": by}
        record["time"] = datetime.now(UTC).isoformat()
        body = json.dumps(record, sort_keys=True).encode()
        if self.call(lambda: self.storage.create(f"{LABELS}{digest}.json", body)):
            # stalled past the grace period between the writes, its bytes were collected as
            # named by no record (orphans.py): a record must never point at nothing
            if self.call(lambda: self.storage.read(key)) is None:
                self.call(lambda: self.storage.create(key, data))
            removals.forget(self, digest)  # added again: no longer a removed image
            return True
        self.call(lambda: self.storage.delete(key))  # another host's record came first
        self.known(digest, label)  # same label, or a conflict
        return False

    def identity(self, create: bool = False, fresh: bool = False) -> str | None:
        """The store's id, made once with its first image (None: never written to, or wiped or
        unmounted since): a host tells a store that lost everything from one whose images were
        all retracted by it, and a store made afresh from the old one. Read once per object,
        or again when `fresh`."""
        if self._identity is None or fresh:
            found = self.call(lambda: self.storage.read(IDENTITY))
            if found is None and create:
                made = json.dumps({"id": uuid.uuid4().hex}).encode()
                self.call(lambda: self.storage.create(IDENTITY, made))  # False: another host's
                found = self.call(lambda: self.storage.read(IDENTITY))
            try:
                self._identity = None if found is None else str(json_text.loads(found)["id"])
            except (ValueError, KeyError, TypeError):
                raise StoreUnavailable(
                    f"shared inbox {self.location}: {IDENTITY} is not what this program writes"
                ) from None
        return self._identity

    def retract(self, digest: str, label: int | None = None) -> Retraction:
        """Remove one image from the store, if it has it (with `label`, when given, or a record
        that is not one): its record, if it is still the one read, then the bytes that record
        named (a record that is not one names none: only it goes). A publication racing this
        one writes bytes of its own; a record published again since it was read stays.
        Returns "removed", "absent" (no record) or "kept" (relabelled or published again)."""
        key = f"{LABELS}{digest}.json"
        document = self.call(lambda: self.storage.read_document(key))
        if document is None:
            return "absent"
        try:
            found: Record | None = parse_record(self.location, key, document[0])
        except DataError:
            found = None
        if found is not None and label is not None and found.label != label:
            return "kept"  # relabelled elsewhere: not the record asked for
        if not self.call(lambda: self.storage.delete_document(key, document[1])):
            return "kept"  # published again since it was read
        if found is not None:
            self.call(lambda: self.storage.delete(found.image))
        return "removed"

    def count_pending(self, new: int, claim_at: int | None = None) -> tuple[int, bool]:
        """Add `new` to the store's pending count by compare-and-swap (retried when another
        host changed it first): (the count, whether it was claimed), where a count that
        reaches `claim_at` is claimed (set back to 0) in the same swap. A write whose answer
        was lost is found by its id in the document's recent writes: never counted twice."""
        write = uuid.uuid4().hex  # this call's, in every attempt's document
        while True:
            found = self.call(lambda: self.storage.read_document(PENDING))
            count, recent = pending_document(None if found is None else found[0])
            landed = [entry for entry in recent if entry.get("write") == write]
            if landed:  # an earlier attempt's write landed, then another host's
                return int(landed[0]["count"]), bool(landed[0]["claimed"])
            count += new
            claimed = claim_at is not None and count >= claim_at
            mine = {"write": write, "count": count, "claimed": claimed}
            body = json.dumps(
                {"pending": 0 if claimed else count, "recent": [*recent, mine][-RECENT_WRITES:]}
            ).encode()
            revision = None if found is None else found[1]
            if self.call(lambda b=body, r=revision: self.storage.swap(PENDING, b, r)):
                return count, claimed

    def image_keys(self) -> list[str]:
        """Every key holding an image's bytes, named by a record or not."""
        return [k for k in self.call(lambda: self.storage.list(IMAGES)) if image_sha256(k)]

    def delete_unnamed(self, key: str) -> bool:
        """Delete bytes (orphans.py) if their image's record, read now, does not name them
        (a record that cannot be read keeps them); True when deleted."""
        digest = image_sha256(key)
        if digest is None:
            raise ValueError(f"{key!r} is not an image key")
        try:
            record = self.record(digest)
        except StoreUnavailable:
            raise
        except DataError:
            return False
        if record is not None and record.image == key:
            return False
        self.call(lambda: self.storage.delete(key))
        return True

    # ---- helpers

    def known(self, digest: str, label: int) -> bool:
        """True when the store holds the image with `label`; LabelConflict with another."""
        found = self.record(digest)
        if found is not None and found.label != label:
            raise LabelConflict(
                f"image {digest[:12]} is labelled {found.label} in the shared inbox "
                f"{self.location}, not {label}; to relabel it, take it out of the shared inbox "
                f"first: `data sync`, then `data remove {digest[:12]}`"
            )
        return found is not None

    def _record(self, key: str) -> Record | None:
        data = self.call(lambda: self.storage.read(key))
        if data is None:  # retracted since listed
            return None
        return parse_record(self.location, key, data)

    @staticmethod
    def call(action: Callable[[], T]) -> T:
        """The store's errors as StoreUnavailable (one line naming the store and its endpoint)."""
        try:
            return action()
        except RegistryError as exc:
            raise StoreUnavailable(str(exc)) from None
        except OSError as exc:  # a folder store: permissions, a full disk
            raise StoreUnavailable(f"shared inbox: {describe_os_error(exc)}") from None
