"""Canary step-backs shared by the worker processes of one server (`serve --workers N`).

Each worker judges the canary on its own share of the traffic. The first to step a version
back records it in the server's run folder (made by the supervising process as it starts,
removed as it stops, so a restarted server starts afresh, as a single process does), by a
create-only link of `canary-v<N>.json`: of workers judging one version at once, one records it
and the others adopt its verdict, so a step back is logged, counted and sent as an event once.
The others read the folder at each check of the challenger alias (`serve.reload_interval_s`) and
step back too; a worker uvicorn starts in place of one that died reads it as it starts. A folder
that cannot be read or written leaves each worker judging alone (a warning says so).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from mnist_pipeline.core import json_text
from mnist_pipeline.core.atomic import json_bytes, temp_beside
from mnist_pipeline.core.regular_file import read_regular
from mnist_pipeline.serving.env_folder import env_folder

ENV_FOLDER = "MNIST_SERVE_RUN_DIR"  # the run folder, in each worker's environment
MAX_RECORD_BYTES = 64 * 1024
_RECORD = re.compile(r"canary-v([1-9][0-9]*)\.json")
logger = logging.getLogger("mnist_pipeline.serve")


@contextmanager
def run_folder() -> Iterator[str | None]:
    """A fresh folder for one server's workers (set as ENV_FOLDER in this process's environment,
    which they inherit), removed with its files afterwards; None, with a warning, when no
    temporary folder can be made (each worker then judges alone)."""
    with ExitStack() as stack:
        try:
            folder: str | None = stack.enter_context(env_folder(ENV_FOLDER, "mnist-serve-run-"))
        except OSError as exc:
            logger.warning("canary: step backs not shared between the workers: %s", exc)
            folder = None
        yield folder


class SharedStepBacks:
    """The versions stepped back by any worker of this server, kept in `folder`."""

    def __init__(self, folder: Path, pid: int | None = None) -> None:
        self.folder = folder
        self.pid = os.getpid() if pid is None else pid  # the worker its records name
        self._warned: dict[str, str] = {}  # what -> the last problem logged (once each)

    @classmethod
    def from_env(cls) -> SharedStepBacks | None:
        """The server's shared record, when this process is one of several workers."""
        folder = os.environ.get(ENV_FOLDER)
        return None if not folder else cls(Path(folder))

    def record(self, version: int, why: str) -> str | None:
        """Record `version` as stepped back for `why`; None when this process is the first,
        else the verdict of the worker that was (this one's is dropped). A record that cannot
        be written is logged and leaves this verdict this worker's own (None)."""
        target = self.folder / f"canary-v{version}.json"
        try:
            fd, temp = temp_beside(target, ".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(json_bytes({"version": version, "why": why, "pid": self.pid}))
                os.link(temp, target)  # create-only: refused when a worker recorded it first
            finally:
                temp.unlink(missing_ok=True)
        except FileExistsError:  # an unreadable record (None): this verdict is still told
            return self._why(target)
        except OSError as exc:
            self._warn(
                target.name, f"canary v{version}'s step back not shared with the others: {exc}"
            )
        return None

    def read(self, others: bool = False) -> dict[int, str]:
        """Every version a worker stepped back -> why (naming that worker's pid), or with
        `others` those of the other workers only; {} when the folder cannot be read (logged
        once)."""
        try:
            names = os.listdir(self.folder)
        except OSError as exc:
            self._warn("folder", f"step backs of the other workers not read: {exc}")
            return {}
        found = {}
        for name in names:
            if not (match := _RECORD.fullmatch(name)):
                continue
            record = self._record(self.folder / name)
            if record is not None and not (others and record[1] == self.pid):
                found[int(match.group(1))] = self._shown(*record)
        return found

    def _why(self, path: Path) -> str | None:
        """A record's verdict, naming the worker that made it (None: unreadable, logged)."""
        record = self._record(path)
        return None if record is None else self._shown(*record)

    def _record(self, path: Path) -> tuple[str, int] | None:
        """A record's (why, pid); None when it cannot be read (logged)."""
        try:
            content = json_text.loads(read_regular(path, MAX_RECORD_BYTES))
            why, pid = content["why"], content["pid"]
            if not isinstance(why, str) or type(pid) is not int:
                raise ValueError("not a step back record")
        except (OSError, ValueError, TypeError, KeyError) as exc:
            self._warn(path.name, f"step back record {path} not readable: {exc}")
            return None
        return why, pid

    def _shown(self, why: str, pid: int) -> str:
        """A verdict as this worker shows it: another worker's names that worker."""
        return why if pid == self.pid else f"{why} (judged by worker pid {pid})"

    def _warn(self, what: str, problem: str) -> None:
        """Log `problem` with `what` (a file, or the folder) unless it was the last logged."""
        if self._warned.get(what) != problem:
            logger.warning("canary: %s", problem)
        self._warned[what] = problem
