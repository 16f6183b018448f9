"""The Prefect server's side of tests/test_multi_host.py, once the faults have run: its
PostgreSQL restarted while a run trains, no-op runs (inputs already registered) timed as
Prefect records them, and a sweep whose trials go to both workers."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from tests.multi_host_faults import Site
from tests.multi_host_helpers import Postgres
from tests.test_scale_out import worker_of

DEPLOYMENT = "mnist-retrain/weekly"
SWEEP = [{"train.epochs": 2, "train.learning_rate": lr} for lr in (0.0003, 0.002, 0.004)]
FIGURES = "MULTI_HOST_FIGURES"  # names a JSON file: the no-op runs' latencies are written there


def database_restarts(site: Site, postgres: Postgres, epochs: int) -> str:
    """A run whose database restarts (stopped, started on the same data) while it trains, the
    Prefect server running on; the run completes. Returns its flow run id."""
    (run_id,) = site.call("run", DEPLOYMENT, site.params(epochs))
    site.when_training(run_id)
    stopped = postgres.restart()
    (final,) = site.call("wait", run_id)
    tail = "".join(log.read_text() for log in site.worker_logs)[-3000:]
    assert final["state"] == "Completed", (final, tail)
    # the database went down while the run trained (`epochs` keeps the task running for seconds
    # after it; the task's end is stamped by the worker, maybe while the database was down)
    trained = site.call("task-end", run_id, "train")
    assert trained["end"] is not None and trained["end"] > stopped, (trained, stopped)
    return run_id


def noop_runs(site: Site, epochs: int, version: int) -> list[float]:
    """Runs with the params of a registered version's run, one after another: each completes up
    to date (nothing trained). With $MULTI_HOST_FIGURES naming a file, three runs, whose
    trigger-to-end seconds, as Prefect records them, are written there; else one."""
    seconds = []
    for _ in range(3 if os.environ.get(FIGURES) else 1):
        (run_id,) = site.call("run", DEPLOYMENT, site.params(epochs))
        (final,) = site.call("wait", run_id)
        assert final["state"] == "Completed", final
        assert final["message"] == f"up to date: v{version} has the same inputs", final
        seconds.append(site.call("latency", run_id)["seconds"])
    if os.environ.get(FIGURES):
        figures = {"noop_seconds": seconds, "median_s": statistics.median(seconds)}
        Path(os.environ[FIGURES]).write_text(json.dumps(figures, indent=2) + "\n")
    return seconds


def sweep_on_workers(site: Site, deployer: Path, version: int) -> dict:
    """The sweep flow started on the client from its clone `deployer`: its trials run on both
    workers, and the best by validation accuracy is retrained and registered as `version` by
    one of them with the trial's weights. Returns the registering run, its learning rate and
    the trials' flow runs."""
    grid = json.dumps(SWEEP)
    swept = site.call("sweep", str(deployer), "hosts.yaml", grid)
    logs = site.worker_logs
    assert {worker_of(logs, t["flow_run"]) for t in swept["trials"]} == {"w1", "w2"}, swept
    accuracies = [t["val_accuracy"] for t in swept["trials"]]
    assert swept["best"] == max(range(len(SWEEP)), key=lambda i: (accuracies[i], -i)), swept
    assert swept["version"] == version and swept["reproduced"] is True, swept
    assert worker_of(logs, swept["registering_run"]) in {"w1", "w2"}, swept
    best = SWEEP[swept["best"]]["train.learning_rate"]
    trials = [t["flow_run"] for t in swept["trials"]]
    return {"run": swept["registering_run"], "learning_rate": best, "trials": trials}
