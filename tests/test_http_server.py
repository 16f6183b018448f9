"""`mnist-pipeline serve`, a real process on 127.0.0.1: a real digit; promotions under load."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registry
from mnist_pipeline.serving.predict import predict_files
from tests.example_helpers import dark_on_light, test_digits
from tests.process_helpers import mnist_server
from tests.registry_helpers import (
    MODEL,
    PARAMS,
    candidate_in,
    exported_candidate,
    register_layout,
)

pytestmark = pytest.mark.slow


@pytest.mark.e2e
def test_a_real_digit_gets_the_digit_predict_gives(tmp_path: Path, real_run) -> None:
    candidate = register_layout(tmp_path / "registry", real_run, tmp_path / "candidate")
    images, labels = test_digits(real_run.data_dir)
    files = []
    for i in range(8):
        path = tmp_path / f"digit{i}-label{labels[i]}.png"
        dark_on_light(images[i], 3.0, (120, 110), (12 + i, 9)).save(path)
        files.append(path)
    expected = predict_files(candidate / "model.onnx", files).predictions
    with mnist_server(tmp_path, tmp_path / "serve.log") as url:
        upload = [("files", (f.name, f.read_bytes(), "image/png")) for f in files]
        answer = httpx.post(f"{url}/predict", files=upload, timeout=30).json()
    assert [p["digit"] for p in answer["predictions"]] == [p.digit for p in expected]
    assert sum(p.digit == label for p, label in zip(expected, labels, strict=False)) >= 7
    assert answer["model"] == {"name": MODEL, "version": 1}


@pytest.mark.parametrize("workers", [1, 2])
def test_promotions_under_load_fail_no_request(tmp_path: Path, workers: int) -> None:
    registry = Registry(tmp_path / "registry", MODEL)
    for seed in (2, 1):  # v1 (seed 2) is production; v2 stays staging
        register_candidate(
            registry, candidate_in(exported_candidate(tmp_path / f"m{seed}", seed)), PARAMS, 0.0
        )
    timeline = [(time.monotonic(), 1)]  # (when, production version from then on)
    answers: list[tuple[float, float, int | None, int]] = []  # (start, end, version, status)
    stop_clients = threading.Event()
    image = {"images": [[[0.0] * 28] * 28]}

    def client(url: str) -> None:
        with httpx.Client(timeout=10) as session:
            while not stop_clients.is_set():
                began = time.monotonic()
                try:
                    response = session.post(f"{url}/predict", json=image)
                    version = response.json()["model"]["version"]
                    answers.append((began, time.monotonic(), version, response.status_code))
                except Exception:  # noqa: BLE001 - any failure is counted as a failed request
                    answers.append((began, time.monotonic(), None, 0))

    with mnist_server(tmp_path, tmp_path / "serve.log", workers=workers) as url:
        clients = [threading.Thread(target=client, args=(url,)) for _ in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(1.5)
        registry.promote(2, "production")
        timeline.append((time.monotonic(), 2))
        time.sleep(1.5)
        registry.rollback()
        timeline.append((time.monotonic(), 1))
        time.sleep(1.5)
        stop_clients.set()
        for thread in clients:
            thread.join()
    assert len(answers) > 100
    assert [a for a in answers if a[3] != 200] == []
    reload_lag = 0.2 + 0.5  # the alias is checked every 0.2 s; a check can take a while
    for began, ended, version, _ in answers:
        production = {v for t, v in timeline if t <= ended}
        recent = [v for t, v in timeline if t <= began - reload_lag][-1:]
        allowed = {v for t, v in timeline if began - reload_lag < t <= ended} | set(recent)
        assert version in allowed and version in production, (began, ended, version, timeline)
    versions = [a[2] for a in sorted(answers)]
    assert 2 in versions and versions[-1] == 1  # it followed both moves
