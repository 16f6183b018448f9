"""The server's drift monitor (serving/drift.py) and the reference registration stores
(pipeline/reference.py), in-process on a tiny registered model."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mnist_pipeline.core.errors import GateError
from mnist_pipeline.core.service_params import ServeParams
from mnist_pipeline.monitoring.drift import FEATURES, REFERENCE_FILE, parse_reference
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registry
from mnist_pipeline.serving import alias_events, drift_claim
from mnist_pipeline.serving import drift as serving_drift
from mnist_pipeline.serving.alias_events import emit_if_configured
from mnist_pipeline.serving.drift import DriftMonitor
from mnist_pipeline.serving.drift_claim import DriftClaims
from mnist_pipeline.serving.drift_event import DRIFT_EVENT
from mnist_pipeline.serving.http_api import create_app
from mnist_pipeline.serving.metrics import Metrics
from mnist_pipeline.serving.served_model import ServedModel
from tests.drift_helpers import candidate_with_reference, contract_digits
from tests.registry_helpers import candidate_in, exported_candidate
from tests.reports import MODEL, PARAMS
from tests.test_metrics_endpoint import parse, value


@pytest.fixture(scope="module")
def _candidate(tmp_path_factory: pytest.TempPathFactory):
    return candidate_with_reference(tmp_path_factory.mktemp("drift") / "c")


@pytest.fixture
def served(tmp_path: Path, _candidate) -> ServedModel:
    registry = Registry(tmp_path / "registry", MODEL)
    register_candidate(registry, _candidate, PARAMS)
    served = ServedModel(registry, "production")
    served.refresh()
    return served


def answered(served: ServedModel, digits: np.ndarray):
    loaded = served.current
    return loaded, digits, loaded.probabilities(digits)


def test_registration_stores_the_reference_of_the_test_set_in_the_card(
    served: ServedModel, _candidate
) -> None:
    card = served.current.card
    data = served.registry.read_file(1, REFERENCE_FILE)  # verified against the card's SHA-256
    assert REFERENCE_FILE in card.files
    ref = parse_reference(data, "v1")
    assert ref.images == 200 and set(ref.features) == set(FEATURES)
    answers = np.loadtxt(_candidate.predictions, delimiter=",", skiprows=1)
    digit_shares = np.bincount(answers[:, 2].astype(int), minlength=10) / 200
    assert ref.features["digit"].shares == pytest.approx(digit_shares.tolist())


def test_predictions_other_than_metrics_records_are_refused(tmp_path: Path, _candidate) -> None:
    folder = tmp_path / "c"
    candidate = candidate_with_reference(folder, seed=2)
    candidate.predictions.write_text(candidate.predictions.read_text() + "\n")
    with pytest.raises(GateError, match="predictions.csv has sha256 .* but metrics.json records"):
        register_candidate(Registry(tmp_path / "registry", MODEL), candidate, PARAMS)


def test_normal_traffic_is_quiet_and_a_shift_makes_one_event(served: ServedModel, _candidate):
    sent, metrics = [], Metrics()
    params = ServeParams(drift_window=200, drift_threshold=0.25, drift_cooldown_s=3600)
    monitor = DriftMonitor(served, params, emitter=lambda *event: sent.append(event))
    monitor.metrics = metrics
    digits = contract_digits(_candidate.data_dir)
    monitor.process([answered(served, digits[:150])])
    status = monitor.status()
    assert status["verdict"] == "too few images: 150 of 200" and status["psi"] is None
    monitor.process([answered(served, digits[150:])])
    status = monitor.status()
    assert status["verdict"] == "normal" and status["enabled"] and status["version"] == 1
    assert max(status["psi"].values()) < 0.05 and sent == []
    for start in range(0, 200, 20):  # inverted digits, a request at a time
        monitor.process([answered(served, 1.0 - digits[start : start + 20])])
    monitor.process([answered(served, 1.0 - digits)])  # still drifting: within the cooldown
    status = monitor.status()
    assert status["verdict"] == "drift" and status["events"] == 1 and status["last_event"]
    ((name, payload),) = sent
    assert name == MODEL and payload["version"] == 1 and "ink" in payload["drifted"]
    assert payload["psi"]["ink"] > 0.25 and payload["window"] == 200
    assert payload["summary"].startswith("v1: PSI ")
    samples = parse(metrics.exposition().decode())
    assert value(samples, "mnist_serve_drift_events_total") == 1
    assert value(samples, "mnist_serve_drift_psi", feature="ink") == status["psi"]["ink"]
    assert value(samples, "mnist_serve_drift_judged") == 1


def test_a_shift_however_long_makes_one_event_until_traffic_is_normal_again(
    served: ServedModel, _candidate
) -> None:
    """No cooldown at all: a sustained shift still makes one event; a full window judged normal
    re-arms the monitor, and the next shift makes the second."""
    sent: list[tuple] = []
    params = ServeParams(drift_window=200, drift_threshold=0.25, drift_cooldown_s=0)
    monitor = DriftMonitor(served, params, emitter=lambda *event: sent.append(event))
    digits = contract_digits(_candidate.data_dir)
    for _ in range(5):  # five windows of inverted digits
        monitor.process([answered(served, 1.0 - digits)])
    assert monitor.status()["verdict"] == "drift" and len(sent) == 1
    monitor.process([answered(served, digits[:100])])  # half a window: still drift
    assert monitor.status()["verdict"] == "drift"
    monitor.process([answered(served, digits)])
    assert monitor.status()["verdict"] == "normal" and len(sent) == 1
    monitor.process([answered(served, 1.0 - digits)])
    assert monitor.status()["events"] == len(sent) == 2


def test_workers_and_later_servers_of_one_project_send_one_event_per_shift(
    served: ServedModel,
    _candidate,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each worker (and each restarted server) has its own monitor; the claim file they share
    lets one of them send the shift's event, and none again while the shift lasts, even past
    the cooldown, until some window is judged normal. An event the Prefect server did not take
    is not counted and is tried again. Before, N workers sent N events."""
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # the fake emitter answers
    monkeypatch.setattr(alias_events, "api_problem", lambda: None)  # as if the API answered
    monkeypatch.setattr(serving_drift, "RESEND_S", 0.0)  # a failed send is tried again at once
    sent: list[tuple] = []
    params = ServeParams(drift_window=200, drift_threshold=0.25, drift_cooldown_s=3600)
    path = tmp_path / "project" / ".cache" / "serve" / "drift-m.json"
    reached = [True]  # what the emitter answers: whether a Prefect server took the event

    def worker() -> DriftMonitor:
        emit = lambda *event: sent.append(event) or reached[0]  # noqa: E731
        return DriftMonitor(served, params, emit, DriftClaims(path, 3600))

    digits = contract_digits(_candidate.data_dir)
    shifted = 1.0 - digits
    workers = [worker(), worker(), worker()]  # `serve --workers 3`
    for monitor in workers:
        monitor.process([answered(served, shifted)])
    assert len(sent) == 1 and [m.status()["events"] for m in workers] == [1, 0, 0]
    assert all(m.status()["verdict"] == "drift" for m in workers)
    worker().process([answered(served, shifted)])  # a server restarted within the cooldown
    assert len(sent) == 1
    claim = json.loads(path.read_text())
    path.write_text(json.dumps(claim | {"last_event": time.time() - 3601}))  # an hour later
    worker().process([answered(served, shifted)])  # restarted while the same shift goes on
    assert len(sent) == 1
    worker().process([answered(served, digits)])  # a window judged normal: the shift is over
    assert json.loads(path.read_text())["open"] is False
    reached[0] = False  # the next shift's event: the server does not take it
    retrying = worker()
    retrying.process([answered(served, shifted)])
    assert len(sent) == 2 and retrying.status()["events"] == 0  # not counted: given back
    reached[0] = True
    retrying.process([answered(served, shifted)])  # its next drifted window tries again
    assert len(sent) == 3 and retrying.status()["events"] == 1
    worker().process([answered(served, shifted)])
    assert len(sent) == 3  # and that one holds
    path.write_text("[[[")  # damaged: an event goes out, and the file is written afresh
    worker().process([answered(served, shifted)])
    assert len(sent) == 4 and '"last_event"' in path.read_text()
    racing = DriftClaims(tmp_path / "race.json", 3600)  # its time read before another's landed
    assert racing.claim(1000.0) == 0.0
    racing.close(since=999.0)  # a normal window that still holds images from before the event
    assert json.loads((tmp_path / "race.json").read_text())["open"] is True
    racing.close(since=1001.0)  # one of images that all came in after it: the shift is over
    assert racing.claim(999.5) == 3600.5  # and the cooldown still holds: wait it out
    assert racing.claim(5000.0) == 0.0  # the next shift, past the cooldown
    assert racing.claim(5000.0 + 23 * 3600) == math.inf  # that shift still open
    assert racing.claim(5000.0 + 25 * 3600) == 0.0  # open a day: its event may go again
    blocked = DriftClaims(tmp_path / "a-file" / "drift.json", 3600)  # cannot be written at all
    (tmp_path / "a-file").write_text("")
    with caplog.at_level("WARNING"):
        assert blocked.claim(time.time()) == 0.0  # a missed retraining is worse than a second
    assert "drift: event not coordinated with other processes" in caplog.text


def test_giving_back_a_claim_keeps_one_another_process_made_since(tmp_path: Path) -> None:
    """An event that did not go out gives its own claim back, never a newer one."""
    path = tmp_path / "drift.json"
    mine, other = DriftClaims(path, 3600), DriftClaims(path, 3600)
    assert mine.claim(1000.0) == 0.0
    newer = {"last_event": 5000.0, "before": 1000.0, "open": True}  # another process's
    path.write_text(json.dumps(newer))
    mine.give_back(1000.0)
    assert json.loads(path.read_text()) == newer
    assert other.claim(5010.0) == math.inf  # that shift's event went out: none again


@pytest.mark.parametrize("content", ["[1]", "null", '"x"'])
def test_a_claim_file_of_another_json_shape_is_written_afresh(tmp_path: Path, content) -> None:
    path = tmp_path / "drift.json"
    path.write_text(content)
    assert DriftClaims(path, 3600).claim(1000.0) == 0.0
    assert json.loads(path.read_text()) == {"last_event": 1000.0, "before": None, "open": True}


def test_a_normal_window_holding_images_from_before_an_event_leaves_its_shift_open(
    served: ServedModel, _candidate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shift closes only on a normal window of images that all came in after its event."""
    later = [0.0]
    clock = SimpleNamespace(
        time=lambda: time.time() + later[0],
        monotonic=lambda: time.monotonic() + later[0],
        sleep=time.sleep,
    )
    monkeypatch.setattr(serving_drift, "time", clock)
    path = tmp_path / "drift.json"
    params = ServeParams(drift_window=200, drift_threshold=0.25, drift_cooldown_s=3600)
    monitor = DriftMonitor(served, params, lambda *_: True, DriftClaims(path, 3600))
    digits = contract_digits(_candidate.data_dir)
    monitor.process([answered(served, digits)])  # a normal window of images from now
    opened = {"last_event": time.time() + 5, "before": None, "open": True}  # another's, later
    path.write_text(json.dumps(opened))
    later[0] = 20.0  # past the monitor's wait between closes
    monitor.process([answered(served, digits[:4])])  # 196 of the 200 from before the event
    assert monitor.status()["verdict"] == "normal"
    assert json.loads(path.read_text())["open"] is True


def test_a_claim_that_could_not_be_given_back_is_taken_again_by_its_own_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An event the Prefect server did not take gives its claim back; where that write fails
    (a full disk), the claim stays recorded, open. Other processes wait for it, as for any
    open claim; the process that made it must not: it once took its own claim for another's
    and sent no event for the rest of the shift."""
    path = tmp_path / "drift.json"
    mine, other = DriftClaims(path, 3600), DriftClaims(path, 3600)
    assert mine.claim(1000.0) == 0.0

    def disk_full(*_args, **_kwargs) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(drift_claim, "write_json", disk_full)
    with caplog.at_level("WARNING"):
        mine.give_back(1000.0)
    assert "drift: unsent event still recorded" in caplog.text
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"last_event": 1000.0, "before": None, "open": True}
    assert other.claim(1010.0) == math.inf  # another process: an open shift's event
    assert mine.claim(1010.0) == 0.0  # its own unsent one: claimed again, no cooldown
    assert json.loads(path.read_text()) == {"last_event": 1010.0, "before": None, "open": True}
    assert mine.claim(1020.0) == math.inf  # that claim stands like any other


def test_a_window_filled_by_a_few_images_is_judged_at_once(served: ServedModel, _candidate):
    """A window is judged every 1/50 of it; one that filled between two judgements was left
    "too few images: 200 of 200", unjudged until more came."""
    monitor = DriftMonitor(served, ServeParams(drift_window=200), emitter=lambda *_: True)
    digits = contract_digits(_candidate.data_dir)
    for part in (digits[:195], digits[195:199], digits[199:200]):
        monitor.process([answered(served, part)])
    status = monitor.status()
    assert status["images"] == 200 and status["verdict"] == "normal", status
    assert status["psi"] is not None


def test_a_shift_that_starts_within_the_cooldown_of_a_closed_one_waits_it_out(
    served: ServedModel, _candidate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted server (or another worker) sees a new shift while the last event's shift is
    closed but its cooldown not over: its event goes once the cooldown ends, as it does from
    the process that sent the last one. Before, the claim refused it and the monitor stayed
    silent for the rest of the shift."""
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # the fake emitter answers
    monkeypatch.setattr(alias_events, "api_problem", lambda: None)
    sent: list[tuple] = []
    params = ServeParams(drift_window=200, drift_threshold=0.25, drift_cooldown_s=3600)
    path = tmp_path / "drift.json"
    path.write_text(json.dumps({"last_event": time.time() - 3000, "open": False}))
    later = [0.0]  # the monitor's clock, ahead of the real one by this much
    clock = SimpleNamespace(
        time=lambda: time.time() + later[0],
        monotonic=lambda: time.monotonic() + later[0],
        sleep=time.sleep,
    )
    monkeypatch.setattr(serving_drift, "time", clock)
    emit = lambda *event: sent.append(event) or True  # noqa: E731
    monitor = DriftMonitor(served, params, emit, DriftClaims(path, 3600))
    shifted = 1.0 - contract_digits(_candidate.data_dir)
    monitor.process([answered(served, shifted)])
    assert sent == [] and monitor.status()["verdict"] == "drift"
    later[0] = 601.0  # the cooldown ends
    monitor.process([answered(served, shifted)])
    assert len(sent) == 1 and monitor.status()["events"] == 1
    monitor.process([answered(served, shifted)])  # the same shift: no second event
    assert len(sent) == 1


def test_a_prefect_api_that_does_not_answer_is_asked_again_later_and_nothing_is_claimed(
    served: ServedModel, _candidate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked before the claim, so a server stopped during the check leaves no claim that
    would block the shift; and not again at every batch while the API stays down."""
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    asked: list[int] = []
    monkeypatch.setattr(
        alias_events, "api_problem", lambda: asked.append(1) or ConnectionError("refused")
    )
    sent: list[tuple] = []
    path = tmp_path / "drift-m.json"
    params = ServeParams(drift_window=200, drift_threshold=0.25, drift_cooldown_s=3600)
    monitor = DriftMonitor(
        served, params, lambda *e: sent.append(e) or True, DriftClaims(path, 3600)
    )
    shifted = 1.0 - contract_digits(_candidate.data_dir)
    monitor.process([answered(served, shifted)])
    monitor.process([answered(served, shifted)])  # within RESEND_S: not asked again
    assert asked == [1] and sent == [] and not path.exists() and monitor.status()["events"] == 0
    monkeypatch.setattr(alias_events, "api_problem", lambda: None)
    monkeypatch.setattr(monitor, "_send_due", 0.0)  # RESEND_S later
    monitor.process([answered(served, shifted)])
    assert len(sent) == 1 and monitor.status()["events"] == 1


def test_the_event_follows_its_claim_without_a_second_health_check(
    served: ServedModel, _candidate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the monitor's own emitter, the API is asked once per event, before the claim; a
    second check between claim and event (up to 5 s) would widen the window in which a server
    stopped leaves a claim whose event never went out."""
    from mnist_pipeline.pipeline import announce

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    asked: list[int] = []
    monkeypatch.setattr(alias_events, "api_problem", lambda: asked.append(1) and None)
    sent: list[tuple] = []
    monkeypatch.setattr(announce, "emit", lambda *event: sent.append(event) or True)
    params = ServeParams(drift_window=200, drift_threshold=0.25, drift_cooldown_s=3600)
    monitor = DriftMonitor(served, params, claims=DriftClaims(tmp_path / "d.json", 3600))
    monitor.process([answered(served, 1.0 - contract_digits(_candidate.data_dir))])
    assert asked == [1] and monitor.status()["events"] == 1
    ((event, model, payload),) = sent
    assert (event, model, payload["version"]) == (DRIFT_EVENT, served.registry.name, 1)


def test_without_a_prefect_api_one_shift_is_counted_once_across_workers(
    served: ServedModel, _candidate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing to send to: the first worker's claim stands, so the metric and the status count
    the shift once, not once per worker."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    tried: list[tuple] = []
    params = ServeParams(drift_window=200, drift_threshold=0.25, drift_cooldown_s=3600)
    claims = tmp_path / "drift-m.json"
    workers = [
        DriftMonitor(served, params, lambda *e: tried.append(e) or False, DriftClaims(claims, 3600))
        for _ in range(3)
    ]
    shifted = 1.0 - contract_digits(_candidate.data_dir)
    for monitor in workers:
        monitor.process([answered(served, shifted)])
    assert [m.status()["events"] for m in workers] == [1, 0, 0] and len(tried) == 1


def test_an_event_for_a_prefect_api_that_does_not_answer_is_not_taken_for_sent(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Prefect's emitter only queues an event: without the health check a server that is down
    would count as one that took it, and the shift's claim would be spent."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{port}/api")
    with caplog.at_level("WARNING", logger="mnist_pipeline.serve"):
        assert emit_if_configured(DRIFT_EVENT, "m", {"version": 1}) is False
    assert f"not sent: the Prefect API at http://127.0.0.1:{port}/api does not answer" in (
        caplog.text
    )


CLAIM = (
    "import sys, time; from pathlib import Path; "
    "from mnist_pipeline.serving.drift_claim import DriftClaims; "
    "claims = DriftClaims(Path(sys.argv[1]), 3600); "
    "go = Path(sys.argv[2]); "
    "[time.sleep(0.005) for _ in iter(lambda: go.exists(), True)]; "
    "print(claims.claim(time.time()))"
)


def test_processes_claiming_at_once_send_one_event(tmp_path: Path) -> None:
    """The file lock is what makes one winner among processes judging the same moment."""
    import subprocess
    import sys

    path, go = tmp_path / "drift.json", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIM, str(path), str(go)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    time.sleep(1.0)  # all started and waiting
    go.touch()
    answers = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert sorted(answers) == ["0.0"] + ["inf"] * 5, answers


def test_within_the_cooldown_a_new_shift_makes_no_event(
    served: ServedModel, _candidate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every event is taken (the emitter says so): only the cooldown holds back the second."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    sent: list[tuple] = []
    params = ServeParams(drift_window=200, drift_threshold=0.25, drift_cooldown_s=3600)
    monitor = DriftMonitor(served, params, emitter=lambda *event: sent.append(event) or True)
    digits = contract_digits(_candidate.data_dir)
    verdicts = []
    for shifted in (1.0 - digits, digits, 1.0 - digits):  # shift, normal, shift again
        monitor.process([answered(served, shifted)])
        verdicts.append(monitor.status()["verdict"])
    assert verdicts == ["drift", "normal", "drift"]
    assert len(sent) == 1 and monitor.status()["events"] == 1


def test_a_version_without_a_reference_is_not_monitored_and_answers_as_ever(
    tmp_path: Path,
) -> None:
    registry = Registry(tmp_path / "registry", MODEL)
    register_candidate(registry, candidate_in(exported_candidate(tmp_path / "old", 3)), PARAMS)
    served = ServedModel(registry, "production")
    served.refresh()
    with TestClient(create_app(served, ServeParams(drift_window=200))) as api:  # its lifespan
        images = {"images": np.zeros((12, 28, 28)).tolist()}
        assert api.post("/predict", json=images).status_code == 200
        deadline = time.monotonic() + 30
        while api.get("/model").json()["drift"]["version"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        state = api.get("/model").json()["drift"]
    assert state["enabled"] is False and state["verdict"] is None and state["version"] == 1
    assert f"v1 has no {REFERENCE_FILE}" in state["problem"]
    off = TestClient(create_app(served, ServeParams(drift=False))).get("/model").json()
    assert off["drift"] == {"enabled": False, "problem": "serve.drift is false"}


def test_the_served_versions_reference_is_read_before_any_traffic(served: ServedModel) -> None:
    with TestClient(create_app(served, ServeParams(drift_window=200))) as api:
        deadline = time.monotonic() + 30  # the monitor looks about once a second while idle
        while api.get("/model").json()["drift"]["version"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        state = api.get("/model").json()["drift"]
    assert state["enabled"] is True and state["version"] == 1 and state["problem"] is None
    assert state["verdict"] == "too few images: 0 of 200" and state["seen"] == 0


def test_the_app_feeds_the_monitor_off_the_response_path(served: ServedModel, _candidate):
    digits = contract_digits(_candidate.data_dir)
    with TestClient(create_app(served, ServeParams(drift_window=200))) as api:
        for start in range(0, 200, 50):
            inverted = (1.0 - digits[start : start + 50]).tolist()
            assert api.post("/predict", json={"images": inverted}).status_code == 200
        deadline = time.monotonic() + 30
        while api.get("/model").json()["drift"]["events"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        state = api.get("/model").json()["drift"]
        scraped = parse(api.get("/metrics").text)
    assert state["verdict"] == "drift" and state["events"] == 1 and state["images"] == 200
    assert value(scraped, "mnist_serve_drift_events_total") == 1


def test_a_predict_is_answered_while_the_monitor_is_still_at_its_images(
    served: ServedModel, _candidate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The features of a request's images are computed after its answer went out: one held
    up until then has not finished when the answer arrives."""
    from mnist_pipeline.monitoring import drift as monitoring_drift

    answered_yet, finished, features = threading.Event(), [], monitoring_drift.features

    def held(*args, **kwargs):
        answered_yet.wait(20)  # on the request path this would hold the answer 20 s
        finished.append(answered_yet.is_set())
        return features(*args, **kwargs)

    monkeypatch.setattr(monitoring_drift, "features", held)
    digits = contract_digits(_candidate.data_dir)[:10]
    with TestClient(create_app(served, ServeParams(drift_window=200))) as api:
        try:
            assert api.post("/predict", json={"images": digits.tolist()}).status_code == 200
            assert finished == []  # not computed before the answer
        finally:
            answered_yet.set()
        deadline = time.monotonic() + 30
        while api.get("/model").json()["drift"]["seen"] < 10:  # then computed, off the path
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert finished == [True]


def test_a_new_served_version_starts_an_empty_window_against_its_own_reference(
    served: ServedModel, _candidate, tmp_path: Path
) -> None:
    monitor = DriftMonitor(served, ServeParams(drift_window=200), emitter=lambda *_: True)
    monitor.metrics = metrics = Metrics()
    digits = contract_digits(_candidate.data_dir)
    monitor.process([answered(served, 1.0 - digits)])
    judged = parse(metrics.exposition().decode())
    assert value(judged, "mnist_serve_drift_psi", feature="ink") > 1
    assert value(judged, "mnist_serve_drift_judged") == 1
    old = answered(served, digits[:100])
    monitor.process([old])
    assert monitor.status()["images"] == 200 and monitor.status()["version"] == 1
    unmeasured = candidate_in(exported_candidate(tmp_path / "v2", 4))
    register_candidate(served.registry, unmeasured, PARAMS)
    served.ref = "2"
    assert served.refresh() is True
    monitor.process([old])  # answered by v1 just before the swap: not v2's traffic
    assert monitor.status()["images"] == 200 and monitor.status()["version"] == 1
    monitor.process([answered(served, digits[:100])])
    state = monitor.status()
    assert state["version"] == 2 and state["images"] == 0 and state["enabled"] is False
    samples = parse(metrics.exposition().decode())  # v1's window is not v2's: no PSI kept
    assert all(value(samples, "mnist_serve_drift_psi", feature=f) == 0 for f in FEATURES)
    assert ("mnist_serve_drift_judged", 0) in [(s.name, s.value) for s in samples]  # no verdict
    assert state["verdict"] is None and f"v2 has no {REFERENCE_FILE}" in state["problem"]


def test_a_reference_the_store_could_not_give_is_read_again_later(
    served: ServedModel, _candidate, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnist_pipeline.core.errors import RegistryError

    monitor = DriftMonitor(served, ServeParams(drift_window=200), emitter=lambda *_: True)
    digits = contract_digits(_candidate.data_dir)
    read_file = served.registry.read_file

    def store_down(*args: object) -> bytes:
        raise RegistryError(f"{served.registry.location}/v1/{REFERENCE_FILE}: unreachable")

    monkeypatch.setattr(served.registry, "read_file", store_down)
    monitor.process([answered(served, digits[:100])])
    state = monitor.status()
    assert (
        state["enabled"] is False and "unreachable: not monitored; read again" in state["problem"]
    )
    # GET /model answers anyone: the store's folder is not named there (the log names it)
    assert state["problem"].startswith("<registry>/")
    assert served.registry.storage.location not in state["problem"]
    monkeypatch.setattr(served.registry, "read_file", read_file)  # the store is back
    monitor.process([answered(served, digits[:100])])
    assert monitor.status()["enabled"] is False  # not before REREAD_S
    monitor._retry_at = 0.0  # as if REREAD_S had passed
    monitor.process([answered(served, digits[:100])])
    state = monitor.status()
    assert state["enabled"] is True and state["problem"] is None and state["images"] == 100


def test_the_queue_holds_a_bounded_number_of_images_not_batches(
    served: ServedModel, _candidate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving_drift, "QUEUE_IMAGES", 100)
    monitor = DriftMonitor(served, ServeParams(drift_window=200), emitter=lambda *_: True)
    digits = contract_digits(_candidate.data_dir)[:60]
    batch = answered(served, digits)
    monitor.offer(*batch)
    monitor.offer(*batch)  # 120 > 100: skipped, its images counted
    assert monitor.status()["skipped"] == 60
    monitor.start(None)  # the thread empties the queue ...
    deadline = time.monotonic() + 30
    while monitor.status()["seen"] < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    monitor.offer(*batch)  # ... so there is room again
    while monitor.status()["seen"] < 120 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert monitor.status()["seen"] == 120 and monitor.status()["skipped"] == 60


def test_a_batch_larger_than_the_window_counts_every_image_seen(
    served: ServedModel, _candidate
) -> None:
    monitor = DriftMonitor(served, ServeParams(drift_window=200), emitter=lambda *_: True)
    digits = np.concatenate([contract_digits(_candidate.data_dir)] * 2)
    monitor.process([answered(served, digits)])
    state = monitor.status()
    assert state["images"] == 200 and state["seen"] == len(digits) > 200  # a window, all seen


@pytest.mark.parametrize(
    ("window", "threshold", "refused"),
    [
        (10, 0.25, "drift_window 10 is under 200 images"),
        (150, 5.0, "drift_window 150 is under 200 images"),  # peaks of 0.78 by chance there
        (500, 0.05, "within chance for a drift_window of 500 images: normal traffic's PSI"),
        (200, 0.2, "at least 50/N = 0.25 (or the window at least 250 images)"),
    ],
)
def test_a_window_and_threshold_that_chance_crosses_are_refused(
    window: int, threshold: float, refused: str
) -> None:
    with pytest.raises(ValueError, match="drift_") as error:
        ServeParams(drift_window=window, drift_threshold=threshold)
    assert refused in str(error.value)
    ServeParams(drift_window=window, drift_threshold=threshold, drift=False)  # no monitor
    ServeParams(drift_window=max(window, 200), drift_threshold=50 / max(window, 200))


def test_normal_traffic_makes_no_event_at_the_smallest_window_allowed(
    served: ServedModel, _candidate
) -> None:
    """Digits drawn from the reference's own images, 6,000 of them: a window of 200 (the least
    the default threshold allows) stays quiet, where one of 100 would start retraining."""
    digits = contract_digits(_candidate.data_dir)
    stream = digits[np.random.default_rng(0).integers(0, len(digits), 6000)]
    events = {}
    for window in (200, 100):
        sent: list[tuple] = []
        params = ServeParams.model_construct(
            **(ServeParams().model_dump() | {"drift_window": window, "drift_cooldown_s": 0})
        )  # 100 is refused: built unchecked to show why
        monitor = DriftMonitor(served, params, emitter=lambda *event, to=sent: to.append(event))
        for start in range(0, len(stream), 20):  # requests of 20 images
            monitor.process([answered(served, stream[start : start + 20])])
        events[window] = len(sent)
    assert events[200] == 0 and events[100] >= 1, events


def test_a_dataset_fetched_since_evaluate_is_refused_before_its_images_are_read(
    tmp_path: Path,
) -> None:
    """Registration reads the MNIST test images beside the candidate (the drift reference, the
    paired comparison): another dataset there since evaluate would pair the model's answers
    with other images, so it is refused, naming the stage to rerun, and nothing is stored."""
    from tests.synthetic import make_dataset, write_data_dir

    candidate = candidate_with_reference(tmp_path / "c")
    write_data_dir(candidate.data_dir, make_dataset(n_test=200, seed=9))  # another fetch
    registry = Registry(tmp_path / "registry", MODEL)
    with pytest.raises(
        GateError, match=r"refusing to register: metrics.json was measured on "
    ) as refused:
        register_candidate(registry, candidate, PARAMS)
    assert "run `mnist-pipeline train` and `evaluate` again" in str(refused.value)
    assert registry.version_numbers() == []
