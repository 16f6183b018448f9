"""One drawing in several files: images that preprocess to the same 28x28 pixels.

Ingest takes such files for one digit, and refuses them all when their labels differ (a PNG
re-saved as RGBA, or as a palette image, has other bytes and so another SHA-256, but the same
pixels). An accept checks for that first, so a reviewed label never knocks an image already in
the inbox out of training.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from mnist_pipeline.core.regular_file import read_regular
from mnist_pipeline.data.preprocess import MAX_PIXELS, ImageError, preprocess_bytes
from mnist_pipeline.inbox import store


def to_uint8(digit: np.ndarray) -> np.ndarray:
    """A preprocessed float digit in [0, 1] -> uint8 0-255 (round half up), MNIST's storage."""
    return np.floor(np.clip(digit, 0, 1) * 255 + 0.5).astype(np.uint8)


def to_pixels(data: bytes, source: str) -> np.ndarray:
    """Image bytes -> uint8 [28, 28] as `predict` preprocesses them; ImageError saying why not."""
    try:
        return to_uint8(preprocess_bytes(data, source, MAX_PIXELS))
    except ImageError as exc:  # the message starts with the source; the report keys by it
        raise ImageError(str(exc).removeprefix(f"{source}: ")) from None


class Drawings:
    """The inbox's images by their pixels as ingest reads them (each file preprocessed once, about
    1 ms), for checks of images about to join it; `check` records each image it lets through.
    Inbox files that cannot be read or decoded are ingest's to report, not these checks'."""

    def __init__(self, inbox: Path, present: list[store.Entry] | None = None) -> None:
        self._seen: dict[bytes, list[tuple[int, str, str]]] = {}
        for entry in store.entries(inbox) if present is None else present:
            try:
                pixels = to_pixels(read_regular(entry.path, store.MAX_FILE_BYTES), "")
            except (OSError, ImageError):
                continue
            self._seen.setdefault(pixels.tobytes(), []).append(
                (entry.label, str(entry.path), entry.sha256)
            )

    def check(self, data: bytes, name: str, digit: int, refused: str) -> None:
        """LabelConflict (ending in `refused`) when `data` has the pixels of an image already
        here labelled otherwise: ingest would drop both. The same file (its SHA-256) is left to
        the inbox's own check, which names it as that."""
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            key = to_pixels(data, name).tobytes()
        except ImageError:  # not an image the inbox takes: its own check says why
            return
        for label, where, other in self._seen.get(key, []):
            if label != digit and other != sha256:
                raise store.LabelConflict(
                    f"{name}: the same drawing as {where} (labelled {label}), by the pixels "
                    f"ingest reads, not as {digit}: ingest would drop both; {refused}"
                )
        self._seen.setdefault(key, []).append((digit, name, sha256))


def check_labels_agree(
    inbox: Path, accepting: list[tuple[bytes, str, int]], present: list[store.Entry] | None = None
) -> None:
    """LabelConflict when an image about to be accepted, (bytes, name, digit), has the pixels
    of an inbox image (`present`: the caller's `store.entries(inbox)`), or of another one being
    accepted, labelled otherwise."""
    if not accepting:
        return
    drawings = Drawings(inbox, present)
    for data, name, digit in accepting:
        drawings.check(
            data, name, digit, "reject one of them, or remove the other first; nothing was accepted"
        )
