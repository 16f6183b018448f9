"""The shared inbox's keys and documents, read without the store (pure): which key holds
which image's bytes, what a label record and the pending count say (layout: shared.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mnist_pipeline.core import json_text
from mnist_pipeline.core.errors import DataError
from mnist_pipeline.inbox.store import check_label

IMAGES = "images/"
LABELS = "labels/"
SHA256 = re.compile(r"^[0-9a-f]{64}$")
_IMAGE_KEY = re.compile(r"^images/(?P<sha>[0-9a-f]{64})(\.[0-9a-f]{32})?$")
FORMAT = re.compile(r"^[a-z0-9]{1,8}$")


@dataclass(frozen=True)
class Record:
    """What the store says of one image: its label, file format and the key of its bytes."""

    label: int
    format: str
    image: str


def image_sha256(key: str) -> str | None:
    """The image SHA-256 an image key holds bytes of (None: not an image key)."""
    named = _IMAGE_KEY.fullmatch(key)
    return None if named is None else named["sha"]


def parse_record(location: str, key: str, data: bytes) -> Record:
    """The label record stored at `key` of the store at `location` (DataError when it is not
    one)."""
    try:
        raw = json_text.loads(data)
        fmt = str(raw["format"])
        digest = key[len(LABELS) : -len(".json")]
        image = str(raw.get("image", f"{IMAGES}{digest}"))
        if image_sha256(image) != digest:
            raise ValueError(f'its "image" {image[:100]!r} names no bytes of image {digest[:12]}')
        label = check_label(raw["label"])
        return Record(label, fmt if FORMAT.fullmatch(fmt) else "img", image)
    except (ValueError, KeyError, TypeError, DataError) as exc:
        raise DataError(
            f"shared inbox {location}: {key} is not a label record ({exc}): delete "
            "that object from the store, then add the image again"
        ) from None


def pending_document(data: bytes | None) -> tuple[int, list[dict]]:
    """pending.json's count and recent writes; an absent or unreadable one counts from 0."""
    try:
        document = json_text.loads(data) if data is not None else {}
        count = max(int(document.get("pending", 0)), 0)
        recent = [e for e in document.get("recent", []) if isinstance(e, dict) and "write" in e]
    except (ValueError, TypeError, AttributeError):
        return 0, []  # unreadable: counting starts again, as with the local count
    return count, recent
