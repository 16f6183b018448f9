"""The retraining flow: fetch → train → evaluate (gate) → export → parity → register.

Every task calls the same stage entry function as the CLI and `dvc repro`; nothing here computes.
Run once with Prefect's temporary local server: `python -m flows.retrain`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import publish_report
from mnist_pipeline import evaluate, export, fetch, parity, train
from mnist_pipeline.layout import Layout
from mnist_pipeline.params import Params, load_params
from mnist_pipeline.registry import Registry, candidate_from_layout


def _timed(call: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = call(*args)
    return result, time.perf_counter() - start


@task(name="fetch", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def fetch_task(params: Params, layout: Layout) -> tuple[fetch.FetchResult, float]:
    """Verified dataset in place (network I/O: retried)."""
    return _timed(fetch.fetch, params.data, layout.data_dir)


@task(name="train", cache_policy=NO_CACHE)
def train_task(params: Params, layout: Layout) -> tuple[train.TrainResult, float]:
    return _timed(train.train, params.train, layout.data_dir, layout)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(params: Params, layout: Layout) -> tuple[evaluate.EvalResult, float]:
    """Metrics, plots, and the accuracy gate (raises GateError below the threshold)."""
    return _timed(evaluate.evaluate, params.evaluate, params.train.arch, layout.data_dir, layout)


@task(name="export", cache_policy=NO_CACHE)
def export_task(params: Params, layout: Layout) -> tuple[export.ExportResult, float]:
    return _timed(export.run_export, params.export, params.train.arch, layout)


@task(name="parity", cache_policy=NO_CACHE)
def parity_task(params: Params, layout: Layout) -> tuple[parity.ParityResult, float]:
    """onnxruntime vs PyTorch on the whole test set (raises GateError on a mismatch)."""
    return _timed(parity.run_parity, params.export, params.train.arch, layout)


@task(name="register", cache_policy=NO_CACHE)
def register_task(params: Params, layout: Layout) -> tuple[Any, float]:
    registry = Registry(layout.registry_root(params.registry.root), params.registry.model_name)
    candidate = candidate_from_layout(layout)
    return _timed(registry.register, candidate, params, params.registry.promotion_margin)


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
    logger = get_run_logger()
    started = time.perf_counter()
    root = Path(workdir).resolve()
    params = load_params(
        root / params_file, flow_overrides(epochs, learning_rate, min_accuracy, mirror)
    )
    layout = Layout(root)
    timings: dict[str, float] = {}
    _, timings["fetch"] = fetch_task(params, layout)
    _, timings["train"] = train_task(params, layout)
    metrics, timings["evaluate"] = evaluate_task(params, layout)
    _, timings["export"] = export_task(params, layout)
    parity_result, timings["parity"] = parity_task(params, layout)
    registration, timings["register"] = register_task(params, layout)
    wall = time.perf_counter() - started
    overhead = wall - sum(timings.values())
    logger.info(
        "registered %s version %s as %s; flow %.1f s, tasks %.1f s, overhead %.1f s",
        params.registry.model_name,
        registration.version,
        registration.alias,
        wall,
        sum(timings.values()),
        overhead,
    )
    publish_report(params, layout, metrics, parity_result, registration, timings)
    return {
        "version": registration.version,
        "alias": registration.alias,
        "accuracy": metrics.accuracy,
        "seconds": {"flow": wall, "tasks": timings, "overhead": overhead},
    }


if __name__ == "__main__":
    retrain()
