"""The inbox as DVC tracks it: dvc.yaml's `inbox` stage (`mnist-pipeline data init`).

Git keeps no empty folder, so a fresh clone has no data/extra/. The `inbox` stage creates it
empty and otherwise leaves it as it is (a `persist` output), so plain `dvc repro` runs on any
clone while dvc.lock still records the inbox's content for `dvc push` / `dvc pull`. A clone whose
dvc.lock records images that are not here is refused: creating an empty inbox there would train
without them and record their loss.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.yaml_text import load_yaml_strict

LOCK_FILE = "dvc.lock"
STAGE = "inbox"


def _relative(project: Path, inbox: Path) -> str | None:
    """The inbox as dvc.lock names it: relative to the project, with forward slashes, links not
    followed (as DVC names `data/extra` when `data` links to another disk); None outside it."""
    try:
        return Path(os.path.abspath(inbox)).relative_to(os.path.abspath(project)).as_posix()
    except ValueError:  # an inbox outside the project: no stage of its dvc.lock names it
        return None


def recorded_files(project: Path, inbox: Path) -> int:
    """How many files dvc.lock records in the inbox (0 without a lock or a record of it)."""
    lock = project / LOCK_FILE
    if not lock.is_file():
        return 0
    where = _relative(project, inbox)
    if where is None:
        return 0
    try:  # as DVC reads it (YAML 1.2); nesting too deep is a YAMLError too
        stages = load_yaml_strict(lock.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read {lock}: {exc}") from exc
    try:
        stage = (stages.get("stages") or {}).get(STAGE) or {}
        outs = [out for out in stage.get("outs") or [] if out.get("path") == where]
        return sum(int(out.get("nfiles", 0)) for out in outs)
    except (AttributeError, TypeError, ValueError, OverflowError) as exc:  # not as DVC writes
        raise DataError(
            f"cannot read {lock}: its {STAGE!r} stage is not as DVC writes it ({exc})"
        ) from None


def check_inbox(project: Path, inbox: Path) -> None:
    """DataError when the inbox is not a folder, or is missing while dvc.lock records images in
    it (a clone before `dvc pull`): reading it as empty would lose them."""
    if inbox.is_dir():
        return
    if inbox.exists():
        raise DataError(f"the inbox {inbox} is not a folder")
    if inbox.is_symlink():
        raise DataError(f"the inbox {inbox} is a link to {inbox.readlink()}, which is missing")
    if count := recorded_files(project, inbox):
        raise DataError(
            f"the inbox {inbox} is missing but {LOCK_FILE} records {count} file(s) in it: "
            f"run `dvc pull {_relative(project, inbox)}` first"
        )


def ensure_inbox(project: Path, inbox: Path) -> bool:
    """Create the inbox empty if it is absent; True if created (check_inbox's errors first:
    nothing is created)."""
    check_inbox(project, inbox)
    if inbox.is_dir():
        return False
    inbox.mkdir(parents=True)
    return True
