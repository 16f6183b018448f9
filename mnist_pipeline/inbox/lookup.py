"""Images of the inbox named by a user: by SHA-256 prefix (8 or more hex digits), by path, or
by a copy outside the inbox (matched by content), and their removal (`mnist-pipeline data
remove`)."""

from __future__ import annotations

import re
from pathlib import Path

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.layout import resolved, within
from mnist_pipeline.data.manifest import file_sha256
from mnist_pipeline.inbox import store


def remove(inbox: Path, refs: list[str]) -> list[store.Entry]:
    """Delete the images named by SHA-256 prefix (at least 8 digits) or path; DataError for a
    reference that matches none or several (nothing is deleted then)."""
    with store.lock(inbox):  # resolved under the lock: another remove may take a file meanwhile
        chosen = resolve(inbox, refs)
        delete(chosen)
    return chosen


def resolve(inbox: Path, refs: list[str]) -> list[store.Entry]:
    """The entries named by SHA-256 prefix (at least 8 digits), by path, or by the path of a
    copy outside the inbox (matched by content); DataError for a reference that matches none
    or several."""
    known = store.entries(inbox)
    chosen = []
    for ref in refs:
        here = resolved(Path(ref))  # a link loop: as written, which names no entry
        key = ref.strip().lower()  # a prefix pasted with spaces, as pending.resolve_among takes
        matches = [
            e
            for e in known
            if (len(key) >= 8 and e.sha256.startswith(key)) or here == resolved(e.path)
        ]
        if not matches and Path(ref).is_file():  # the user's own copy of an image they added
            if within(Path(ref), inbox):  # never its content's labelled copy in its place
                raise DataError(
                    f"{ref}: not one of the inbox's images (those are {inbox}/<digit>/<file>; "
                    "ingest refuses the rest): nothing removed; delete it yourself"
                )
            digest = file_sha256(Path(ref))
            matches = [e for e in known if e.sha256 == digest]
            if not matches:
                raise DataError(f"{ref}: no image with its content ({digest[:12]}) in {inbox}")
        if len(matches) > 1 and len({e.sha256 for e in matches}) == 1:  # no prefix can choose
            paths = ", ".join(str(e.path) for e in matches)
            raise DataError(
                f"{ref!r}: one image is in {inbox} {len(matches)} times ({paths}): "
                "name one by its path"
            )
        if len(matches) != 1:
            raise unmatched(ref, "no image" if not matches else f"{len(matches)} images", inbox)
        if matches[0] not in chosen:  # named twice: removed (and reported) once
            chosen.append(matches[0])
    return chosen


def unmatched(ref: str, what: str, where: Path | str) -> DataError:
    """The error for a reference that matched `what` ("no image", "3 images") in `where`, saying
    why when the reference cannot be a SHA-256 prefix."""
    key = ref.strip()
    if re.fullmatch(r"[0-9a-fA-F]{1,7}", key):
        return DataError(f"{ref!r} is too short a SHA-256 prefix: use 8 or more hex digits")
    return DataError(f"{ref!r} matches {what} in {where} (use 8+ digits of the SHA-256)")


def delete(chosen: list[store.Entry]) -> None:
    """Delete these entries' files (the caller holds the inbox's lock)."""
    for entry in chosen:
        entry.path.unlink(missing_ok=True)
