"""Bytes in the shared inbox that no label record names, removed after a grace period.

A publication writes its image's bytes, then the record naming them (shared.py); a publisher
that dies in between leaves bytes no record will ever name. Each sync lists them and notes when
this host first saw each one unnamed (data/.extra.orphans.json, this host's clock only); bytes
still unnamed GRACE_S later are deleted. A publication that stalled longer than that between its
two writes finds its bytes gone after writing its record and writes them again (`publish`), so
a record never points at nothing. Bytes of an image whose record cannot be read are kept.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from mnist_pipeline.core.atomic import write_json
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
    now: float | None = None,
) -> list[str]:
    """Delete the bytes no record of `records` names that this host has seen unnamed for
    GRACE_S (keys of images in `unreadable` excepted); the keys deleted."""
    now = time.time() if now is None else now
    named = {record.image for record in records.values()}
    unnamed = [
        key
        for key in shared.image_keys()
        if key not in named and image_sha256(key) not in unreadable
    ]
    first_seen = _first_seen(inbox)
    since = {key: first_seen.get(key, now) for key in unnamed}
    gone = [key for key, seen in since.items() if now - seen >= GRACE_S]
    for key in gone:
        shared.delete_image(key)
    write_json(file(inbox), {key: seen for key, seen in since.items() if key not in gone})
    return gone


def _first_seen(inbox: Path) -> dict[str, float]:
    """Key -> when this host first saw it unnamed ({} when the file is missing or damaged:
    the grace period starts again, which deletes nothing early)."""
    try:
        raw = json.loads(file(inbox).read_text(encoding="utf-8"))
        return {str(key): float(seen) for key, seen in dict(raw).items()}
    except (OSError, ValueError, TypeError):
        return {}
