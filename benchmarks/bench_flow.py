"""Prefect overhead of the retrain flow on real MNIST: process wall time minus task compute time.

Each run is a fresh `python` process calling `flows.retrain.retrain` (1 epoch, gate 0.9, force:
the overhead does not depend on the epoch count) in a scratch project folder. Two kinds of run
alternate, side by side: with Prefect's temporary local server (no PREFECT_API_URL: started and
stopped by the run) and against a running `prefect server start` on 127.0.0.1. The first run of
each kind uses an empty PREFECT_HOME ("cold"); the others reuse it ("warm"). The overhead is split
into the import of the stage libraries (torch, onnx, matplotlib: a CLI run pays it too, timed
first in the same process) and the rest, Prefect's share (its import, the temporary server's
start and stop, task and state bookkeeping).

    python benchmarks/bench_flow.py --runs 4 --mirror ../shared/mnist
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import cpu_name
from tests.process_helpers import prefect_server

REPO = Path(__file__).resolve().parents[1]
CALL = (
    "import json, sys, time; t = time.perf_counter(); "
    "import mnist_pipeline.evaluate, mnist_pipeline.export, mnist_pipeline.fetch, "
    "mnist_pipeline.parity, mnist_pipeline.train, mnist_pipeline.registry; "
    "libs = time.perf_counter() - t; from flows.retrain import retrain; "
    "r = retrain(epochs=1, min_accuracy=0.9, force=True, workdir=sys.argv[1]); "
    "print('RESULT ' + json.dumps({**r, 'libs': libs}))"
)


def one_run(workdir: Path, env: dict[str, str]) -> dict[str, float]:
    """Run the flow once in a new process; returns wall, tasks and overhead seconds."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CALL, str(workdir)], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"flow failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    tasks = sum(result["seconds"]["tasks"].values())
    return {
        "wall": wall,
        "tasks": tasks,
        "libs": result["libs"],
        "overhead": wall - tasks,
        "prefect": wall - tasks - result["libs"],
        "in_flow": result["seconds"]["overhead"],
    }


def summary(kind: str, runs: list[dict[str, float]]) -> str:
    warm = runs[1:] or runs
    return (
        f"{kind}: median warm overhead {statistics.median(r['overhead'] for r in warm):.1f} s, "
        f"of which Prefect {statistics.median(r['prefect'] for r in warm):.1f} s "
        f"(cold: {runs[0]['overhead']:.1f} s, Prefect {runs[0]['prefect']:.1f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="per kind: 1 cold + N-1 warm runs")
    parser.add_argument("--mirror", default=os.environ.get("MNIST_MIRROR", "../shared/mnist"))
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-flow-"))
    mirror = {"MNIST_MIRROR": str(Path(args.mirror).resolve())}
    temporary = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | mirror
    temporary |= {"PREFECT_HOME": str(scratch / "home-temporary")}
    temporary |= {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    runs: dict[str, list[dict[str, float]]] = {"temporary server": [], "running server": []}
    try:
        workdir = scratch / "project"
        workdir.mkdir()
        shutil.copy(REPO / "params.yaml", workdir / "params.yaml")
        with prefect_server(scratch, **mirror) as server:
            for _ in range(args.runs):
                runs["temporary server"].append(one_run(workdir, temporary))
                runs["running server"].append(one_run(workdir, server))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for kind, done in runs.items():
        for i, run in enumerate(done):
            print(
                f"{kind} run {i + 1} ({'cold' if i == 0 else 'warm'}): wall {run['wall']:.1f} s, "
                f"tasks {run['tasks']:.1f} s, overhead {run['overhead']:.1f} s = "
                f"torch/onnx/matplotlib imports {run['libs']:.1f} s + Prefect "
                f"{run['prefect']:.1f} s (inside the flow {run['in_flow']:.2f} s)"
            )
    for kind, done in runs.items():
        print(summary(kind, done))
    print(f"CPU: {cpu_name()}; targets: Prefect <= 10 s (temporary), <= 2 s (running server)")


if __name__ == "__main__":
    main()
