"""Bytes in the shared inbox that no label record names, removed after a grace period.

A publication writes its image's bytes, then the record naming them (shared.py); a publisher
that dies in between leaves bytes no record will ever name. Each sync lists them and notes when
this host first saw each one unnamed (data/.extra.orphans.json, this host's clock only); bytes
still unnamed GRACE_S later, counted to the moment before the records were read, are deleted if
their image's record, read once more, does not name them. A record written within the grace
period of its bytes is therefore never without them (boto3's timeouts bound a write to minutes);
a publication that finds its bytes gone after writing its record writes them again
(`publish`). Bytes of an image whose record cannot be read are kept.
"""

from __future__ import annotations

from pathlib import Path

from mnist_pipeline.core import json_text
from mnist_pipeline.core.atomic import write_json
from mnist_pipeline.core.regular_file import read_regular
from mnist_pipeline.inbox.shared import Record, SharedInbox, image_sha256

GRACE_S = 3600.0


def file(inbox: Path) -> Path:
    """data/.extra.orphans.json: beside the inbox (inside, DVC would hash it with the images)."""
    return inbox.parent / f".{inbox.name}.orphans.json"


def collect(
    shared: SharedInbox,
    inbox: Path,
    records: dict[str, Record],
    unreadable: set[str],
    read_at: float,
) -> list[str]:
    """Delete the bytes no record of `records` (read after `read_at`, time.time()) names that
    this host saw unnamed GRACE_S before `read_at`, and whose record, read again just before,
    does not name them either (keys of images in `unreadable` excepted); the keys deleted."""
    named = {record.image for record in records.values()}
    unnamed = [
        key
        for key in shared.image_keys()
        if key not in named and image_sha256(key) not in unreadable
    ]
    first_seen = _first_seen(inbox, shared.location)
    since = {key: first_seen.get(key, read_at) for key in unnamed}
    old = [key for key, seen in since.items() if read_at - seen >= GRACE_S]
    gone = [key for key in old if shared.delete_unnamed(key)]
    kept = {key: seen for key, seen in since.items() if key not in old}
    write_json(file(inbox), {"store": shared.location, "first_seen": kept})
    return gone


def _first_seen(inbox: Path, location: str) -> dict[str, float]:
    """Key -> when this host first saw it unnamed in the store at `location` ({} when the file
    is missing, damaged or of another store: the grace period starts again, which deletes
    nothing early)."""
    try:
        raw = json_text.loads(read_regular(file(inbox)))
        if raw.get("store") != location:
            return {}
        return {str(key): float(seen) for key, seen in dict(raw["first_seen"]).items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}
