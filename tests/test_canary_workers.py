"""A canary step back shared by the workers of one server (`serve --workers N`): the first
worker's verdict is taken by the others, told once, and read by a worker started later."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from mnist_pipeline.core.service_params import ServeParams
from mnist_pipeline.registry import Registry
from mnist_pipeline.serving import canary
from mnist_pipeline.serving.canary_shared import SharedStepBacks, run_folder
from mnist_pipeline.serving.challenger_metrics import ChallengerMetrics
from mnist_pipeline.serving.live import Tally
from tests import challenger_helpers
from tests.challenger_helpers import Emitted, digits_of, samples
from tests.process_helpers import mnist_server

_models, registry = challenger_helpers._models, challenger_helpers.registry  # fixtures
LIMITS = ServeParams(shadow="staging", canary_percent=30, canary_min_labels=1, canary_max_error=0.5)
STEP_BACKS = "mnist_serve_canary_step_backs_total"


COUNTED: dict[int, CollectorRegistry] = {}  # each worker's metrics, by id of its judge


def worker(folder: Path, pid: int) -> canary.Canary:
    """Worker `pid`'s canary judge, sharing step backs through `folder`, with metrics."""
    judge = canary.Canary(LIMITS, "m", seed=1, shared=SharedStepBacks(folder, pid))
    counted = COUNTED[id(judge)] = CollectorRegistry()
    judge.metrics = ChallengerMetrics(counted)
    return judge


def wrong(version: int = 2, truth: int = 7) -> Tally:
    """A tally over serve.canary_max_error: wrong on a label production got right."""
    tally = Tally(version=version, production=1)
    tally.label(truth=truth, production=truth, challenger=(truth + 1) % 10)
    return tally


def step_backs(judge: canary.Canary) -> float:
    families = COUNTED[id(judge)].collect()
    return sum(s.value for f in families for s in f.samples if s.name == STEP_BACKS)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Emitted:
    events = Emitted()
    monkeypatch.setattr(canary, "emit_if_configured", events)
    return events


def test_a_step_back_by_one_worker_is_taken_by_the_others_at_their_next_poll(
    tmp_path: Path, sent: Emitted, caplog: pytest.LogCaptureFixture
) -> None:
    first, other = worker(tmp_path, 101), worker(tmp_path, 102)
    assert first.judge(wrong()) is True and sent.reached(1) and len(sent) == 1
    why = first.stepped_back[2]
    assert other.percent(2) == 30  # until it polls
    with caplog.at_level(logging.WARNING, logger="mnist_pipeline.serve"):
        other.reread()
        other.reread()  # taken once
    assert other.percent(2) == 0 and other.percent(3) == 30
    assert other.status(2, 1)["stepped_back"] == {"2": f"{why} (judged by worker pid 101)"}
    assert caplog.text.count("canary v2 stepped back to 0 % by another worker") == 1
    assert other.judge(wrong()) is False  # judged already: no second verdict
    assert len(sent) == 1 and step_backs(first) == 1 and step_backs(other) == 0
    assert worker(tmp_path, 103).percent(2) == 0  # a worker started later (a replaced one) reads it


def test_workers_judging_one_version_at_once_tell_it_once(tmp_path: Path, sent: Emitted) -> None:
    """Both judge before either polls: the second adopts the first's verdict, not its own."""
    first, second = worker(tmp_path, 101), worker(tmp_path, 102)
    assert first.judge(wrong(truth=3)) is True
    assert second.judge(wrong(truth=5)) is True  # stepped back now, by the record it found
    assert second.stepped_back == {2: f"{first.stepped_back[2]} (judged by worker pid 101)"}
    assert sent.reached(1) and len(sent) == 1
    assert step_backs(first) == 1 and step_backs(second) == 0
    assert second.percent(2) == 0


def test_a_record_not_written_or_read_leaves_each_worker_judging_alone(
    tmp_path: Path, sent: Emitted, caplog: pytest.LogCaptureFixture
) -> None:
    gone = worker(tmp_path / "missing", 101)  # the run folder removed under the server
    with caplog.at_level(logging.WARNING, logger="mnist_pipeline.serve"):
        assert gone.judge(wrong()) is True and gone.percent(2) == 0
        gone.reread()
        gone.reread()
    assert sent.reached(1) and len(sent) == 1 and step_backs(gone) == 1
    assert "canary v2's step back not shared with the others" in caplog.text
    assert caplog.text.count("step backs of the other workers not read") == 1  # once a problem
    (tmp_path / "canary-v4.json").write_text("[1")  # damaged
    (tmp_path / "canary-v5.json").write_text('{"why": 5, "pid": 1}')  # not a record
    (tmp_path / "canary-v6.json.tmp").write_text("{}")  # not a record's name
    judge = worker(tmp_path, 103)
    assert judge.stepped_back == {}
    assert judge.judge(wrong(version=4)) is True and sent.reached(2)  # told: none readable
    assert len(sent) == 2
    assert step_backs(judge) == 1


def test_the_run_folder_is_the_servers_own_and_removed_after(tmp_path: Path) -> None:
    with run_folder() as folder:
        assert os.environ["MNIST_SERVE_RUN_DIR"] == folder and Path(folder).is_dir()
        assert SharedStepBacks(Path(folder)).record(2, "why") is None
        assert SharedStepBacks.from_env().read() == {2: "why"}  # type: ignore[union-attr]
    assert not Path(folder).exists() and "MNIST_SERVE_RUN_DIR" not in os.environ
    assert SharedStepBacks.from_env() is None  # one process: nothing to share


def test_a_server_that_gets_no_run_folder_starts_with_workers_judging_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "missing"))  # no temp folder to make
    with caplog.at_level(logging.WARNING, logger="mnist_pipeline.serve"), run_folder() as folder:
        assert folder is None and "MNIST_SERVE_RUN_DIR" not in os.environ
    assert "step backs not shared between the workers" in caplog.text


@pytest.mark.slow
def test_two_workers_step_back_together_and_say_so_once(registry: Registry, tmp_path: Path) -> None:
    pool = np.random.default_rng(4).random((600, 28, 28), dtype=np.float32)
    differ = pool[digits_of(registry, 1, pool) != digits_of(registry, 2, pool)]
    assert len(differ) >= 60, "the two models agree too often to build the traffic"
    serve = {"shadow": "staging", "canary_percent": 100, "canary_min_images": 5}
    log = tmp_path / "serve.log"
    with mnist_server(tmp_path, log, workers=2, **serve) as url:

        def answer(image: np.ndarray) -> int:  # a new connection each: either worker
            reply = httpx.post(f"{url}/predict", json={"images": [image.tolist()]}, timeout=30)
            assert reply.status_code == 200, reply.text
            return reply.json()["model"]["version"]

        answered = []
        for image in differ[:40]:  # until one worker's canary has stepped back
            answered.append(answer(image))
            if answered[-1] == 1:
                break
        assert answered[-1] == 1 and 5 <= answered.count(2) <= 10, answered
        deadline = time.monotonic() + 30
        while "by another worker" not in log.read_text():  # the other's next poll (0.2 s)
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        assert {answer(image) for image in differ[40:60]} == {1}  # on both workers
        text = log.read_text()
        assert text.count("canary v2 stepped back to 0 %: ") == 1, text
        assert text.count("canary v2 stepped back to 0 % by another worker") == 1, text
        with httpx.Client(base_url=url, timeout=30) as api:
            assert samples(api)[(STEP_BACKS, (("reason", "disagreement"), ("version", "2")))] == 1


@pytest.mark.slow
def test_a_one_process_server_shares_nothing_through_an_inherited_run_folder(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `serve` started from inside another server's worker (or any environment that has the
    variable) judges its canary alone: another server's step backs are not its own."""
    elsewhere = tmp_path / "other-server"
    elsewhere.mkdir()
    assert SharedStepBacks(elsewhere).record(2, "stepped back on another server") is None
    monkeypatch.setenv("MNIST_SERVE_RUN_DIR", str(elsewhere))
    image = np.random.default_rng(5).random((1, 28, 28), dtype=np.float32)
    serve = {"shadow": "staging", "canary_percent": 100}
    with mnist_server(tmp_path, tmp_path / "serve.log", **serve) as url:
        reply = httpx.post(f"{url}/predict", json={"images": image.tolist()}, timeout=30)
        assert reply.json()["model"]["version"] == 2, reply.text
        canary_now = httpx.get(f"{url}/model", timeout=30).json()["shadow"]["canary"]
        assert canary_now["stepped_back"] == {} and canary_now["now"] == 100
