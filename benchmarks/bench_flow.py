"""Prefect overhead of the retrain flow on real MNIST, against the same work without Prefect.

Three kinds of process alternate, side by side, in a scratch project folder (1 epoch, gate 0.9,
force: the overhead does not depend on the epoch count):

- plain: the stages called in order through `stages.run`, as the CLI does (no Prefect at all);
- running server: `flows.retrain.retrain` against a `prefect server start` on 127.0.0.1;
- temporary server: the same flow without PREFECT_API_URL (Prefect starts and stops a server).

Each process's "rest" is its wall time minus the seconds its stages computed (timed inside the
stages, the same way for all three). The Prefect overhead of a flow kind is its median rest minus
the plain process's median rest: both pay Python's start, the torch/onnx/matplotlib imports and the
interpreter's teardown after training (over a second), so only what Prefect adds remains. The
first flow run of each kind is reported apart ("cold"; the temporary server's starts from an
empty PREFECT_HOME, the running server's from that server's home, which it already filled);
medians are over the others.
For scale, a bare flow process (six no-op tasks, nothing imported but Prefect) is timed against
the running server too, split into import, engine start, body and end (the end includes joining
the flow-run heartbeat thread, which polls its stop flag once a second).

    python -m benchmarks.bench_flow --runs 4 --mirror ../shared/mnist
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

from benchmarks.arguments import add_mirror_option, positive_int
from benchmarks.machine import cpu_name
from benchmarks.scratch import clean_up_on_sigterm
from tests.process_helpers import prefect_server

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = {"train.epochs": 1, "evaluate.min_accuracy": 0.9}
FLOW = (
    "import json, sys; from flows.retrain import retrain; "
    "r = retrain(epochs=1, min_accuracy=0.9, force=True, workdir=sys.argv[1]); "
    "print('RESULT ' + json.dumps(sum(r['seconds']['tasks'].values())))"
)
# What the flow's tasks do, without Prefect: fetch into the project, snapshot the dataset and
# fingerprint the inputs (the flow's "inputs" task, untimed there too), then the stages.
PLAIN = """
import json, sys, time
from pathlib import Path
from mnist_pipeline.pipeline import runs
from mnist_pipeline.pipeline import stages
from mnist_pipeline.training.fingerprint import inputs_fingerprint
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import load_params
root = Path(sys.argv[1])
params = load_params(root / "params.yaml", json.loads(sys.argv[2]))
shared, layout = Layout(root), Layout.for_run(root, f"plain-{time.time_ns()}")
layout.root.mkdir(parents=True)
t = time.perf_counter()
stages.run("fetch", params, shared)
tasks = time.perf_counter() - t
runs.snapshot_dataset(shared.data_dir, layout.data_dir, params.data.sha256)
inputs_fingerprint(params, layout.data_dir)
for name in ("train", "evaluate", "export", "parity", "register"):
    t = time.perf_counter()
    stages.run(name, params, layout)
    tasks += time.perf_counter() - t
print("RESULT " + json.dumps(tasks))
"""
BARE = (
    "import json, time; t0 = time.perf_counter(); from prefect import flow, task; "
    "t1 = time.perf_counter(); marks = {}\n"
    "@task\ndef noop(i): return i\n"
    "@flow\ndef bare():\n    marks['start'] = time.perf_counter()\n"
    "    for i in range(6): noop(i)\n    marks['end'] = time.perf_counter()\n"
    "bare(); t4 = time.perf_counter()\n"
    "print('RESULT ' + json.dumps({'import': t1 - t0, 'begin': marks['start'] - t1, "
    "'body': marks['end'] - marks['start'], 'end': t4 - marks['end']}))"
)


def timed(code: str, args: list[str], env: dict[str, str]) -> tuple[float, object]:
    """Run `code` in a new Python process; returns its wall seconds and its RESULT value."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, cwd=REPO
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"benchmark process failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return wall, json.loads(line.removeprefix("RESULT "))


def stage_run(code: str, workdir: Path, env: dict[str, str]) -> dict[str, float]:
    """One pipeline process: wall, stage seconds, and the rest."""
    wall, tasks = timed(code, [str(workdir), json.dumps(OVERRIDES)], env)
    return {"wall": wall, "tasks": float(tasks), "rest": wall - float(tasks)}  # type: ignore[arg-type]


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=positive_int, default=4, help="per kind (flows: 1 cold + N-1 warm)"
    )
    add_mirror_option(parser)
    args = parser.parse_args()
    clean_up_on_sigterm()  # a timeout's SIGTERM still removes the scratch folder
    scratch = Path(tempfile.mkdtemp(prefix="bench-flow-"))
    mirror = {"MNIST_MIRROR": ",".join(args.mirror)}
    base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | mirror
    base |= {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(REPO)}
    temporary = base | {"PREFECT_HOME": str(scratch / "home-temporary")}
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "running server": []}
    runs["temporary server"] = []
    bare: list[dict[str, float]] = []
    try:
        workdir = scratch / "project"
        workdir.mkdir()
        shutil.copy(REPO / "params.yaml", workdir / "params.yaml")
        with prefect_server(scratch, **mirror) as server:
            server = server | {"PYTHONPATH": str(REPO)}
            for _ in range(args.runs):
                runs["plain"].append(stage_run(PLAIN, workdir, base))
                runs["running server"].append(stage_run(FLOW, workdir, server))
                runs["temporary server"].append(stage_run(FLOW, workdir, temporary))
                wall, phases = timed(BARE, [], server)
                bare.append({"wall": wall, **phases})  # type: ignore[dict-item]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for kind, done in runs.items():
        for i, run in enumerate(done):
            print(
                f"{kind} run {i + 1}: wall {run['wall']:.1f} s, stages {run['tasks']:.1f} s, "
                f"rest {run['rest']:.2f} s"
            )
    plain = median(runs["plain"], "rest")
    print(f"plain (no Prefect): median rest {plain:.2f} s (start, imports, teardown)")
    for kind in ("running server", "temporary server"):
        warm, cold = runs[kind][1:], runs[kind][0]
        overhead = f"{median(warm, 'rest') - plain:.2f} s" if warm else "n/a (no warm run)"
        print(
            f"{kind}: Prefect overhead (median warm rest - plain rest) {overhead}; "
            f"cold {cold['rest'] - plain:.2f} s"
        )
    phases = ", ".join(f"{k} {median(bare[1:] or bare, k):.2f} s" for k in ("import", "begin"))
    phases += ", " + ", ".join(f"{k} {median(bare[1:] or bare, k):.2f} s" for k in ("body", "end"))
    print(
        f"bare Prefect flow (6 no-op tasks), running server: median process wall "
        f"{median(bare[1:] or bare, 'wall'):.2f} s ({phases})"
    )
    print(f"CPU: {cpu_name()}; targets: Prefect <= 10 s (temporary), <= 2 s (running server)")


if __name__ == "__main__":
    main()
