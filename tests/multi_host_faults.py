"""Faults on the hosts of tests/test_multi_host.py, once its three runs are registered: a worker
host that dies mid-run (every process killed) and an object store that becomes unreachable
before a registration. Each returns what the test checks in the bucket afterwards."""

from __future__ import annotations

import json
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO_ROOT
from tests.multi_host_helpers import base_env, client, launch
from tests.netns_helpers import Host, kill_all, set_link
from tests.test_scale_out import worker_of

HEARTBEATS_S = 30  # PREFECT_FLOWS_HEARTBEAT_FREQUENCY on the workers (Prefect's minimum)
# a run that sent a heartbeat and nothing for this long is marked Crashed: three heartbeat
# intervals, as Prefect's docs give, so that a heartbeat lost while the server's database restarts
# (tests/multi_host_prefect.py) does not mark a healthy run
SILENCE_S = 3 * HEARTBEATS_S
CRASH_SUBJECT = "mnist-retrain run lost its process"


@dataclass(frozen=True)
class Site:
    """What the fault scenarios need of the running hosts."""

    net: dict[str, Host]
    client_env: dict[str, str]
    worker_logs: list[Path]

    def call(self, *args: str) -> object:
        return client(self.net["client"], self.client_env, *args)

    def params(self, epochs: int, **extra: str) -> str:
        return json.dumps({"params_file": "hosts.yaml", "epochs": epochs, **extra})

    def when_training(self, flow_run_id: str) -> None:
        """Return once the run's train task is running."""
        seen = self.call("wait-task", flow_run_id, "train")
        assert seen["state"] == "Running", seen


def notifications(procs: ExitStack, site: Site, folder: Path) -> tuple[str, str, Path]:
    """A webhook receiver on the client host and a block posting to it: (slug, block id, the
    file each notification is appended to, one JSON line each)."""
    me = site.net["client"]
    received = folder / "notifications.jsonl"
    url = f"http://{me.address}:8100"
    receiver = [sys.executable, "-m", "tests.multi_host_client", "receive", me.address, "8100"]
    env = base_env(folder / "home")
    # run from the checkout (the `tests` package is not installed), writing into `folder`
    launch(procs, me, [*receiver, str(received)], env, folder / "receiver.log", REPO_ROOT, url, me)
    block = site.call("webhook", f"{url}/hook", "multi-host")
    return block["slug"], block["id"], received


def worker_host_dies(site: Site, block_id: str) -> dict[str, str]:
    """Two runs on the two workers; the host of the first loses every process while it trains.
    Returns once the other run has completed on the surviving worker: {"crashed" (the killed
    run, which `ended_crashed` then waits for), "completed", "survivor", "victim"}."""
    site.call("watch-heartbeats", block_id, str(SILENCE_S))
    doomed, other = site.call("run", "mnist-retrain/weekly", site.params(20), site.params(4))
    site.when_training(doomed)
    victim = worker_of(site.worker_logs, doomed)
    assert victim in ("w1", "w2"), victim
    kill_all(site.net[victim].namespace)
    (final,) = site.call("wait", other)
    assert final["state"] == "Completed", final
    survivor = "w2" if victim == "w1" else "w1"
    assert worker_of(site.worker_logs, other) == survivor
    return {"crashed": doomed, "completed": other, "survivor": survivor, "victim": victim}


def ended_crashed(site: Site, crash: dict[str, str], received: Path) -> None:
    """The run killed by `worker_host_dies` ends Crashed once its heartbeats have been silent
    for SILENCE_S (the heartbeat automation), and the automation's block is told."""
    (final,) = site.call("wait", crash["crashed"])
    assert final["state"] == "Crashed", final
    assert final["message"] == "the flow run stopped sending heartbeats", final
    deadline = time.monotonic() + 60  # the server's actions service posts it after the state
    while not any(n["subject"] == CRASH_SUBJECT for n in told(received)):
        assert time.monotonic() < deadline, told(received)
        time.sleep(0.5)


def store_goes_down(site: Site, endpoint: str, slug: str) -> dict[str, str]:
    """A run whose registration starts while the s3 host is unreachable ends Failed naming the
    endpoint in one line (and tells the block `slug` once); the same run once the store is
    back registers. Returns the {"failed", "completed"} flow run ids."""
    params = site.params(12)  # seconds of training: time to take the store away before it ends
    (failing,) = site.call("run", "mnist-retrain/weekly", site.params(12, notify_block=slug))
    site.when_training(failing)  # the store goes away between training and registration
    set_link(site.net["s3"], up=False)
    try:
        (final,) = site.call("wait", failing)
    finally:
        set_link(site.net["s3"], up=True)
    assert final["state"] == "Failed", final
    message = final["message"]
    assert "stage register failed" in message and f"at {endpoint}:" in message, message
    assert "\n" not in message, message
    (again,) = site.call("run", "mnist-retrain/weekly", params)
    (final,) = site.call("wait", again)
    assert final["state"] == "Completed", final
    return {"failed": failing, "completed": again}


def told(received: Path) -> list[dict]:
    """The notifications the receiver was sent, in order."""
    return [json.loads(line) for line in received.read_text().splitlines()]
