"""Isolated run folders (runs/<name>/): a private snapshot of the dataset, and pruning."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from filelock import FileLock, Timeout

from mnist_pipeline.core.errors import DataError, PipelineError, describe_os_error
from mnist_pipeline.core.layout import RUNS_DIR
from mnist_pipeline.data.manifest import file_sha256


def snapshot_dataset(shared: Path, target: Path, sha256: Mapping[str, str]) -> None:
    """Hard-link (or copy) the verified files of `shared` into `target`, checking each hash.

    The run then reads only its own snapshot: whatever later happens to the shared folder (a
    `dvc repro` deleting and recreating its outputs, a fetch of other data) cannot change or
    remove the files under a running run.
    """
    target.mkdir(parents=True, exist_ok=True)
    for name, expected in sha256.items():
        dest = target / name
        if dest.exists():  # a retried flow run's own snapshot: kept if whole, else made again
            if file_sha256(dest) == expected:
                continue
            dest.unlink()
        try:
            os.link(shared / name, dest)
        except FileNotFoundError:
            raise DataError(f"missing dataset file {shared / name}: run `fetch`") from None
        except OSError:  # another filesystem, or no hard links: copy
            shutil.copyfile(shared / name, dest)
        if file_sha256(dest) != expected:
            raise DataError(f"{shared / name} changed while it was being snapshotted: fetch again")


def fetches_into_project(sha256: Mapping[str, str], project: Path) -> bool:
    """Whether a run whose dataset is `sha256` fetches into the project's data/mnist: only when
    that is the dataset the project's own params file (DVC's fetch stage) names there. A run of
    other data (a `data.sha256` override) fetches into its own folder, so that it never replaces
    the project's dataset under `dvc repro` and the other runs; so does a run of a project whose
    params file cannot be read."""
    from mnist_pipeline.core.params import load_params  # pydantic: only where runs start

    try:
        # no environment overrides: only data.sha256 matters, which none of them sets
        project_sha256 = load_params(project / "params.yaml", environ={}).data.sha256
        return dict(project_sha256) == dict(sha256)
    except (PipelineError, OSError):
        return False


def snapshot_fetching_again(
    shared: Path,
    target: Path,
    sha256: Mapping[str, str],
    fetch: Callable[[], object],
    tries: int = 3,
) -> None:
    """`snapshot_dataset`, calling `fetch` and trying again (up to `tries` in all) when the
    shared folder lacks a file or one changed under it: a `dvc repro --force` removes
    data/mnist, its fetch stage's output, before fetching it again."""
    for attempt in range(tries):
        try:
            snapshot_dataset(shared, target, sha256)
            return
        except DataError as exc:
            if attempt + 1 == tries:
                raise
            logger.warning("%s; fetching again", exc)
            fetch()


logger = logging.getLogger(__name__)
RUNNING_LOCK = ".running.lock"  # held by the run working in the folder (`running`)


def running(folder: Path) -> FileLock:
    """Hold `folder`'s run lock until the returned lock is released or this process ends (an
    OS file lock: a crashed run's folder is prunable again at once)."""
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(folder / RUNNING_LOCK)
        try:
            lock.acquire()  # filelock refuses a lock file deleted while it waited (FileNotFound)
        except FileNotFoundError:  # a prune deleted the folder while this run waited on it
            continue
        return lock


def prune(project: Path, keep: int, current: Path | None = None) -> list[Path]:
    """Delete all but the `keep` newest run folders (by modification time); never `current`,
    nor the folder of a run still going (its run lock held, whatever its age): each folder is
    deleted while prune holds its run lock, so no run can start in it meanwhile. A folder this
    process cannot lock (another user's, or one another prune just deleted) is left alone.

    Returns the folders deleted.
    """
    folder = project / RUNS_DIR
    if not folder.is_dir():
        return []
    ages = {}
    for path in folder.iterdir():
        try:
            if path.is_dir() and path != current:
                ages[path] = path.stat().st_mtime
        except FileNotFoundError:  # deleted by another prune meanwhile
            continue
    runs = sorted(ages, key=ages.__getitem__, reverse=True)
    doomed = []
    for path in runs[max(keep - (current is not None), 0) :]:
        try:
            with FileLock(path / RUNNING_LOCK, timeout=0):
                shutil.rmtree(path, ignore_errors=True)
        except Timeout:
            continue  # a run still going
        except OSError as exc:  # not ours to lock, or gone meanwhile: never fails the run
            logger.warning("not pruning %s: %s", path, describe_os_error(exc))
            continue
        doomed.append(path)
    return doomed
