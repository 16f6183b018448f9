"""Registering and moving an alias tell a Prefect server, and name who did it."""

from __future__ import annotations

import getpass
import logging
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import yaml

from mnist_pipeline.inbox.events import server_configured
from mnist_pipeline.pipeline import announce
from mnist_pipeline.registry.aliases import MAX_ACTOR, checked_actor
from tests.conftest import REPO_ROOT
from tests.flow_helpers import refuse_prefect_settings
from tests.process_helpers import prefect_server
from tests.promotion_helpers import TEST
from tests.test_registry_cli import produce


def test_outside_a_flow_run_the_actor_is_the_local_user() -> None:
    assert announce.current_actor() == f"user:{getpass.getuser()}"


def test_a_flow_runs_actor_is_one_printable_line_the_audit_trail_takes() -> None:
    """Prefect does not limit a run's name: a long one with a newline is cut and escaped."""
    actor = announce.run_actor("nightly\n" + "x" * 500)
    assert actor.startswith("prefect:nightly\\nxxx") and len(actor) == MAX_ACTOR
    assert checked_actor(actor) == actor


def test_a_failed_emit_is_a_warning_not_an_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import prefect.events

    def refuse(**_kwargs):
        raise ConnectionError("server unreachable")

    monkeypatch.setattr(announce, "server_configured", lambda: "http://127.0.0.1:9/api")
    monkeypatch.setattr(prefect.events, "emit_event", refuse)
    with caplog.at_level(logging.WARNING):
        assert announce.emit(announce.MOVED, "m", {}) is False
    assert "could not emit mnist.alias.moved for m: server unreachable" in caplog.text
    monkeypatch.setattr(announce, "server_configured", lambda: None)
    assert announce.emit(announce.MOVED, "m", {}) is False  # no API: nothing to tell


def test_events_are_told_from_the_registration_and_one_card_read(
    registry, make, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With no API nothing is read from the store; with one, the payloads name the version's
    accuracy (its card) and the alias it replaced (the trail's event the registration kept)."""
    from mnist_pipeline.pipeline.register import register_candidate
    from tests.registry_helpers import PARAMS

    first = register_candidate(registry, make(1, accuracy=0.95), PARAMS)
    second = register_candidate(registry, make(2, accuracy=0.99), PARAMS)
    assert second.event is not None and second.event["previous"] == 1
    reads, sent = [], []
    for name in ("read", "list", "read_document"):
        real = getattr(registry.storage, name)
        monkeypatch.setattr(
            registry.storage, name, lambda *a, real=real: reads.append(a) or real(*a)
        )
    monkeypatch.setattr(announce, "emit", lambda *event: sent.append(event) or True)
    monkeypatch.setattr(announce, "server_configured", lambda: None)
    announce.registered(registry, second, "user:eve")
    assert announce.moved(registry, "staging", 1, None, "user:eve") is False
    assert reads == [] and sent == []
    monkeypatch.setattr(announce, "server_configured", lambda: "http://127.0.0.1:9/api")
    announce.registered(registry, second, "user:eve")
    payload = {"version": 2, "alias": "production", "previous": 1, "accuracy": 0.99}
    payload["actor"] = "user:eve"
    assert sent == [
        (announce.REGISTERED, "mnist-cnn", payload),
        (announce.MOVED, "mnist-cnn", payload),
    ]
    assert len(reads) == 1  # the card, by number
    sent.clear()

    with monkeypatch.context() as patch:  # a PREFECT_* value Prefect cannot read: registered
        patch.setattr(announce, "server_configured", server_configured)  # the real one
        refuse_prefect_settings(patch)
        with caplog.at_level("WARNING"):
            announce.registered(registry, second, "user:eve")
            assert announce.moved(registry, "staging", 1, None, "user:eve") is False
    assert sent == [] and "no events sent: Prefect's settings are refused: " in caplog.text
    monkeypatch.setattr(announce, "server_configured", lambda: "http://127.0.0.1:9/api")
    announce.registered(registry, replace(first, event=None), "user:eve")  # the store went down
    assert [event for event, *_ in sent] == [announce.REGISTERED]
    assert sent[0][2]["previous"] is None and sent[0][2]["accuracy"] == 0.95


def stored_events(api_url: str) -> list[dict]:
    names = [announce.REGISTERED, announce.MOVED]
    body = {"filter": {"event": {"name": names}, "order": "ASC"}, "limit": 50}
    response = httpx.post(f"{api_url}/events/filter", json=body, timeout=30)
    response.raise_for_status()
    return response.json()["events"]


def stored_after(api_url: str, count: int, timeout: float = 60) -> list[dict]:
    """The stored events once `count` are there (the server persists them in batches)."""
    deadline = time.monotonic() + timeout
    while len(found := stored_events(api_url)) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


SECOND = 1 - 33 / TEST  # the second version's accuracy: 667 of the 700 test images


@pytest.mark.slow
def test_register_and_promote_emit_exactly_their_events(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    params = {"evaluate": {"min_accuracy": 0.9}, "registry": {"promotion": {"significance": 0.01}}}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "prefect").mkdir()
    with prefect_server(tmp_path / "prefect") as env:
        env = {**env, "PYTHONPATH": str(REPO_ROOT)}

        def models(*args: str) -> None:
            cli = [sys.executable, "-m", "mnist_pipeline", "--root", str(workdir), "models"]
            done = subprocess.run(
                [*cli, *args], env=env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stdout + done.stderr

        produce(workdir, 1, 0.95)
        models("register")
        produce(workdir, 2, SECOND)  # 2 of 700 more right, not significant: staging
        models("register")
        models("promote", "2", "--actor", "user:eve", "--comment", "checked")
        api = env["PREFECT_API_URL"]
        events = stored_after(api, 5)
    me = f"user:{getpass.getuser()}"
    got = [
        (
            e["event"],
            e["resource"]["prefect.resource.id"],
            {k: e["payload"][k] for k in ("version", "alias", "previous", "actor")},
        )
        for e in sorted(events, key=lambda e: e["occurred"])
    ]
    resource = "mnist.model.mnist-cnn"
    assert got == [
        (
            announce.REGISTERED,
            resource,
            dict(version=1, alias="production", previous=None, actor=me),
        ),
        (announce.MOVED, resource, dict(version=1, alias="production", previous=None, actor=me)),
        (announce.REGISTERED, resource, dict(version=2, alias="staging", previous=None, actor=me)),
        (announce.MOVED, resource, dict(version=2, alias="staging", previous=None, actor=me)),
        (
            announce.MOVED,
            resource,
            dict(version=2, alias="production", previous=1, actor="user:eve"),
        ),
    ]
    accuracies = [e["payload"]["accuracy"] for e in sorted(events, key=lambda e: e["occurred"])]
    assert accuracies == pytest.approx([0.95, 0.95, SECOND, SECOND, SECOND])
