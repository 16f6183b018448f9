"""The retraining flow: fetch → train → evaluate (gate) → export → parity → register.

Every task runs a stage through `mnist_pipeline.stages.run`, as the CLI and `dvc repro` do;
nothing here computes.
Run once with Prefect's temporary local server: `python -m flows.retrain`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import publish_report
from mnist_pipeline import stages
from mnist_pipeline.layout import Layout
from mnist_pipeline.params import Params, load_params


@task(cache_policy=NO_CACHE)
def run_stage(name: str, params: Params, layout: Layout) -> tuple[Any, float]:
    """One stage of the table (mnist_pipeline/stages.py) and its seconds."""
    start = time.perf_counter()
    result = stages.run(name, params, layout)
    return result, time.perf_counter() - start


# One task per stage, named after it; only fetch touches the network, so only fetch is retried.
STAGE_TASKS = {
    name: run_stage.with_options(name=name, task_run_name=name) for name in stages.STAGES
}
STAGE_TASKS["fetch"] = STAGE_TASKS["fetch"].with_options(retries=2, retry_delay_seconds=2)


def flow_overrides(
    epochs: int | None, learning_rate: float | None, min_accuracy: float | None, mirror: str | None
) -> dict[str, Any]:
    """Flow parameters as dotted params.yaml overrides (only those given)."""
    pairs = {
        "train.epochs": epochs,
        "train.learning_rate": learning_rate,
        "evaluate.min_accuracy": min_accuracy,
        "data.mirrors": [m.strip() for m in mirror.split(",")] if mirror else None,
    }
    return {key: value for key, value in pairs.items() if value is not None}


@flow(name="mnist-retrain", log_prints=True)
def retrain(
    epochs: int | None = None,
    learning_rate: float | None = None,
    min_accuracy: float | None = None,
    mirror: str | None = None,
    workdir: str = ".",
    params_file: str = "params.yaml",
) -> dict[str, Any]:
    """Retrain, gate, export, check and register; returns the new version and its alias."""
    started = time.perf_counter()
    root = Path(workdir).resolve()
    params = load_params(
        root / params_file, flow_overrides(epochs, learning_rate, min_accuracy, mirror)
    )
    layout = Layout(root)
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    upstream: list[Any] = []
    for name, stage_task in STAGE_TASKS.items():
        # wait_for makes the chain explicit, so Prefect's graph draws fetch -> ... -> register.
        state = stage_task(name, params, layout, wait_for=upstream, return_state=True)
        results[name], timings[name] = state.result()  # a failed stage fails the flow here
        upstream = [state]
    registration = results["register"]
    wall = time.perf_counter() - started
    overhead = wall - sum(timings.values())
    print(  # log_prints: a log line in a flow run, plain output under .fn()
        f"{registration.summary()}; flow {wall:.1f} s, tasks {sum(timings.values()):.1f} s, "
        f"overhead {overhead:.1f} s"
    )
    publish_report(params, layout, results["evaluate"], results["parity"], registration, timings)
    return {
        "version": registration.version,
        "alias": registration.alias,
        "accuracy": results["evaluate"].accuracy,
        "seconds": {"flow": wall, "tasks": timings, "overhead": overhead},
    }


if __name__ == "__main__":
    retrain()
