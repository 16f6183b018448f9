"""The shadow challenger in-process: comparisons after real requests, a full queue, a missing or
tampered challenger, live accuracy from /feedback labels, the metrics, and the report's verdict."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.service_params import PromotionParams, ServeParams
from mnist_pipeline.registry import Registry
from mnist_pipeline.serving import shadow_report
from mnist_pipeline.serving.challenger import Challenger
from mnist_pipeline.serving.http_api import create_app
from mnist_pipeline.serving.live import Pairs, Tally
from mnist_pipeline.serving.served_model import ServedModel, load_version
from mnist_pipeline.serving.server import feedback_of
from mnist_pipeline.serving.tokens import token_sha256
from tests.example_helpers import draw_digit
from tests.registry_helpers import MODEL, exported_candidate, production_and_staging, stored
from tests.registry_helpers import writable as unlocked

TOKEN = "labeller-token-000001"


@pytest.fixture(scope="module")
def _models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("challenged")
    return exported_candidate(root / "a", 1), exported_candidate(root / "b", 2)


@pytest.fixture
def registry(tmp_path: Path, _models: tuple[Path, Path]) -> Registry:
    """Two distinct registered versions: v1 production, v2 staging."""
    registry = production_and_staging(tmp_path / "registry", _models)
    assert registry.card("staging")["version"] == 2
    return registry


@pytest.fixture
def digits(tmp_path: Path) -> list[bytes]:
    """PNG digits, each drawn once (distinct bytes)."""
    return [draw_digit(tmp_path / f"digit{d}.png", d).read_bytes() for d in range(10)]


def served_api(registry: Registry, project: Path | None = None, **limits) -> tuple:
    """The app with a challenger (started; its alias checked hourly) and, with `project`,
    /feedback for TOKEN."""
    feedback = None
    if project is not None:
        project.mkdir(parents=True, exist_ok=True)
        (project / "tokens").write_text(f"labeller {token_sha256(TOKEN)}\n")
        limits |= {"feedback_tokens_file": "tokens", "feedback_rate_per_minute": 6000}
    serve = ServeParams(**limits)
    if project is not None:
        feedback = feedback_of(serve, Layout(project))
    served = ServedModel(registry, "production")
    served.refresh()
    challenger = Challenger(registry, serve, seed=7)
    challenger.start(3600, follow_events=False)
    return TestClient(create_app(served, serve, feedback, challenger)), challenger


def samples(api: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The scraped /metrics samples by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(api.get("/metrics").text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def digits_of(registry: Registry, version: int, images: np.ndarray) -> np.ndarray:
    return load_version(registry, str(version)).probabilities(images).argmax(axis=1)


def test_the_shadow_compares_every_answered_image(
    registry: Registry, digits: list[bytes], tmp_path: Path
) -> None:
    api, challenger = served_api(registry, shadow="staging")
    try:
        production = []
        for i in range(0, 10, 2):  # multipart pairs, then one raw body
            files = [("files", (f"{d}.png", digits[d], "image/png")) for d in (i, i + 1)]
            answer = api.post("/predict", files=files).json()
            assert answer["model"] == {"name": MODEL, "version": 1}
            production += [p["digit"] for p in answer["predictions"]]
        raw = api.post("/predict", content=digits[3], headers={"content-type": "image/png"})
        production.append(raw.json()["predictions"][0]["digit"])
        assert challenger.wait_idle(30)
        from mnist_pipeline.data.preprocess import preprocess_bytes

        images = np.stack([preprocess_bytes(digits[d], "d") for d in [*range(10), 3]])
        assert production == digits_of(registry, 1, images).tolist()
        agreed = int((digits_of(registry, 2, images) == np.array(production)).sum())
        shadow = api.get("/model").json()["shadow"]
        assert shadow["model"]["version"] == 2 and shadow["following"] == "staging"
        record = shadow["versions"]["2"]
        assert (record["compared"], record["agreed"], record["skipped"]) == (11, agreed, 0)
        assert record["canary"] == 0 and record["agreement"] == pytest.approx(agreed / 11)
        scraped = samples(api)
        shadowed = "mnist_serve_shadow_images_total"
        got = {
            outcome: scraped.get((shadowed, (("outcome", outcome), ("version", "2"))), 0)
            for outcome in ("agree", "disagree")
        }
        assert got == {"agree": agreed, "disagree": 11 - agreed}
    finally:
        challenger.stop()


def test_a_full_queue_skips_and_counts_and_fails_no_request(
    registry: Registry, digits: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    slow = Challenger.classify

    def stuck(self: Challenger, challenger, images):  # a shadow far slower than production
        release.wait(30)
        return slow(self, challenger, images)

    monkeypatch.setattr(Challenger, "classify", stuck)
    api, challenger = served_api(registry, shadow="staging", shadow_queue_images=2)
    try:
        for i in range(10):
            answer = api.post("/predict", content=digits[i], headers={"content-type": "image/png"})
            assert answer.status_code == 200 and answer.json()["model"]["version"] == 1
        record = api.get("/model").json()["shadow"]["versions"]["2"]
        assert record["skipped"] == 8 and record["compared"] == 0
        assert api.get("/model").json()["shadow"]["queue"] == {"waiting": 2, "limit": 2}
        skipped = (("outcome", "skipped"), ("version", "2"))
        assert samples(api)[("mnist_serve_shadow_images_total", skipped)] == 8
        release.set()
        assert challenger.wait_idle(30)
        record = api.get("/model").json()["shadow"]["versions"]["2"]
        assert (record["compared"], record["skipped"]) == (2, 8)
    finally:
        release.set()
        challenger.stop()


def test_a_missing_or_tampered_shadow_is_a_warning_and_production_answers(
    registry: Registry, digits: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    onnx = stored(registry, 2, "model.onnx")
    unlocked(onnx).write_bytes(onnx.read_bytes() + b"\0")
    for ref, problem in (("no-such-alias", "no-such-alias"), ("2", "model.onnx was modified")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mnist_pipeline.serve"):
            api, challenger = served_api(registry, shadow=ref, canary_percent=100)
        try:
            assert any(problem in r.getMessage() for r in caplog.records), caplog.text
            for d in range(3):
                answer = api.post(
                    "/predict", content=digits[d], headers={"content-type": "image/png"}
                )
                assert answer.status_code == 200 and answer.json()["model"]["version"] == 1
            shadow = api.get("/model").json()["shadow"]
            assert shadow["model"] is None and problem in shadow["problem"]
            assert shadow["versions"] == {} and shadow["canary"]["now"] == 0
        finally:
            challenger.stop()


def test_feedback_labels_score_both_models_and_the_report_judges(
    registry: Registry, digits: list[bytes], tmp_path: Path
) -> None:
    api, challenger = served_api(registry, tmp_path / "project", shadow="staging")
    try:
        answers = []
        for d in range(10):
            answer = api.post("/predict", files=[("files", (f"{d}.png", digits[d], "image/png"))])
            answers.append(answer.json()["predictions"][0]["digit"])
        assert challenger.wait_idle(30)
        from mnist_pipeline.data.preprocess import preprocess_bytes

        images = np.stack([preprocess_bytes(data, "d") for data in digits])
        theirs = digits_of(registry, 2, images).tolist()
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for d in range(6):  # the true digit of six of them (twice: counted once)
            for _ in range(2):
                stored_claim = api.post(
                    "/feedback",
                    headers=bearer,
                    files={"file": (f"{d}.png", digits[d], "image/png")},
                    data={"label": str(d)},
                )
                assert stored_claim.status_code in (200, 201)
        status = api.get("/model").json()
        record = status["shadow"]["versions"]["2"]
        ours_right = sum(answers[d] == d for d in range(6))
        theirs_right = sum(theirs[d] == d for d in range(6))
        assert sum(sum(p.values()) for p in record["labelled"].values()) == 6
        assert record["production_accuracy"] == pytest.approx(ours_right / 6)
        assert record["challenger_accuracy"] == pytest.approx(theirs_right / 6)
        labelled = "mnist_serve_shadow_labelled_total"
        scraped = samples(api)
        right = (("model", "production"), ("outcome", "correct"), ("version", "2"))
        wrong = (("model", "challenger"), ("outcome", "incorrect"), ("version", "2"))
        assert scraped.get((labelled, right), 0) == ours_right
        assert scraped.get((labelled, wrong), 0) == 6 - theirs_right
        found = shadow_report.report(status, PromotionParams())
        assert found[0]["comparison"]["images"] == 6
        assert found[0]["comparison"]["champion_accuracy"] == pytest.approx(ours_right / 6)
    finally:
        challenger.stop()


def tally(table: dict[str, Pairs]) -> Tally:
    return Tally(version=2, compared=500, agreed=400, labelled=table)


def test_the_report_verdict_is_the_paired_test() -> None:
    policy = PromotionParams(significance=0.05)
    # 20 images only the shadow gets right, 2 only production: McNemar p < 0.05
    better = tally({"3": Pairs(both=50, challenger_only=20, production_only=2)})
    assert shadow_report.judge(better, policy).verdict == "better"
    worse = tally({"3": Pairs(both=50, challenger_only=2), "5": Pairs(production_only=20)})
    assert shadow_report.judge(worse, policy).verdict == "worse"
    # 6 against 4 is no evidence either way, whatever the accuracies
    same = tally({"1": Pairs(both=10, challenger_only=6, production_only=4, neither=3)})
    comparison = shadow_report.judge(same, policy)
    assert comparison.verdict == "same" and comparison.n10 == 6 and comparison.n01 == 4
    assert shadow_report.judge(tally({}), policy) is None
    status = {"shadow": {"versions": {"2": better.summary()}}}
    words = shadow_report.lines(shadow_report.report(status, policy))
    assert "would have done better" in words[1] and "72 labelled" in words[1]
    with pytest.raises(Exception, match="no shadow"):
        shadow_report.report({"model": None, "shadow": None}, policy)
