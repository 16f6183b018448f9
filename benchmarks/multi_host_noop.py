"""The no-op scheduled-run latency on the multi-host setup (tests/test_multi_host.py).

    sudo .venv/bin/python -m benchmarks.multi_host_noop

Runs that one test (root: network namespaces; real MNIST in ../shared/mnist, which the test
reads; about 7 minutes on 2 cores) with
MULTI_HOST_FIGURES set: near its end the client host starts three runs, one after another,
whose inputs are already registered (so each finds itself up to date and trains nothing), and
the test writes each run's trigger-to-end time as Prefect records it (expected start, or
creation, to end time, read over the API from the client host). Prints the median, the values
and the CPU. The test itself asserts only what the runs did, never how long they took.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.machine import lscpu_model

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()  # no options: --help, and a refusal of anything else
    with tempfile.TemporaryDirectory() as folder:
        figures = Path(folder) / "figures.json"
        env = {**os.environ, "MULTI_HOST_FIGURES": str(figures), "PYTHONPATH": str(ROOT)}
        test = [sys.executable, "-m", "pytest", "-x", "-q", "-rs", "tests/test_multi_host.py"]
        done = subprocess.run(test, cwd=ROOT, env=env)
        if done.returncode != 0:
            sys.exit(f"tests/test_multi_host.py failed (exit {done.returncode}): no figures")
        if not figures.is_file():  # skipped: pytest's line above says why (no ../shared/mnist...)
            sys.exit("tests/test_multi_host.py was skipped (the reason is above): no figures")
        seconds = json.loads(figures.read_text())["noop_seconds"]
    print(
        f"no-op run trigger -> Completed: median {statistics.median(seconds):.2f} s "
        f"(values: {', '.join(f'{s:.2f}' for s in seconds)})"
    )
    print(f"CPU: {lscpu_model()}; {datetime.date.today().isoformat()}")


if __name__ == "__main__":
    main()
