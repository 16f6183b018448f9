"""A verified on-disk cache of the robustness set (rendering it is most of `evaluate`'s work).

The set depends only on the test digits and labels, per_transform, the seed and the code that
draws and preprocesses it (and Pillow and numpy, which do the drawing), never on the model. Its
key is the SHA-256 of all of these (the code as the sources of the renderer's modules and of
every project module they import, as this process loaded them, plus the Pillow, its JPEG
library, numpy and scipy versions); the file `<key>.npz` holds each transformation's digits and
labels, the key, and the SHA-256 of the arrays. On read the key, the transformations, the shapes
and the SHA-256 are checked: a file that is corrupt, truncated or stale is rendered again and
replaced. The checksum sits in the same file, so it detects damage, not a deliberate forgery by
someone who can write the cache folder (who can edit the code as well). Writes are atomic (temp
file + rename), so concurrent runs at worst render the same set twice. Old keys' files are not
removed: the folder is safe to delete at any time.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import PIL
import scipy
from PIL import features

from mnist_pipeline.core.atomic import write_with
from mnist_pipeline.core.regular_file import open_regular
from mnist_pipeline.evaluation import robustness
from mnist_pipeline.evaluation.robustness import TRANSFORMS, robustness_set

Sets = dict[str, tuple[np.ndarray, np.ndarray]]
FORMAT = b"robustness-cache 1"


def code_sha256() -> str:
    """SHA-256 of the renderer's sources as this process loaded them (not as they are on disk
    now: a checkout switched under a run must not file its rendering under the new code) and the
    Pillow, JPEG library, numpy and scipy (preprocessing's connected components) versions."""
    digest = hashlib.sha256(FORMAT)
    digest.update(robustness.LOADED_SOURCES_SHA256.encode())
    libraries = f"Pillow {PIL.__version__} jpeg {features.version('jpg')} numpy {np.__version__}"
    libraries += f" scipy {scipy.__version__}"
    digest.update(libraries.encode())
    return digest.hexdigest()


def cache_key(images: np.ndarray, labels: np.ndarray, per_transform: int, seed: int) -> str:
    """SHA-256 of everything the set depends on."""
    digest = hashlib.sha256(code_sha256().encode())
    for array in (np.ascontiguousarray(images), np.ascontiguousarray(labels)):
        digest.update(f"{array.dtype.str} {array.shape}".encode())
        digest.update(array.tobytes())
    digest.update(f"per_transform {per_transform} seed {seed}".encode())
    return digest.hexdigest()


def sets_sha256(sets: Sets) -> str:
    """SHA-256 of the arrays in TRANSFORMS order (what a cache file must hold)."""
    digest = hashlib.sha256()
    for name in TRANSFORMS:
        for array in sets[name]:
            digest.update(f"{name} {array.dtype.str} {array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def read(path: Path, key: str, count: int) -> Sets | None:
    """The sets stored at `path`, or None unless the file is whole and made for `key`."""
    try:
        opened, _ = open_regular(path)  # a pipe put in its place is a miss, not a hang
        with opened, np.load(opened, allow_pickle=False) as stored:
            if str(stored["key"]) != key:
                return None
            sets = {n: (stored[f"{n}.digits"], stored[f"{n}.labels"]) for n in TRANSFORMS}
            checksum = str(stored["sha256"])
    except Exception:  # noqa: BLE001 - anything unreadable is a cache miss, never a failure
        return None
    for digits, labels in sets.values():
        if digits.shape != (count, 28, 28) or digits.dtype != np.float32:
            return None
        if labels.shape != (count,) or labels.dtype != np.int64:
            return None
    return sets if sets_sha256(sets) == checksum else None


def write(path: Path, key: str, sets: Sets) -> None:
    """Atomically store `sets` at `path` under `key`."""
    arrays: dict[str, np.ndarray] = {"key": np.array(key), "sha256": np.array(sets_sha256(sets))}
    for name, (digits, labels) in sets.items():
        arrays[f"{name}.digits"], arrays[f"{name}.labels"] = digits, labels

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.savez would append .npz to a name
            np.savez(handle, **arrays)

    path.parent.mkdir(parents=True, exist_ok=True)
    write_with(path, save)


def cached_robustness_set(
    images: np.ndarray, labels: np.ndarray, per_transform: int, folder: Path | None, seed: int = 0
) -> Sets:
    """`robustness_set(images, labels, per_transform, seed)`, read from `folder` when a verified
    copy is there, else rendered and stored there (no caching when folder is None)."""
    if folder is None:
        return robustness_set(images, labels, per_transform, seed)
    key = cache_key(images, labels, per_transform, seed)
    path = folder / f"{key}.npz"
    sets = read(path, key, min(per_transform, len(labels)))
    if sets is None:
        sets = robustness_set(images, labels, per_transform, seed)
        try:
            write(path, key, sets)
        except OSError as exc:  # a cache only saves time: the stage goes on without it
            print(f"warning: cannot cache the robustness set in {folder}: {exc}", file=sys.stderr)
    return sets
