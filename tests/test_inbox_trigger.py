"""New labelled digits start a retraining, for real: a Prefect server, flows.serve, `data add`."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.inbox import extra
from mnist_pipeline.inbox.events import EVENT, read_count, resource_id
from mnist_pipeline.registry import Registry
from tests.conftest import REPO_ROOT
from tests.process_helpers import prefect_server, start, stop, wait_for
from tests.test_ingest import stroke_png
from tests.test_serve import tiny_project

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
DEPLOYMENT = "mnist-retrain/test-inbox"


def flow_runs(api_url: str, deployment_id: str) -> list[dict]:
    """The deployment's flow runs, oldest first."""
    body = {"deployments": {"id": {"any_": [deployment_id]}}, "limit": 50, "offset": 0}
    response = httpx.post(f"{api_url}/flow_runs/filter", json=body, timeout=30)
    response.raise_for_status()
    return sorted(response.json(), key=created)


def created(run: dict) -> datetime:
    return datetime.fromisoformat(run["created"])


def finished_since(api_url: str, deployment_id: str, since: datetime | None = None) -> list[dict]:
    """The deployment's runs created after `since` that reached a final state."""
    final = ("COMPLETED", "FAILED", "CRASHED")
    runs = flow_runs(api_url, deployment_id)
    return [r for r in runs if r["state"]["type"] in final and (not since or created(r) > since)]


def inbox_events(api_url: str) -> list[str]:
    """The ids of the inbox events the server has stored."""
    body = {"filter": {"event": {"name": [EVENT]}}, "limit": 50}
    response = httpx.post(f"{api_url}/events/filter", json=body, timeout=30)
    response.raise_for_status()
    return [event["id"] for event in response.json()["events"]]


def emit_inbox_event(api_url: str) -> str:
    """One more inbox event for the project, as `data add` sends it; returns its id."""
    from prefect.events import Event
    from prefect.events.clients import get_events_client

    event = Event(event=EVENT, resource={"prefect.resource.id": resource_id("mnist-cnn")})

    async def send() -> None:
        async with get_events_client() as client:
            await client.emit(event)

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        asyncio.run(send())
    return str(event.id)


def data_add(workdir: Path, env: dict[str, str], label: int, files: list[Path]) -> str:
    done = subprocess.run(
        [str(BIN / "mnist-pipeline"), "--root", str(workdir), "data", "add", "--label", str(label)]
        + [str(f) for f in files],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stderr


def test_enough_new_digits_start_exactly_one_retraining(tmp_path: Path, tiny_mirror) -> None:
    schedule = {"deployment_name": "test-inbox", "cron": "0 4 1 1 *", "min_new_images": 6}
    workdir = tiny_project(tmp_path, tiny_mirror, schedule)
    pngs = []
    for seed in range(8):
        pngs.append(tmp_path / f"digit{seed}.png")
        pngs[-1].write_bytes(stroke_png(seed))
    (tmp_path / "prefect").mkdir()
    with prefect_server(tmp_path / "prefect", PREFECT_RUNNER_POLL_FREQUENCY="1") as env:
        api_url = env["PREFECT_API_URL"]
        log = tmp_path / "serve.log"
        serve = start(
            [sys.executable, "-m", "flows.serve", "--workdir", str(workdir)], env, log, REPO_ROOT
        )
        try:

            def deployment() -> str | None:
                found = httpx.get(f"{api_url}/deployments/name/{DEPLOYMENT}", timeout=30)
                return found.json()["id"] if found.status_code == 200 else None

            deployment_id = wait_for(deployment, 120, "the served deployment", serve, log)
            # 5 new images, then the same 2 again: below min_new_images (6), nothing is started.
            quiet = data_add(workdir, env, 3, pngs[:3]) + data_add(workdir, env, 4, pngs[3:5])
            quiet += data_add(workdir, env, 4, pngs[3:5])
            assert "told the Prefect server" not in quiet
            assert read_count(Layout(workdir).inbox) == (5, 0)  # (pending, events so far)
            told = data_add(workdir, env, 5, pngs[5:8])  # 8 pending: one event
            assert "8 new image(s): told the Prefect server" in told
            assert read_count(Layout(workdir).inbox) == (0, 1)  # the event took them

            finished = functools.partial(finished_since, api_url, deployment_id)
            (run,) = wait_for(finished, 240, "the triggered run", serve, log)
            # One more event, after the first run: it starts a run (the trigger is live), and
            # any second run the first event caused would have been created before this one.
            sent = datetime.now(UTC)
            event = emit_inbox_event(api_url)
            (again,) = wait_for(lambda: finished(sent), 120, "the second run", serve, log)
            runs = flow_runs(api_url, deployment_id)
            wait_for(lambda: event in inbox_events(api_url), 60, "the event stored", serve, log)
            events = inbox_events(api_url)
        finally:
            stop(serve)
    assert run["state"]["type"] == "COMPLETED", log.read_text()[-3000:]
    assert len(events) == 2  # `data add` sent one event, and this test one
    # Not the cron's runs; a run waiting for the deployment's concurrency slot is Scheduled too.
    started = [r["id"] for r in runs if not r["auto_scheduled"]]
    assert started == [run["id"], again["id"]]  # exactly one run per event
    assert again["state"]["message"] == "up to date: v1 has the same inputs"
    assert run["parameters"]["reason"] == "8 new labelled digit(s) in the inbox"  # it says why
    (card,) = Registry(workdir / "registry", "mnist-cnn").versions()
    folder = workdir / "runs" / f"{run['name']}-{run['id'].replace('-', '')[-12:]}"
    assert folder.is_dir(), sorted(p.name for p in (workdir / "runs").iterdir())
    identity = extra.extra_sha256(Layout(folder).extra_dir)
    assert identity != extra.NO_EXTRA_SHA256
    assert card["data"]["extra_sha256"] == card["fingerprint"]["extra_sha256"] == identity
    assert card["origin"]["flow_run_id"] == run["id"]
    manifest = json.loads((Layout(folder).extra_dir / extra.MANIFEST_FILE).read_text())
    assert len(manifest) == 8  # every image added, the repeated two once
