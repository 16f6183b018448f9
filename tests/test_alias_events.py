"""A replica refreshes at once when Prefect says its alias moved: a fake stream, then a real one."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from mnist_pipeline.pipeline.announce import MOVED, REGISTERED, resource_id
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registry
from mnist_pipeline.serving.alias_events import STREAM_DOWN, AliasEvents, api_configured
from tests.conftest import REPO_ROOT
from tests.process_helpers import mnist_server, prefect_server
from tests.registry_helpers import MODEL, PARAMS, candidate_in, exported_candidate


def event(name: str, model: str, alias: str, version: int = 2) -> SimpleNamespace:
    resource = SimpleNamespace(id=resource_id(model))
    return SimpleNamespace(
        event=name, resource=resource, payload={"alias": alias, "version": version}
    )


class FakeStream:
    """Subscriptions that fail with `failures` first, then deliver `events` and stop `watcher`."""

    def __init__(self, events: list[SimpleNamespace], failures: list[Exception]) -> None:
        self.events, self.failures = events, failures
        self.resources: list[str] = []
        self.problems: list[str | None] = []  # the watcher's, as each subscription starts
        self.watcher: AliasEvents | None = None

    @asynccontextmanager
    async def __call__(self, resource: str) -> AsyncIterator[AsyncIterator[SimpleNamespace]]:
        self.resources.append(resource)
        self.problems.append(None if self.watcher is None else self.watcher.problem)
        if self.failures:
            raise self.failures.pop(0)

        async def stream() -> AsyncIterator[SimpleNamespace]:
            for item in self.events:
                yield item
            assert self.watcher is not None
            self.watcher.stop()

        yield stream()


def watch(stream: FakeStream, refreshed: list[int]) -> AliasEvents:
    watcher = AliasEvents(MODEL, "production", lambda: refreshed.append(1), stream, (0.0, 0.0))
    stream.watcher = watcher
    return watcher


def test_only_a_move_of_the_followed_alias_refreshes() -> None:
    others = [
        event(MOVED, "another-model", "production"),
        event(MOVED, MODEL, "staging"),
        event(REGISTERED, MODEL, "production"),
    ]
    stream, refreshed = FakeStream([*others, event(MOVED, MODEL, "production")], []), []
    watcher = watch(stream, refreshed)
    asyncio.run(watcher.run())
    assert refreshed == [1]
    assert watcher.status() == {"connected": False, "heard": 1, "problem": None}
    assert stream.resources == [resource_id(MODEL)]


def test_a_lost_stream_warns_once_retries_and_refreshes_on_return(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = [ConnectionRefusedError("connection refused"), OSError("websocket closed")]
    stream, refreshed = FakeStream([event(MOVED, MODEL, "production")], down), []
    watcher = watch(stream, refreshed)
    with caplog.at_level(logging.INFO, logger="mnist_pipeline.serve"):
        asyncio.run(watcher.run())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "not following mnist.alias.moved events (connection refused); "
        "polling the registry meanwhile"
    ]
    assert len(stream.resources) == 3  # two failures, then connected
    assert stream.problems == [None, STREAM_DOWN, STREAM_DOWN]  # GET /model's: no address
    assert refreshed == [1, 1]  # on reconnecting (a move may have been missed), on the event
    assert watcher.status()["problem"] is None


def flapping_stream(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    subscriptions: int,
    while_up: Callable[[int], None] = lambda taken: None,
) -> tuple[list[float], list[str]]:
    """A server that takes the subscription and ends its stream at once (after
    `while_up(n)` for the n-th), until the watcher is stopped at the `subscriptions`-th:
    the backoff's waits and the warnings logged."""
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    taken = []

    @asynccontextmanager
    async def flapping(resource: str) -> AsyncIterator[AsyncIterator[SimpleNamespace]]:
        taken.append(resource)
        if len(taken) == subscriptions:
            watcher.stop()

        async def nothing() -> AsyncIterator[SimpleNamespace]:
            while_up(len(taken))
            return
            yield

        yield nothing()

    watcher = AliasEvents(MODEL, "production", lambda: None, flapping, (1.0, 8.0))
    with caplog.at_level(logging.INFO, logger="mnist_pipeline.serve"):
        asyncio.run(watcher.run())
    return waits, [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_stream_that_keeps_dropping_backs_off_and_warns_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that takes the subscription and drops it at once, again and again."""
    waits, warnings = flapping_stream(monkeypatch, caplog, 6)
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]  # not 1 s after each short-lived subscription
    assert warnings == [
        "not following mnist.alias.moved events (the event stream ended); "
        "polling the registry meanwhile"
    ]


def test_a_stream_that_stayed_up_a_while_starts_the_backoff_afresh_and_warns_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fifth subscription lasts 100 s (a clock the test moves): after it ends the waits
    start again at 1 s, and the new outage is warned of."""
    from mnist_pipeline.serving import alias_events

    clock = [0.0]
    monkeypatch.setattr(alias_events, "time", SimpleNamespace(monotonic=lambda: clock[0]))

    def fifth_up_100_s(taken: int) -> None:
        if taken == 5:
            clock[0] += 100.0

    waits, warnings = flapping_stream(monkeypatch, caplog, 7, fifth_up_100_s)
    assert waits == [1.0, 2.0, 4.0, 8.0, 1.0, 2.0]
    assert len(warnings) == 2 and warnings[0] == warnings[1]


def test_stop_ends_the_thread_of_a_quiet_stream() -> None:
    @asynccontextmanager
    async def quiet(_resource: str) -> AsyncIterator[AsyncIterator[SimpleNamespace]]:
        async def never() -> AsyncIterator[SimpleNamespace]:
            await asyncio.Event().wait()
            yield event(MOVED, MODEL, "production")

        yield never()

    watcher = AliasEvents(MODEL, "production", lambda: None, quiet)
    thread = watcher.start()
    deadline = time.monotonic() + 30
    while not watcher.connected:
        assert time.monotonic() < deadline, "never subscribed"
        time.sleep(0.01)
    watcher.stop()
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_without_an_api_nothing_is_followed_and_prefect_is_not_imported(tmp_path: Path) -> None:
    assert api_configured({"PREFECT_API_URL": "http://127.0.0.1:4200/api"})
    assert not api_configured({}) and not api_configured({"PREFECT_API_URL": " "})
    code = (
        "import sys\n"
        "from mnist_pipeline.registry import Registry\n"
        "from mnist_pipeline.serving.served_model import ServedModel\n"
        f"served = ServedModel(Registry({str(tmp_path)!r}, 'm'), 'production')\n"
        "assert served.follow_events() is False and served.status()['events'] is None\n"
        "assert 'prefect' not in sys.modules, 'prefect was imported'\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def model_of(url: str) -> dict:
    return httpx.get(f"{url}/model", timeout=10).json()


def wait_until(check, what: str, timeout: float = 60) -> None:
    """Poll `check()` until it is true; `timeout` bounds a failure, it times nothing."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_promotion_reaches_the_server_by_event_not_by_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(tmp_path / "registry", MODEL)
    for seed in (2, 1):  # v1 (seed 2) is production; v2 stays staging
        register_candidate(
            registry, candidate_in(exported_candidate(tmp_path / f"m{seed}", seed)), PARAMS
        )
    (tmp_path / "prefect").mkdir()
    slow_poll = {"reload_interval_s": 3600}  # no poll after the first check at start
    with prefect_server(tmp_path / "prefect") as env:
        for key in ("PREFECT_API_URL", "PREFECT_HOME"):
            monkeypatch.setenv(key, env[key])  # the servers' environment
        with (
            mnist_server(tmp_path, tmp_path / "deaf.log", follow_events=False, **slow_poll) as deaf,
            mnist_server(tmp_path, tmp_path / "hearing.log", **slow_poll) as hearing,
        ):
            assert model_of(deaf)["events"] is None
            wait_until(lambda: model_of(hearing)["events"]["connected"], "the event stream")
            cli = [sys.executable, "-m", "mnist_pipeline", "--root", str(tmp_path), "models"]
            done = subprocess.run(
                [*cli, "promote", "2"],
                env={**env, "PYTHONPATH": str(REPO_ROOT)},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            wait_until(lambda: model_of(hearing)["model"]["version"] == 2, "v2 by event")
            # The event switched it: the other server, polling only, still serves v1.
            assert model_of(hearing)["events"]["heard"] >= 1
            assert model_of(deaf)["model"]["version"] == 1
