"""Errors that the CLI turns into one clear message and an exit code (no traceback)."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class PipelineError(Exception):
    """A failure the user can act on; `exit_code` is what the CLI exits with."""

    exit_code = 1


EXIT_IO = 74  # sysexits.h EX_IOERR: an operating-system error reading or writing a file


def describe_os_error(exc: OSError) -> str:
    """One line: the path (or paths) and the OS's reason, e.g. 'models/x: Permission denied'; a
    file where a folder is needed is named as such (not 'File exists' or 'Not a directory')."""
    blocker = _file_in_the_way(exc)
    if blocker is not None:
        asked = os.fsdecode(exc.filename)
        wanted = "" if blocker == Path(asked) else f" (on the way to {asked})"
        return f"{blocker}: a file, where a folder is needed{wanted}"
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    reason = exc.strerror or str(exc)
    return f"{paths}: {reason}" if paths else reason


def _file_in_the_way(exc: OSError) -> Path | None:
    """The file that made creating a folder fail (mkdir's EEXIST on a file, or ENOTDIR on a
    path through one), or None."""
    if exc.errno not in (errno.EEXIST, errno.ENOTDIR) or exc.filename2 is not None:
        return None
    if not isinstance(exc.filename, (str, bytes, os.PathLike)):  # None, or a descriptor
        return None
    path = Path(os.fsdecode(exc.filename))
    if exc.errno == errno.EEXIST:
        return path if path.exists() and not path.is_dir() else None
    return next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), None)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Around a script's main (`python -m flows.retrain`): a PipelineError or OSError ends it
    with one `error: ...` line on stderr and its exit code, as the CLI does, no traceback."""
    try:
        yield
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except OSError as exc:
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        sys.exit(EXIT_IO)


class ParamsError(PipelineError):
    """params.yaml (or an override) is missing, malformed or violates a rule."""

    exit_code = 2


class DataError(PipelineError):
    """The dataset could not be fetched, verified or parsed."""


class TrainingError(PipelineError):
    """Training cannot go on (its loss stopped being a number): nothing is written."""


class GateError(PipelineError):
    """A model did not meet a quality bar (accuracy gate, ONNX parity)."""


class RegistryError(PipelineError):
    """A registry operation was refused (bad name, unknown version, tampered file...)."""


class StoreError(RegistryError):
    """The registry's store did not answer or refused a request (object storage); unlike a
    damaged version, trying again later may succeed. `whole_store`: not about one object (no
    answer, credentials refused, no such bucket), so no other read would fare better."""

    def __init__(self, message: str, whole_store: bool = False) -> None:
        super().__init__(message)
        self.whole_store = whole_store


class StageFailed(PipelineError):
    """A pipeline stage failed inside a flow; the message names the stage, then the cause."""

    stage = ""

    @classmethod
    def of(cls, stage: str, cause: BaseException) -> StageFailed:
        """The failure of `stage` with `cause` (same exit code as the cause; an OSError's is
        EXIT_IO, its message the path and the reason, as the CLI says it)."""
        if isinstance(cause, OSError):
            error = cls(f"stage {stage} failed: {describe_os_error(cause)}")
            error.exit_code = EXIT_IO
        else:
            error = cls(f"stage {stage} failed: {type(cause).__name__}: {cause}")
            error.exit_code = getattr(cause, "exit_code", 1)
        error.stage = stage
        return error
