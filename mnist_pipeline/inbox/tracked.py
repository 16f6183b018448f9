"""The inbox as DVC tracks it: dvc.yaml's `inbox` stage (`mnist-pipeline data init`).

Git keeps no empty folder, so a fresh clone has no data/extra/. The `inbox` stage creates it
empty and otherwise leaves it as it is (a `persist` output), so plain `dvc repro` runs on any
clone while dvc.lock still records the inbox's content for `dvc push` / `dvc pull`. A clone whose
dvc.lock records images that are not here is refused: creating an empty inbox there would train
without them and record their loss.

The commands that change the inbox claim it in DVC's lock of paths in use meanwhile
(`changing_inbox`): `dvc repro` hashes data/extra for dvc.lock only after the ingest stage has
read it, so an image added or removed in between would be recorded as ingested.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import yaml

from mnist_pipeline.core.errors import DataError

LOCK_FILE = "dvc.lock"
STAGE = "inbox"


def _relative(project: Path, inbox: Path) -> str:
    """The inbox as dvc.lock names it: relative to the project, with forward slashes."""
    return inbox.resolve().relative_to(project.resolve()).as_posix()


def recorded_files(project: Path, inbox: Path) -> int:
    """How many files dvc.lock records in the inbox (0 without a lock or a record of it)."""
    lock = project / LOCK_FILE
    if not lock.is_file():
        return 0
    try:
        stages = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read {lock}: {exc}") from exc
    stage = (stages.get("stages") or {}).get(STAGE) or {}
    where = _relative(project, inbox)
    return sum(int(out.get("nfiles", 0)) for out in stage.get("outs", []) if out["path"] == where)


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


@contextmanager
def changing_inbox(project: Path, inbox: Path) -> Iterator[None]:
    """Around a change to the inbox: check_inbox, with the inbox claimed for writing in DVC's
    table of paths in use (.dvc/tmp/rwlock) when `project` is in a DVC repository. A DVC stage
    holds its claim on its dependencies from before its command until dvc.lock records them,
    so while the ingest stage runs, the change is refused (DataError naming the command) and
    nothing changes; without the claim the image would be recorded as ingested."""
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.lock import LockError
    from dvc.repo import Repo
    from dvc.rwlock import rwlock

    try:
        repo = Repo(str(project))
    except NotDvcRepoError:
        check_inbox(project, inbox)
        yield
        return
    except DvcException as exc:
        raise DataError(f"cannot open the DVC repository at {project}: {exc}") from exc
    with ExitStack() as stack:
        stack.callback(repo.close)
        root = os.path.realpath(repo.root_dir)  # the inbox as DVC's stages name it
        claimed = os.path.join(repo.root_dir, os.path.relpath(os.path.realpath(inbox), root))
        hardlink = repo.config["core"].get("hardlink_lock", False)
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        try:
            stack.enter_context(rwlock(repo.tmp_dir, repo.fs, command, [], [claimed], hardlink))
        except LockError as exc:
            raise DataError(
                f"{inbox} is in use by a DVC command; it cannot change until that ends, or "
                f"dvc.lock would record images its ingest stage never read. DVC says: {exc}"
            ) from None
        check_inbox(project, inbox)
        yield
