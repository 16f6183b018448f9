"""Drift starts a retraining, for real: a Prefect server, the deployment with its triggers, and
`mnist-pipeline serve` serving a version whose reference was measured on the images it is sent."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.retrain import retrain
from flows.serve import deployment_options
from mnist_pipeline.core.params import parse_params
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registry
from mnist_pipeline.serving.drift_event import DRIFT_EVENT
from tests.drift_helpers import candidate_with_reference, contract_digits
from tests.process_helpers import mnist_server, prefect_server
from tests.reports import MODEL, PARAMS
from tests.test_inbox_trigger import flow_runs

pytestmark = pytest.mark.slow
WINDOW = 200  # the tiny test set's size: the same images make the same shares


def drift_events(api_url: str) -> list[dict]:
    body = {"filter": {"event": {"name": [DRIFT_EVENT]}}, "limit": 50}
    response = httpx.post(f"{api_url}/events/filter", json=body, timeout=30)
    response.raise_for_status()
    return response.json()["events"]


def send(url: str, digits: np.ndarray) -> None:
    for start in range(0, len(digits), 50):
        batch = {"images": digits[start : start + 50].tolist()}
        assert httpx.post(f"{url}/predict", json=batch, timeout=30).status_code == 200


def drift_state(url: str) -> dict:
    return httpx.get(f"{url}/model", timeout=30).json()["drift"]


def wait(check, what: str, timeout: float = 60):
    """Poll `check()` until truthy (the test's servers are checked by their own helpers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_normal_digits_are_quiet_and_inverted_ones_start_one_retraining(
    tmp_path: Path, monkeypatch
) -> None:
    candidate = candidate_with_reference(tmp_path / "candidate", n_test=WINDOW)
    project = tmp_path / "project"
    register_candidate(Registry(project / "registry", MODEL), candidate, PARAMS)
    digits = contract_digits(candidate.data_dir)
    (tmp_path / "prefect").mkdir()
    with prefect_server(tmp_path / "prefect") as env:
        api_url = env["PREFECT_API_URL"]
        params = parse_params({"schedule": {"deployment_name": "test-drift", "cron": "0 4 1 1 *"}})
        options = deployment_options(params, str(project), "params.yaml")
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            deployment_id = str(retrain.to_deployment(**options).apply())  # nobody runs it
        for key in ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED"):
            monkeypatch.setenv(key, env[key])
        log = tmp_path / "serve.log"
        serve = {"drift_window": WINDOW, "drift_threshold": 0.25, "drift_cooldown_s": 3600}
        with mnist_server(project, log, **serve) as url:
            send(url, digits)  # the images the reference was measured on
            normal = wait(
                lambda: drift_state(url)["verdict"] == "normal" and drift_state(url), "a verdict"
            )
            send(url, 1.0 - digits)  # inverted: white digits on black become black on white
            send(url, 1.0 - digits)  # still drifting, within the cooldown
            # every image sent has been judged (3 windows), so a second event would exist by now
            wait(lambda: drift_state(url)["seen"] == 3 * WINDOW, "the windows judged")
            shifted = wait(lambda: drift_events(api_url), "the drift event")
            runs = functools.partial(flow_runs, api_url, deployment_id)
            triggered = wait(lambda: [r for r in runs() if not r["auto_scheduled"]], "a run")
            time.sleep(5)  # time for a second event and run to reach the server, were there one
            state = drift_state(url)
            events = drift_events(api_url)
            started = [r["id"] for r in runs() if not r["auto_scheduled"]]
            served_log = log.read_text()
        with mnist_server(project, tmp_path / "again.log", **serve) as url:  # a restart
            send(url, 1.0 - digits)  # the shift goes on: a full window judged drift again
            wait(lambda: drift_state(url)["verdict"] == "drift", "the restarted server's verdict")
            time.sleep(5)  # time for a second event to reach the server, were there one
            after_restart = (drift_state(url)["events"], drift_events(api_url))
            started_after = [r["id"] for r in runs() if not r["auto_scheduled"]]
    assert normal["events"] == 0 and max(normal["psi"].values()) < 0.05, normal
    assert state["verdict"] == "drift" and state["events"] == 1, state
    assert state["psi"]["ink"] > 0.25 and state["last_event"] is not None
    assert "WARNING: mnist_pipeline.serve: drift: v1: PSI" in served_log
    assert [e["id"] for e in events] == [shifted[0]["id"]]  # one shift, one event
    (event,) = events
    assert event["resource"]["prefect.resource.id"] == f"mnist.model.{MODEL}"
    assert event["payload"]["version"] == 1 and "ink" in event["payload"]["drifted"]
    (run,) = triggered
    assert started == [run["id"]]  # exactly one retraining run, started by the event
    # a server restarted during the shift sends no second event within the cooldown (the
    # claim file in the project's .cache/serve/ is shared by workers and restarts)
    assert after_restart[0] == 0 and [e["id"] for e in after_restart[1]] == [event["id"]]
    assert started_after == started
    reason = run["parameters"]["reason"]
    assert reason == "live traffic drifted from MNIST test: " + event["payload"]["summary"]
    assert run["parameters"]["workdir"] == str(project)  # the deployment's own parameters kept
