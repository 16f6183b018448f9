"""A temporary folder named in this process's environment, for the processes it starts."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def env_folder(variable: str, prefix: str) -> Iterator[str]:
    """A fresh folder set as `variable` in this process's environment (which the processes
    started inside inherit), removed with its files afterwards, the variable as it was."""
    before = os.environ.get(variable)
    folder = tempfile.mkdtemp(prefix=prefix)
    os.environ[variable] = folder
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = before
        shutil.rmtree(folder, ignore_errors=True)
