"""The evaluate stage end to end, in process: a cold robustness cache against a warm one.

Copies what evaluate reads (data/mnist, data/ingested when present, models/model.pt and
model.json, reports/train_history.csv) from a project into a temporary folder, then times
`evaluate()` there (scoring the 10k test digits, the extra holdout, calibration, the robustness
set, every plot and report file) `--repeats` times with the robustness cache emptied first
(cold: the set is rendered, by one process per core as the stage does, and again by this
process alone) and `--repeats` times with it kept (warm: the set is read back), the three kinds
interleaved round by round. Prints the medians, the min and max, and the CPU. The first run of
a process also pays matplotlib's font loading, so a warm-up run comes first and is not counted.

    .venv/bin/python -m benchmarks.bench_evaluate
    .venv/bin/python -m benchmarks.bench_evaluate --project ../main --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from benchmarks.arguments import positive_int
from benchmarks.machine import cpu_name
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import load_params
from mnist_pipeline.evaluation import robustness
from mnist_pipeline.evaluation.evaluate import evaluate

NEEDED = ("data/mnist", "models/model.pt", "models/model.json", "reports/train_history.csv")
OPTIONAL = ("data/ingested",)


def copy_inputs(project: Path, root: Path) -> None:
    """What evaluate reads, from `project` into `root` (SystemExit naming what is missing)."""
    for name in (*NEEDED, *OPTIONAL):
        source, target = project / name, root / name
        if not source.exists():
            if name in NEEDED:
                raise SystemExit(f"{source} is missing: run fetch and train in {project} first")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)


def timed(run: object) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the stage prints its report
        run()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, default=Path("."), help="folder with the inputs")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--repeats", type=positive_int, default=3)
    args = parser.parse_args()
    params = load_params(args.params)
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as folder:
        layout = Layout(root=Path(folder))
        copy_inputs(args.project, layout.root)

        def run() -> None:
            evaluate(params.model, params.evaluate, layout)

        def cold() -> None:
            shutil.rmtree(layout.robustness_cache, ignore_errors=True)
            run()

        def cold_alone() -> None:
            with mock.patch.object(robustness, "PARALLEL_FROM", sys.maxsize):
                cold()

        kinds = {
            f"cold cache, rendered by {min(robustness.cpu_count(), robustness.MAX_PROCESSES)}"
            " process(es)": cold,
            "cold cache, rendered by one process": cold_alone,
            "warm cache (reads it back)": run,
        }
        timed(run)  # warm-up: imports, fonts, and the cache filled
        times: dict[str, list[float]] = {name: [] for name in kinds}
        for _ in range(args.repeats):
            for name, kind in kinds.items():
                times[name].append(timed(kind))
    per = params.evaluate.robustness_per_transform
    print(f"CPU: {cpu_name()}; robustness_per_transform {per}; {args.repeats} runs each")
    print(f"{'evaluate, in process':<44} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, values in times.items():
        print(
            f"{name:<44} {statistics.median(values):>9.2f} {min(values):>7.2f} {max(values):>7.2f}"
        )


if __name__ == "__main__":
    main()
