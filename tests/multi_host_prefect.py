"""The Prefect server's side of tests/test_multi_host.py, once the faults have run: its
PostgreSQL restarted while a run trains, and no-op runs (inputs already registered) timed as
Prefect records them."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from tests.multi_host_faults import Site
from tests.multi_host_helpers import Postgres

DEPLOYMENT = "mnist-retrain/weekly"
FIGURES = "MULTI_HOST_FIGURES"  # names a JSON file: the no-op runs' latencies are written there


def database_restarts(site: Site, postgres: Postgres, epochs: int) -> str:
    """A run whose database restarts (stopped, started on the same data) while it trains, the
    Prefect server running on; the run completes. Returns its flow run id."""
    (run_id,) = site.call("run", DEPLOYMENT, site.params(epochs))
    site.when_training(run_id)
    postgres.restart()
    restarted = time.time()
    (final,) = site.call("wait", run_id)
    tail = "".join(log.read_text() for log in site.worker_logs)[-3000:]
    assert final["state"] == "Completed", (final, tail)
    # the restart fell inside training (`epochs` keeps the task running for seconds after it)
    trained = site.call("task-end", run_id, "train")
    assert trained["end"] is not None and trained["end"] > restarted, (trained, restarted)
    return run_id


def noop_runs(site: Site, epochs: int, version: int, count: int = 3) -> list[float]:
    """`count` runs, one after another, with the params of a registered version's run: each
    completes up to date (nothing trained). Their trigger-to-end seconds, as Prefect records
    them, are written to the file $MULTI_HOST_FIGURES names, if it names one."""
    seconds = []
    for _ in range(count):
        (run_id,) = site.call("run", DEPLOYMENT, site.params(epochs))
        (final,) = site.call("wait", run_id)
        assert final["state"] == "Completed", final
        assert final["message"] == f"up to date: v{version} has the same inputs", final
        seconds.append(site.call("latency", run_id)["seconds"])
    if os.environ.get(FIGURES):
        figures = {"noop_seconds": seconds, "median_s": statistics.median(seconds)}
        Path(os.environ[FIGURES]).write_text(json.dumps(figures, indent=2) + "\n")
    return seconds
