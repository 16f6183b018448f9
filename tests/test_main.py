"""`python -m mnist_pipeline` runs the CLI; importing `mnist_pipeline.__main__` does nothing."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_importing_main_runs_nothing() -> None:
    code = "import mnist_pipeline.__main__\nprint('still here')\n"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "still here\n"


def test_python_m_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert all(c in done.stdout for c in ("fetch", "train", "parity", "models", "predict"))
