"""The inbox claimed from DVC while a command changes it.

`dvc repro` hashes data/extra for dvc.lock only after the ingest stage has read it: an image
added or removed in between would be recorded as ingested although ingest never saw it (or the
other way round). DVC guards its own commands against each other with two locks in .dvc/tmp:
the repository lock (`lock`), held by `dvc repro` except while a stage's command runs, and a
table of paths in use (`rwlock`), where each stage claims its dependencies (read) and outputs
(write) from before its command until dvc.lock records them. `changing_inbox` takes the first
for a moment and, under it, claims the inbox for writing in the second for as long as the
change lasts, so no DVC stage reads the inbox meanwhile, and a change while one does is refused.

Each command claims a path of its own inside the inbox: DVC sees it overlap data/extra, while
two of this project's commands (which wait for each other on the inbox's own lock) do not
refuse each other.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.inbox.tracked import check_inbox


def claimed_paths(root_dir: str, inbox: Path) -> list[str]:
    """The names DVC's stages may give the inbox, each with this process's own child path:
    DVC names outputs from the repository root as it found it (the working directory's real
    path), without resolving a link at the inbox itself."""
    inside = os.path.relpath(os.path.abspath(inbox), os.path.abspath(root_dir))
    names = {
        os.path.join(root_dir, inside),
        os.path.join(os.path.realpath(root_dir), inside),
        os.path.realpath(inbox),
    }
    return [os.path.join(os.path.normpath(name), f".claim-{os.getpid()}") for name in sorted(names)]


@contextmanager
def changing_inbox(project: Path, inbox: Path) -> Iterator[None]:
    """Around a change to the inbox: check_inbox, with the inbox claimed from DVC when `project`
    is in a DVC repository (nothing to claim otherwise). DataError, changing nothing, when a DVC
    command holds the repository past DVC's own few seconds of retries, or a stage reads or
    writes the inbox: the message names it."""
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
        hardlink = repo.config["core"].get("hardlink_lock", False)
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        paths = claimed_paths(repo.root_dir, inbox)
        try:
            with repo.lock:  # not between two stages of a `dvc repro`
                claim = rwlock(repo.tmp_dir, repo.fs, command, [], paths, hardlink)
                stack.enter_context(claim)
        except LockError as exc:
            raise DataError(
                f"{inbox} cannot change while a DVC command uses it (dvc.lock would record "
                f"images its ingest stage never read); try again when it has finished. "
                f"DVC says: {exc}"
            ) from None
        except DvcException as exc:  # a damaged .dvc/tmp/rwlock, say
            raise DataError(f"cannot claim {inbox} from DVC: {exc}") from None
        check_inbox(project, inbox)
        yield
