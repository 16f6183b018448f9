"""GET /metrics and the JSON access log of `mnist-pipeline serve`: in-process, then real servers
(two worker processes counted as one) scraped and parsed with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from mnist_pipeline.registry import Registry
from mnist_pipeline.serving import served_model
from tests import test_http_api
from tests.example_helpers import draw_digit
from tests.process_helpers import mnist_server
from tests.registry_helpers import model_dir, stored, writable
from tests.test_http_api import TOKEN, client, feedback_api

# The in-process API tests' fixtures: two tiny registered versions, v1 production.
_models, registry = test_http_api._models, test_http_api.registry

IMAGES = {"images": [[[0.0] * 28] * 28, [[1.0] * 28] * 28, [[0.5] * 14 + [0.0] * 14] * 28]}


def parse(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when none)."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def answered(answer: dict) -> list[tuple[str, str, float]]:
    """(version, digit, probability) of each image in a /predict answer."""
    version = str(answer["model"]["version"])
    return [(version, str(p["digit"]), p["top"][0]["probability"]) for p in answer["predictions"]]


def test_metrics_count_requests_images_and_model_events(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(served_model, "RETRY_REFUSED_S", 0.0)  # a refused version retried at once
    api, served = client(registry, max_upload_bytes=20_000)
    started = time.monotonic()
    seen = answered(api.post("/predict", json=IMAGES).json())
    assert api.post("/predict", json={"images": []}).status_code == 422
    assert api.post("/predict", content=b"0" * 30_000).status_code == 413  # before routing
    assert api.get("/no/such/path").status_code == 404
    assert api.request("BREW", "/predict").status_code == 405
    registry.promote(2, "production")
    assert served.refresh() is True
    assert value(parse(api.get("/metrics").text), "mnist_serve_model_version") == 2  # follows
    seen += answered(api.post("/predict", json={"images": IMAGES["images"][:1]}).json())
    registry.rollback()
    assert served.refresh() is True
    onnx = stored(registry, 2, "model.onnx")  # a tampered version made production: refused
    writable(onnx).write_bytes(onnx.read_bytes() + b"\0")
    aliases = json.loads((model_dir(registry) / "aliases.json").read_text())
    aliases["aliases"]["production"] = 2
    (model_dir(registry) / "aliases.json").write_text(json.dumps(aliases))
    assert served.refresh() is False and served.refresh() is False  # one refusal, one problem
    card = model_dir(registry) / "v2" / "card.json"  # its card edited too: refused, not unread
    edited = json.loads(card.read_text()) | {"created": "2000-01-01T00:00:00+00:00"}
    writable(card).write_text(json.dumps(edited))
    assert served.refresh() is False
    (model_dir(registry) / "aliases.json").write_text("{")  # the alias cannot be read at all
    assert served.refresh() is False  # not a refused version: none was named

    response = api.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/")
    samples = parse(response.text)
    requests = "mnist_serve_requests_total"
    assert value(samples, requests, endpoint="/predict", method="POST", status="200") == 2
    assert value(samples, requests, endpoint="/predict", status="422") == 1
    assert value(samples, requests, endpoint="/predict", status="413") == 1
    assert value(samples, requests, endpoint="other", method="GET", status="404") == 1
    assert value(samples, requests, endpoint="/predict", method="other", status="405") == 1
    assert not [s for s in samples if "/no/such/path" in s.labels.values()]
    assert value(samples, "mnist_serve_request_duration_seconds_count", endpoint="/predict") == 5
    took = value(samples, "mnist_serve_request_duration_seconds_sum", endpoint="/predict")
    assert 0 < took < time.monotonic() - started  # seconds, each request timed once
    classified = Counter((version, digit) for version, digit, _ in seen)
    images = {
        (s.labels["version"], s.labels["digit"]): s.value
        for s in samples
        if s.name == "mnist_serve_images_classified_total"
    }
    assert images == classified and {v for v, _ in classified} == {"1", "2"}
    for version in ("1", "2"):
        probabilities = [p for v, _, p in seen if v == version]
        count = value(samples, "mnist_serve_confidence_count", version=version)
        total = value(samples, "mnist_serve_confidence_sum", version=version)
        assert count == len(probabilities) and total == pytest.approx(sum(probabilities))
        below = sum(p <= 0.5 for p in probabilities)
        assert value(samples, "mnist_serve_confidence_bucket", version=version, le="0.5") == below
    events = "mnist_serve_model_events_total"
    counted = [value(samples, events, event=e) for e in ("loaded", "swapped", "refused")]
    assert counted == [1, 2, 2] and value(samples, events, event="unresolved") == 1
    assert value(samples, "mnist_serve_model_version") == 1


@pytest.mark.parametrize("kind", ["image/png", "application/json", "multipart/form-data"])
def test_a_client_gone_mid_upload_is_a_499_not_a_server_error(registry: Registry, kind) -> None:
    api, _ = client(registry)
    headers = [(b"content-type", f"{kind}; boundary=b".encode()), (b"content-length", b"9999")]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    arrived = [{"type": "http.request", "body": b"--b\r\n", "more_body": True}]

    async def receive() -> dict:  # part of the body, then the client is gone
        return arrived.pop() if arrived else {"type": "http.disconnect"}

    started: list[int] = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            started.append(message["status"])

    asyncio.run(api.app(scope, receive, send))  # raises nothing: no "Exception in ASGI app"
    assert started == [499]
    samples = parse(api.get("/metrics").text)
    assert value(samples, "mnist_serve_requests_total", endpoint="/predict", status="499") == 1
    assert value(samples, "mnist_serve_requests_total", status="500") == 0


def test_metrics_count_stored_feedback_by_outcome_and_label(
    registry: Registry, tmp_path: Path
) -> None:
    api = feedback_api(registry, tmp_path / "project")
    digit = draw_digit(tmp_path / "4.png", 4).read_bytes()
    alice = {"Authorization": f"Bearer {TOKEN}"}
    statuses = [
        api.post("/feedback", headers=headers, files={"file": ("4.png", digit)}, data=label)
        for headers, label in (
            (alice, {"label": "4"}),
            (alice, {"label": "4"}),
            (alice, {"label": "9"}),
            ({}, {"label": "4"}),
        )
    ]
    assert [r.status_code for r in statuses] == [201, 200, 201, 401]
    samples = parse(api.get("/metrics").text)
    stored_ = {
        (s.labels["outcome"], s.labels["label"]): s.value
        for s in samples
        if s.name == "mnist_serve_feedback_total"
    }
    assert stored_ == {("pending", "4"): 1, ("known", "4"): 1, ("pending", "9"): 1}
    assert value(samples, "mnist_serve_requests_total", endpoint="/feedback", status="401") == 1


def test_a_failure_to_record_fails_no_request(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from mnist_pipeline.serving.metrics import Metrics

    def broken(*_: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(Metrics, "classified", broken)
    api, _ = client(registry)
    response = api.post("/predict", json=IMAGES)
    assert response.status_code == 200 and len(response.json()["predictions"]) == 3
    assert "recording POST /predict failed" in caplog.text and "disk full" in caplog.text


def per_worker(folder: Path, scratch: Path) -> dict[str, float]:
    """Each worker's answered /predict requests, from its own files in the multiprocess folder."""
    counts = {}
    for pid in {f.stem.rsplit("_", 1)[1] for f in folder.glob("counter_*.db")}:
        alone = scratch / pid
        alone.mkdir(parents=True, exist_ok=True)
        for file in folder.glob(f"*_{pid}.db"):
            shutil.copy(file, alone / file.name)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(alone))
        samples = parse(generate_latest(merged).decode())
        counts[pid] = value(samples, "mnist_serve_requests_total", endpoint="/predict")
    return counts


def settled(folder: Path, scratch: Path, answered: int, timeout_s: float = 10) -> dict[str, float]:
    """per_worker once the counts add up to `answered` (a worker records a request just after
    sending its answer, so the last few may land a moment after the client has them), or as
    they are after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while sum((counts := per_worker(folder, scratch)).values()) != answered:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return counts


@pytest.mark.slow
def test_one_worker_counts_only_its_own_requests_under_an_inherited_multiprocess_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: Registry
) -> None:
    """PROMETHEUS_MULTIPROC_DIR set around `serve` (another app's, or left over): two runs in a
    row each count their own requests, and the inherited folder is left as it was."""
    inherited = tmp_path / "inherited"
    inherited.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(inherited))
    predicted = {"endpoint": "/predict", "method": "POST", "status": "200"}
    for run, requests in enumerate((3, 2)):
        with mnist_server(tmp_path, tmp_path / f"serve{run}.log") as url:
            for _ in range(requests):
                assert httpx.post(f"{url}/predict", json=IMAGES, timeout=30).status_code == 200
            samples = parse(httpx.get(f"{url}/metrics", timeout=30).text)
        assert value(samples, "mnist_serve_requests_total", **predicted) == requests, run
        assert value(samples, "mnist_serve_model_events_total", event="loaded") == 1, run
    assert list(inherited.iterdir()) == []


def test_two_workers_are_counted_as_one_server_even_under_scrapes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: Registry
) -> None:
    temp = tmp_path / "tmp"  # where `serve` makes its PROMETHEUS_MULTIPROC_DIR
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    sent: list[int] = []
    scrapes: list[int] = []
    with mnist_server(tmp_path, tmp_path / "serve.log", workers=2) as url:
        (folder,) = temp.glob("mnist-serve-metrics-*")
        first = httpx.post(f"{url}/predict", json=IMAGES, timeout=30)
        sent.append(first.status_code)
        digits = [digit for _, digit, _ in answered(first.json())]
        loading = threading.Event()

        def predict(requests: int) -> None:
            for _ in range(requests):  # a new connection each: spread over both workers
                sent.append(httpx.post(f"{url}/predict", json=IMAGES, timeout=30).status_code)

        def scrape() -> None:
            while loading.is_set():
                response = httpx.get(f"{url}/metrics", timeout=30)
                scrapes.append(response.status_code)
                parse(response.text)  # always whole and well formed

        deadline = time.monotonic() + 120  # the second worker may still be loading the model
        while time.monotonic() < deadline:  # until both workers answered (mostly the first round)
            loading.set()
            scraper = threading.Thread(target=scrape)
            clients = [threading.Thread(target=predict, args=(20,)) for _ in range(4)]
            for thread in [scraper, *clients]:
                thread.start()
            for thread in clients:
                thread.join()
            loading.clear()
            scraper.join()
            workers = per_worker(folder, tmp_path / "split")
            if len(workers) == 2 and all(workers.values()):
                break
        assert set(sent) == {200} and set(scrapes) == {200} and len(scrapes) > 1
        workers = settled(folder, tmp_path / "split", len(sent))
        assert len(workers) == 2 and all(workers.values()) and sum(workers.values()) == len(sent)

        samples = parse(httpx.get(f"{url}/metrics", timeout=30).text)
        n = len(sent)
        predicted = {"endpoint": "/predict", "method": "POST"}
        assert value(samples, "mnist_serve_requests_total", status="200", **predicted) == n
        assert value(samples, "mnist_serve_request_duration_seconds_count", **predicted) == n
        assert (
            value(samples, "mnist_serve_request_duration_seconds_bucket", le="+Inf", **predicted)
            == n
        )
        for digit, times in Counter(digits).items():
            classified = value(samples, "mnist_serve_images_classified_total", digit=digit)
            assert classified == n * times
        assert value(samples, "mnist_serve_images_classified_total", version="1") == 3 * n
        assert value(samples, "mnist_serve_confidence_count", version="1") == 3 * n
        assert value(samples, "mnist_serve_model_events_total", event="loaded") == 2
        log = (tmp_path / "serve.log").read_text()  # each worker's own lines, INFO included
        assert log.count("INFO: mnist_pipeline.serve: now serving mnist-cnn v1") == 2, log
        served = served_versions(samples)
        assert set(served) == set(workers) and set(served.values()) == {1}

        # A worker killed: uvicorn replaces it; its counts stay, its served version goes.
        killed = next(iter(served))
        os.kill(int(killed), signal.SIGKILL)

        deadline = time.monotonic() + 60
        while True:
            try:  # the replacement may take the connection while it starts
                samples = parse(httpx.get(f"{url}/metrics", timeout=30).text)
            except httpx.TransportError as exc:
                samples, failed = [], exc
            else:
                failed = None
            served = served_versions(samples)
            pids = set(served)
            # the replacement is shown at 0 from its start, and at 1 once it has loaded
            if len(pids) == 2 and killed not in pids and set(served.values()) == {1}:
                break
            assert time.monotonic() < deadline, f"worker {killed} not replaced: {served} {failed}"
            time.sleep(0.5)
        assert value(samples, "mnist_serve_requests_total", status="200", **predicted) == n
        assert value(samples, "mnist_serve_model_events_total", event="loaded") == 3

        # One worker fewer (SIGTTOU to the supervisor): the removed one's served version goes.
        supervisor = parent_of(int(next(iter(pids))))
        os.kill(supervisor, signal.SIGTTOU)
        deadline = time.monotonic() + 60
        while True:
            samples = parse(httpx.get(f"{url}/metrics", timeout=30).text)
            left = set(served_versions(samples))
            if len(left) == 1:
                break
            assert time.monotonic() < deadline, f"a removed worker is still shown: {left}"
            time.sleep(0.5)
        assert left < pids and parent_of(int(next(iter(left)))) == supervisor
        assert value(samples, "mnist_serve_requests_total", status="200", **predicted) == n
    assert list(temp.glob("mnist-serve-metrics-*")) == []  # removed at exit


def test_a_worker_a_restart_started_and_killed_leaves_no_live_gauge() -> None:
    """uvicorn's restart (SIGHUP) kills a new worker that is not ready in time and never adds
    it to its workers: its live gauges must go like a replaced worker's, or every scrape would
    show the dead pid's served version until the server stops."""
    import tempfile
    from types import SimpleNamespace

    from uvicorn import Config

    from mnist_pipeline.serving.metrics import Supervisor

    with tempfile.TemporaryDirectory() as folder:
        files = Path(folder)
        supervisor = Supervisor(Config("app:app", workers=2), sockets=[], folder=folder)
        supervisor.processes = [SimpleNamespace(pid=1001), SimpleNamespace(pid=1002)]
        for pid in (1001, 1002):
            (files / f"gauge_liveall_{pid}.db").write_bytes(b"")
            (files / f"counter_{pid}.db").write_bytes(b"")

        def restart_killing_the_new_worker() -> None:
            (files / "gauge_liveall_1003.db").write_bytes(b"")  # it had loaded its app
            (files / "counter_1003.db").write_bytes(b"")

        supervisor._marking(restart_killing_the_new_worker)
        assert sorted(p.name for p in files.iterdir()) == [
            "counter_1001.db",
            "counter_1002.db",
            "counter_1003.db",  # counts stay counted
            "gauge_liveall_1001.db",
            "gauge_liveall_1002.db",
        ]


def served_versions(samples: list[Sample]) -> dict[str, float]:
    """Each worker's `mnist_serve_model_version` by its pid (0 until it has loaded a model)."""
    return {s.labels["pid"]: s.value for s in samples if s.name == "mnist_serve_model_version"}


def parent_of(pid: int) -> int:
    """The parent process of a live `pid` (Linux /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


@pytest.mark.slow
def test_json_logs_one_object_per_request_and_no_metrics_when_off(
    tmp_path: Path, registry: Registry
) -> None:
    log = tmp_path / "serve.log"
    with mnist_server(tmp_path, log, metrics=False, json_logs=True) as url:
        assert httpx.get(f"{url}/metrics", timeout=30).status_code == 404
        answer = httpx.post(f"{url}/predict", json=IMAGES, timeout=30).json()
        bad = httpx.post(
            f"{url}/predict", content=b"{", headers={"content-type": "image/png"}, timeout=30
        )
        assert bad.status_code == 422
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    by_path = {}
    for entry in entries:
        by_path.setdefault((entry["path"], entry["status"]), []).append(entry)
    (scrape,) = by_path[("/metrics", 404)]
    assert scrape["method"] == "GET" and scrape["endpoint"] == "other"
    (predicted,) = by_path[("/predict", 200)]
    assert predicted["method"] == "POST" and predicted["endpoint"] == "/predict"
    assert predicted["version"] == 1 and predicted["latency_ms"] > 0
    assert predicted["digits"] == [p["digit"] for p in answer["predictions"]]
    top = [p["top"][0]["probability"] for p in answer["predictions"]]
    assert predicted["confidences"] == pytest.approx(top, abs=1e-6)
    (refused,) = by_path[("/predict", 422)]
    assert "version" not in refused and "digits" not in refused
    assert ("/readyz", 200) in by_path  # the readiness checks too, each its own line
