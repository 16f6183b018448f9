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
Answer = tuple[float, float, int | None, int]  # (start, end, version, status)


def swapped(log: Path, version: int, was: int | None, workers: int) -> None:
    """Wait (60 s at most) until every worker has logged its swap from v`was` (None: its first
    load) to v`version`: a check of the alias that finds a new version fetches, verifies and
    loads it, which takes longer on a loaded machine (0.7 s with the registry on S3 under this
    test's load)."""
    line = f"now serving {MODEL} v{version} (was {'nothing' if was is None else f'v{was}'})"
    deadline = time.monotonic() + 60
    while log.read_text().count(line) < workers:
        assert time.monotonic() < deadline, f"{workers} x {line!r} not in {log.read_text()}"
        time.sleep(0.05)


def answered_after(answers: list[Answer], since: float, count: int = 50) -> None:
    """Wait (30 s at most) until `count` requests that began after `since` were answered."""
    deadline = time.monotonic() + 30
    while sum(began > since for began, *_ in answers) < count:
        assert time.monotonic() < deadline, f"fewer than {count} answers after {since}"
        time.sleep(0.05)


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


@pytest.mark.parametrize(("backend", "workers"), [("local", 1), ("local", 2), ("s3", 2)])
def test_promotions_under_load_fail_no_request(
    tmp_path: Path, backend: str, workers: int, request: pytest.FixtureRequest
) -> None:
    """Also with the registry on S3 (moto's server), as a replica on another host follows it."""
    root = str(tmp_path / "registry") if backend == "local" else request.getfixturevalue("s3_url")
    registry = Registry(root, MODEL)
    for seed in (2, 1):  # v1 (seed 2) is production; v2 stays staging
        register_candidate(
            registry, candidate_in(exported_candidate(tmp_path / f"m{seed}", seed)), PARAMS
        )
    # (began, done, production version from then on): a move may be seen from when it began
    timeline = [(time.monotonic(), time.monotonic(), 1)]
    answers: list[Answer] = []
    stop_clients = threading.Event()
    image = {"images": [[[0.0] * 28] * 28]}

    def client(url: str) -> None:
        with httpx.Client(timeout=60) as session:
            while not stop_clients.is_set():
                began = time.monotonic()
                try:
                    response = session.post(f"{url}/predict", json=image)
                    version = response.json()["model"]["version"]
                    answers.append((began, time.monotonic(), version, response.status_code))
                except Exception:  # noqa: BLE001 - any failure is counted as a failed request
                    answers.append((began, time.monotonic(), None, 0))

    log = tmp_path / "serve.log"
    with mnist_server(tmp_path, log, workers, root) as url:
        clients = [threading.Thread(target=client, args=(url,), daemon=True) for _ in range(4)]
        for thread in clients:
            thread.start()
        try:  # a failure below stops the clients too, or they would keep pytest from exiting
            # the server answers once one worker is up: the others may still be loading v1
            swapped(log, 1, None, workers)
            answered_after(answers, timeline[0][1])  # under load
            # (began, every worker swapped, version): between the two, either version may answer
            began = time.monotonic()
            registry.promote(2, "production")
            swapped(log, 2, 1, workers)
            timeline.append((began, time.monotonic(), 2))
            answered_after(answers, timeline[-1][1])  # these must all be v2
            began = time.monotonic()
            registry.rollback()
            swapped(log, 1, 2, workers)
            timeline.append((began, time.monotonic(), 1))
            answered_after(answers, timeline[-1][1])  # and these v1
        finally:
            stop_clients.set()
            for thread in clients:
                thread.join(timeout=90)
    assert len(answers) > 100
    assert [a for a in answers if a[3] != 200] == []
    for began, ended, version, _ in answers:
        production = {v for moving, _, v in timeline if moving <= ended}
        recent = [v for _, done, v in timeline if done <= began][-1:]
        moved = {v for moving, done, v in timeline if began < done and moving <= ended}
        allowed = moved | set(recent)
        assert version in allowed and version in production, (began, ended, version, timeline)
    versions = [a[2] for a in sorted(answers)]
    assert 2 in versions and versions[-1] == 1  # it followed both moves


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_stops_the_server_with_status_0(tmp_path: Path, workers: int) -> None:
    """How systemd or Kubernetes stops it: a graceful stop, status 0 with one worker as with
    several (one worker ended with 143, which a supervisor reports as a failure)."""
    import os
    import signal

    registry = Registry(tmp_path / "registry", MODEL)
    register_candidate(registry, candidate_in(exported_candidate(tmp_path / "m", 1)), PARAMS, 0.0)
    started: list = []
    with mnist_server(tmp_path, tmp_path / "serve.log", workers, started=started):
        os.kill(started[0].pid, signal.SIGTERM)  # the server's own process, not its group
        assert started[0].wait(timeout=60) == 0, (tmp_path / "serve.log").read_text()[-2000:]


PHONE_TOKEN = "reviewer-phone-token-0001"


def feedback_project(tmp_path: Path, count: int) -> list[bytes]:
    """A registered model and a tokens file for PHONE_TOKEN in `tmp_path`; `count` PNG digits."""
    from mnist_pipeline.serving.tokens import token_sha256
    from tests.example_helpers import draw_digit

    registry = Registry(tmp_path / "registry", MODEL)
    register_candidate(registry, candidate_in(exported_candidate(tmp_path / "m", 1)), PARAMS, 0.0)
    (tmp_path / "tokens").write_text(f"phone {token_sha256(PHONE_TOKEN)}\n")
    return [draw_digit(tmp_path / f"{i}.png", i).read_bytes() for i in range(count)]


def test_feedback_through_the_real_server_needs_a_token_and_waits_for_review(
    tmp_path: Path,
) -> None:
    from mnist_pipeline.inbox import pending
    from mnist_pipeline.inbox import store as inbox

    digits, token = feedback_project(tmp_path, 3), PHONE_TOKEN
    serve = {"feedback_tokens_file": "tokens", "feedback_rate_per_minute": 2}
    with mnist_server(tmp_path, tmp_path / "serve.log", **serve) as url:

        def send(i: int, headers: dict[str, str]) -> httpx.Response:
            files = {"file": (f"{i}.png", digits[i], "image/png")}
            return httpx.post(
                f"{url}/feedback", files=files, data={"label": "1"}, headers=headers, timeout=30
            )

        anonymous = send(0, {})
        assert anonymous.status_code == 401 and "WWW-Authenticate" in anonymous.headers
        # the client recorded is the TCP peer: a forwarded-for header is anyone's to send
        bearer = {"Authorization": f"Bearer {token}", "X-Forwarded-For": "203.0.113.99"}
        answers = [send(i, bearer) for i in range(3)]
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert int(answers[2].headers["Retry-After"]) >= 1
    assert {a.json()["client"] for a in answers[:2]} == {"127.0.0.1"}
    found = pending.items(tmp_path / "data" / "pending")
    assert {i.sha256 for i in found} == {a.json()["sha256"] for a in answers[:2]}
    assert all(i.claims[0].source == "token:phone" for i in found)
    assert inbox.entries(tmp_path / "data" / "extra") == []


def test_several_workers_also_record_the_tcp_peer_not_a_forwarded_for(tmp_path: Path) -> None:
    """`serve --workers 2` runs uvicorn's own worker processes: none trusts X-Forwarded-For."""
    digits = feedback_project(tmp_path, 4)
    serve = {"feedback_tokens_file": "tokens", "feedback_rate_per_minute": 60}
    bearer = {"Authorization": f"Bearer {PHONE_TOKEN}", "X-Forwarded-For": "203.0.113.99"}
    with mnist_server(tmp_path, tmp_path / "serve.log", 2, **serve) as url:
        answers = [  # four connections: both workers are likely to take some
            httpx.post(
                f"{url}/feedback",
                files={"file": (f"{i}.png", digits[i], "image/png")},
                data={"label": "1"},
                headers=bearer,
                timeout=30,
            )
            for i in range(4)
        ]
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    assert {a.json()["client"] for a in answers} == {"127.0.0.1"}
