"""What `mnist-pipeline data pending` shows beside the claims: the production model's digit
for each pending image, and with `--save DIR` copies of the images to look at (review.py)."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import replace
from pathlib import Path

import typer

from mnist_pipeline.cli.state import console
from mnist_pipeline.core.atomic import write_bytes
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.layout import Layout, within
from mnist_pipeline.core.params import Params
from mnist_pipeline.core.regular_file import read_regular
from mnist_pipeline.inbox import store
from mnist_pipeline.inbox.claims import Pending
from mnist_pipeline.inbox.shared import SharedInbox
from mnist_pipeline.registry import local_folder


def save_option(value: Path | None) -> Path | None:
    """--save's check when the command line is read: an existing DIR must be a folder."""
    if value is not None and value.exists() and not value.is_dir():
        raise typer.BadParameter(f"{value} is not a folder")
    return value


def view_folder(folder: Path, layout: Layout, shared: SharedInbox | None) -> Path:
    """`folder` unless copies written there would be taken for labelled or pending images: the
    inbox (they would train unreviewed), the pending area or a folder store (usage error)."""
    store = None if shared is None else local_folder(shared.location)  # None: on S3
    for place in [layout.inbox, layout.pending] + ([store] if store is not None else []):
        if within(folder, place):
            raise typer.BadParameter(
                f"{folder} is in {place}, where copies would be read as images to train on or "
                "review: save them elsewhere",
                param_hint="'--save'",
            )
    return folder


def saved(found: list[Pending], images: dict[str, bytes], folder: Path) -> list[Pending]:
    """`found` with each image written to `folder`/<sha256>.<format> and its path there (the
    bytes from `images`, else its file here); one whose bytes are not its SHA-256 is not copied
    and keeps its own path, with a warning (accept would refuse it; it still waits)."""
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for item in found:
        try:
            data = images.get(item.sha256) or read_regular(Path(item.path), store.MAX_FILE_BYTES)
        except FileNotFoundError:
            continue  # accepted or rejected since it was listed
        if hashlib.sha256(data).hexdigest() != item.sha256:
            console.print(
                f"warning: {item.path} is not the image it is named by (changed since it was "
                "sent), so not saved: reject it, or send the image again to repair it",
                markup=False,
            )
            copies.append(item)
            continue
        target = folder / f"{item.sha256}.{store.image_format(data)}"
        if _holds_other_bytes(target, data):
            console.print(
                f"warning: {target} exists and holds other bytes: not overwritten, so "
                f"{item.sha256[:12]} is not saved there",
                markup=False,
            )
            copies.append(item)
            continue
        write_bytes(target, data)
        copies.append(replace(item, path=target))
    return copies


def _holds_other_bytes(target: Path, data: bytes) -> bool:
    """Whether something of the user's is at `target` (a copy saved before holds `data`)."""
    try:
        return read_regular(target, len(data) + 1) != data
    except FileNotFoundError:
        return False
    except OSError:  # a folder, a pipe, a file too big: not ours to replace
        return True


def predictions(
    params: Params, layout: Layout, found: list[Pending], images: dict[str, bytes]
) -> dict[str, int]:
    """The registry's production model's digit per pending image (empty: no production, or
    one that cannot be read: a warning, never the listing's failure); `images` holds the bytes
    of those that are not files here (the store's queue)."""
    if not found:
        return {}
    try:
        return _production_digits(params, layout, found, images)
    except (PipelineError, OSError) as exc:  # a damaged production, a store that is down
        console.print(f"warning: no model column: {exc}", markup=False)
        return {}


def _production_digits(
    params: Params, layout: Layout, found: list[Pending], images: dict[str, bytes]
) -> dict[str, int]:
    from mnist_pipeline.pipeline.versions import ONNX_FILE, open_registry
    from mnist_pipeline.registry import PRODUCTION
    from mnist_pipeline.serving.predict import predict_files

    models = open_registry(params.registry, layout)
    if PRODUCTION not in models.aliases():
        return {}
    with tempfile.TemporaryDirectory() as scratch:
        files = []
        for item in found:
            if item.sha256 in images:
                copy = Path(scratch) / item.sha256
                copy.write_bytes(images[item.sha256])
                files.append(copy)
            else:
                files.append(Path(item.path))
        result = predict_files(models.fetch(PRODUCTION, ONNX_FILE), files)
    return {
        item.sha256: p.digit
        for item, p in zip(found, result.predictions, strict=True)
        if p.digit is not None
    }
