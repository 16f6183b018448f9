"""The shadow challenger in-process: comparisons after real requests, a full queue, a missing or
tampered challenger, live accuracy from /feedback labels, the metrics, and the report's verdict."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.service_params import PromotionParams
from mnist_pipeline.registry import Registry
from mnist_pipeline.serving import shadow_report
from mnist_pipeline.serving.challenger import Challenger
from mnist_pipeline.serving.live import Answered, LabelMemory, Pairs, Tally
from tests import challenger_helpers
from tests.challenger_helpers import TOKEN, digits_of, samples, served_api, uploads
from tests.registry_helpers import (
    MODEL,
    PARAMS,
    candidate_in,
    exported_candidate,
    production_and_staging,
    stored,
)
from tests.registry_helpers import writable as unlocked

PNG = {"content-type": "image/png"}
_models, registry = challenger_helpers._models, challenger_helpers.registry  # fixtures
digits = challenger_helpers.digits


def test_the_shadow_compares_every_answered_image(
    registry: Registry, digits: list[bytes], tmp_path: Path
) -> None:
    api, challenger = served_api(registry, shadow="staging")
    try:
        production = []
        for i in range(0, 10, 2):  # multipart pairs, then one raw body
            answer = api.post("/predict", files=uploads(digits, i, i + 1)).json()
            assert answer["model"] == {"name": MODEL, "version": 1}
            production += [p["digit"] for p in answer["predictions"]]
        raw = api.post("/predict", content=digits[3], headers=PNG)
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


def test_agreements_and_disagreements_are_each_counted(
    _models: tuple[Path, Path], digits: list[bytes], tmp_path: Path
) -> None:
    """The fixture's two random models disagree on every image. Here the challenger is
    production's model with one digit's logit raised by the median margin over these images,
    so that it agrees on some and not on others: each is counted, in GET /model and /metrics."""
    from mnist_pipeline.data.preprocess import preprocess_bytes
    from mnist_pipeline.model.network import logits_layer
    from mnist_pipeline.pipeline.register import register_candidate
    from mnist_pipeline.serving.served_model import load_version

    images = np.stack([preprocess_bytes(data, "d") for data in digits])
    alone = Registry(tmp_path / "alone", MODEL)
    register_candidate(alone, candidate_in(_models[1]), PARAMS)  # production's model (seed 2)
    log_p = np.log(load_version(alone, "1").probabilities(images).astype(np.float64))
    rival = int(np.argsort(log_p[0])[-2])  # the first image's second choice
    margins = np.sort(log_p.max(axis=1) - log_p[:, rival])
    middle = float(margins[len(margins) // 2 - 1] + margins[len(margins) // 2]) / 2

    def favour_rival(model) -> None:
        logits_layer(model).bias[rival] += middle

    near = exported_candidate(tmp_path / "near", 2, favour_rival, accuracy=0.91)
    registry = production_and_staging(tmp_path / "registry", (near, _models[1]))
    agreed = int((digits_of(registry, 1, images) == digits_of(registry, 2, images)).sum())
    assert 0 < agreed < len(images)  # the construction gives a mix
    api, challenger = served_api(registry, shadow="staging")
    try:
        for first in range(0, len(digits), 4):  # batches that mix agreeing and other images
            batch = uploads(digits, *range(first, min(first + 4, len(digits))))
            assert api.post("/predict", files=batch).json()["model"]["version"] == 1
        assert challenger.wait_idle(30)
        record = api.get("/model").json()["shadow"]["versions"]["2"]
        assert (record["compared"], record["agreed"]) == (len(images), agreed)
        assert record["agreement"] == pytest.approx(agreed / len(images))
        shadowed = "mnist_serve_shadow_images_total"
        got = {
            outcome: samples(api).get((shadowed, (("outcome", outcome), ("version", "2"))))
            for outcome in ("agree", "disagree")
        }
        assert got == {"agree": agreed, "disagree": len(images) - agreed}
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
        for i in range(0, 10, 2):  # two images a request: the first fills the queue
            answer = api.post("/predict", files=uploads(digits, i, i + 1))
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


def test_queued_images_are_compared_by_the_challenger_they_were_queued_for(
    registry: Registry,
) -> None:
    """staging moves (here back to production's version) while images wait in the queue: they
    are compared with, and counted for, the challenger that was there when they were answered."""
    from mnist_pipeline.core.service_params import ServeParams
    from mnist_pipeline.serving.served_model import load_version

    challenger = Challenger(registry, ServeParams(shadow="staging"), seed=7)
    assert challenger.model.refresh() and challenger.model.current.version == 2
    production = load_version(registry, "1")
    images = np.random.default_rng(3).random((5, 28, 28), dtype=np.float32)
    reply = challenger.answer(production, images, None)
    assert reply.loaded.version == 1  # shadowed, not a canary
    challenger.model.current = production  # the alias moved before the queue was emptied
    challenger._shadow_group([challenger._jobs.get()])
    assert set(challenger.tallies) == {(2, 1)} and challenger.tallies[2, 1].compared == 5
    assert challenger.tallies[2, 1].agreed == int(
        (digits_of(registry, 1, images) == digits_of(registry, 2, images)).sum()
    )


def test_the_shadow_thread_classifies_a_moments_requests_at_once(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests queued together are classified in one call per challenger, and each is still
    recorded against the production version that answered it."""
    from mnist_pipeline.core.service_params import ServeParams
    from mnist_pipeline.serving.served_model import load_version

    challenger = Challenger(registry, ServeParams(shadow="staging"), seed=7)
    assert challenger.model.refresh() and challenger.model.current.version == 2
    calls: list[int] = []
    classify = challenger.classify
    monkeypatch.setattr(challenger, "classify", lambda c, d: calls.append(len(d)) or classify(c, d))
    rng = np.random.default_rng(5)
    batches = [rng.random((n, 28, 28), dtype=np.float32) for n in (1, 3, 2)]
    for images in batches:  # queued before the thread starts: one gathering takes them all
        challenger.answer(load_version(registry, "1"), images, None)
    challenger._thread = threading.Thread(target=challenger._work, daemon=True)
    challenger._thread.start()
    assert challenger.wait_idle(30)
    challenger.stop()
    challenger._thread.join(10)
    assert calls == [6] and not challenger._thread.is_alive()
    every = np.concatenate(batches)
    assert challenger.tallies[2, 1].compared == 6
    assert challenger.tallies[2, 1].agreed == int(
        (digits_of(registry, 1, every) == digits_of(registry, 2, every)).sum()
    )


def test_a_challenger_compared_with_two_production_versions_keeps_them_apart(
    registry: Registry, digits: list[bytes], tmp_path: Path
) -> None:
    """Production moves from v1 to v3 while v2 is shadowed: v2's counts against each are kept
    apart. GET /model shows the tally against v3 under `versions` and the one against v1 under
    `earlier`; a label that arrives after the move for an image v1 answered scores against v1;
    the report judges each pair."""
    from mnist_pipeline.core.service_params import ServeParams
    from mnist_pipeline.data.preprocess import preprocess_bytes
    from mnist_pipeline.pipeline.register import register_candidate
    from mnist_pipeline.serving.served_model import load_version

    challenger = Challenger(registry, ServeParams(shadow="staging"), seed=7)
    assert challenger.model.refresh() and challenger.model.current.version == 2
    register_candidate(registry, candidate_in(exported_candidate(tmp_path / "c", 3)), PARAMS)
    images = np.stack([preprocess_bytes(data, "d") for data in digits])
    for version, part in ((1, slice(0, 6)), (3, slice(6, 10))):
        reply = challenger.answer(load_version(registry, str(version)), images[part], digits[part])
        assert reply.loaded.version == version  # shadowed, not a canary
        challenger._shadow_group([challenger._jobs.get()])
    challenger.label(hashlib.sha256(digits[0]).hexdigest(), 0)  # answered by v1, labelled now

    status = challenger.status(3)
    latest, earlier = status["versions"], status["earlier"]
    assert list(latest) == ["2"] and len(earlier) == 1
    theirs = digits_of(registry, 2, images)
    for record, version, part in ((latest["2"], 3, slice(6, 10)), (earlier[0], 1, slice(0, 6))):
        ours = digits_of(registry, version, images[part])
        assert record["production"] == version
        assert (record["compared"], record["agreed"]) == (
            len(ours),
            int((ours == theirs[part]).sum()),
        )
    assert latest["2"]["labelled"] == {} and sum(earlier[0]["labelled"]["0"].values()) == 1
    found = shadow_report.report({"shadow": status}, PromotionParams())
    assert [(e["version"], e["production"], e["comparison"] is None) for e in found] == [
        (2, 3, True),
        (2, 1, False),
    ]
    assert shadow_report.lines(found)[0].startswith("v2 against v3: compared on 4 images")
    broken = Tally(version=4, production=3, failed=12).summary() | {"comparison": None}
    assert shadow_report.lines([broken])[0].endswith("; failed on 12 images")


def test_a_canary_is_judged_on_its_records_against_every_production_version(
    registry: Registry,
) -> None:
    """Its failures count whoever production is: 6 against v1 and 6 against v3 are 12, over
    serve.canary_min_images (10), and it steps back; GET /model shows the record against the
    version production serves, even when a late job against the older one came after."""
    from mnist_pipeline.core.service_params import ServeParams

    limits = ServeParams(shadow="staging", canary_percent=50, canary_min_images=10)
    challenger = Challenger(registry, limits, seed=7)
    assert challenger.model.refresh() and challenger.model.current.version == 2
    challenger._failed(2, 1, 6)
    assert challenger.canary.percent(2) == 50  # 6 failures: not yet
    challenger._failed(2, 3, 6)
    assert (
        challenger.canary.percent(2) == 0
        and "failed on 12 images" in (challenger.canary.stepped_back[2])
    )
    challenger._failed(2, 1, 1)  # a job queued under v1, recorded after v3 took over
    status = challenger.status(3)
    assert status["versions"]["2"]["production"] == 3 and status["versions"]["2"]["failed"] == 6
    assert [(e["production"], e["failed"]) for e in status["earlier"]] == [(1, 7)]


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
            said = [r.getMessage() for r in caplog.records]
            assert any(m.startswith("shadow: keeping nothing") and problem in m for m in said)
            for d in range(3):
                answer = api.post("/predict", content=digits[d], headers=PNG)
                assert answer.status_code == 200 and answer.json()["model"]["version"] == 1
            shadow = api.get("/model").json()["shadow"]
            assert shadow["model"] is None and problem in shadow["problem"]
            assert shadow["versions"] == {} and shadow["canary"]["now"] == 0
        finally:
            challenger.stop()


def test_a_failing_challenger_is_logged_and_production_answers(
    registry: Registry, digits: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    from types import SimpleNamespace

    def broken(_digits: np.ndarray) -> np.ndarray:
        raise RuntimeError("the challenger's session broke")

    for percent in (100, 1):  # answering as canary, then shadowing (1 %: a canary share)
        limits = {"canary_percent": percent, "canary_min_images": 2}
        api, challenger = served_api(registry, shadow="staging", **limits)
        challenger.model.current = SimpleNamespace(version=2, probabilities=broken)
        if percent == 1:
            challenger.canary.takes = lambda version: False  # every request shadowed
        caplog.clear()
        try:
            with caplog.at_level(logging.ERROR, logger="mnist_pipeline.serve"):
                answer = api.post("/predict", content=digits[0], headers=PNG)
                assert challenger.wait_idle(30)
                assert answer.status_code == 200 and answer.json()["model"]["version"] == 1
                assert "the challenger's session broke" in caplog.text
                canary = challenger.canary
                assert canary.percent(2) == percent and not canary.stepped_back  # 1 failure of 2
                api.post("/predict", files=uploads(digits, 1, 2))
                assert challenger.wait_idle(30)
            logged = [r for r in caplog.records if "v2 failed on 1 image(s)" in r.getMessage()]
            assert len(logged) == 1 and logged[0].exc_info  # the traceback once, not per batch
            assert canary.percent(2) == 0  # a version that keeps failing steps back
            assert canary.stepped_back[2].startswith("failed on 3 images"), canary.stepped_back
            scraped = samples(api)
            failed = (("outcome", "failed"), ("version", "2"))
            assert scraped[("mnist_serve_shadow_images_total", failed)] == 3  # images, not requests
            back = (("reason", "failed"), ("version", "2"))
            assert scraped[("mnist_serve_canary_step_backs_total", back)] == 1
        finally:
            challenger.stop()
            caplog.clear()


def test_a_canary_failure_that_cannot_be_counted_still_gets_productions_answer(
    registry: Registry, digits: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """Counting the canary's failure writes metrics (a multiprocess file) and may step it
    back: when that fails too (a full disk), the request is still production's answer."""
    from types import SimpleNamespace

    def broken(_digits: np.ndarray) -> np.ndarray:
        raise RuntimeError("the challenger's session broke")

    api, challenger = served_api(registry, shadow="staging", canary_percent=100)
    challenger.model.current = SimpleNamespace(version=2, probabilities=broken)

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    challenger.metrics.failed = disk_full
    try:
        with caplog.at_level(logging.ERROR, logger="mnist_pipeline.serve"):
            answer = api.post("/predict", content=digits[0], headers=PNG)
        assert answer.status_code == 200 and answer.json()["model"]["version"] == 1
        assert "could not count the canary's failure" in caplog.text
        assert "No space left on device" in caplog.text
    finally:
        challenger.stop()


def test_only_a_label_for_an_image_in_the_shadow_queue_waits_for_its_record() -> None:
    """Answers are scored once, at their first label: a label for an image not waiting to be
    shadowed (labelled again, never sent, sent as JSON) is not kept for a later upload."""
    memory = LabelMemory()
    answered = Answered(2, 3, 3, 1)
    assert memory.take("never-sent", 3) is None
    assert memory.remember("never-sent", answered) is None  # uploaded later: not scored now
    assert memory.take("never-sent", 3) == answered and memory.take("never-sent", 3) is None
    assert memory.remember("never-sent", answered) is None  # labelled twice: counted once
    memory.queued(["queued", "queued", "failed"])
    assert memory.take("queued", 7) is None and memory.take("failed", 1) is None
    assert memory.remember("queued", answered) == 7  # scored at its record
    memory.done(["queued", "queued", "failed"])  # the challenger failed on "failed"
    assert memory.remember("failed", answered) is None  # its label is not kept for good


def test_a_label_sent_before_the_shadow_recorded_its_image_still_scores_it(
    registry: Registry, digits: list[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that labels right after its answer is faster than the shadow thread: the
    label waits for the image's record instead of being dropped."""
    api, challenger = served_api(registry, tmp_path / "project", shadow="staging")
    release, classify = threading.Event(), challenger.classify

    def held(*args: object) -> np.ndarray:
        assert release.wait(timeout=60)
        return classify(*args)

    monkeypatch.setattr(challenger, "classify", held)
    try:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        files = {"file": ("3.png", digits[3], "image/png")}
        ours = api.post("/predict", files=[("files", ("3.png", digits[3], "image/png"))]).json()
        assert (
            api.post("/feedback", headers=bearer, files=files, data={"label": "3"}).status_code
            == 201
        )
        assert "2" not in challenger.status(1)["versions"]  # not compared yet
        release.set()
        assert challenger.wait_idle(30)
        record = challenger.status(1)["versions"]["2"]
        assert record["compared"] == 1 and sum(record["labelled"]["3"].values()) == 1
        right = ours["predictions"][0]["digit"] == 3
        assert record["production_accuracy"] == pytest.approx(float(right))
        outcome = "correct" if right else "incorrect"
        scraped = samples(api)
        key = (("model", "production"), ("outcome", outcome), ("version", "2"))
        assert scraped[("mnist_serve_shadow_labelled_total", key)] == 1
    finally:
        challenger.stop()


def test_feedback_labels_score_both_models_and_the_report_judges(
    registry: Registry, digits: list[bytes], tmp_path: Path
) -> None:
    api, challenger = served_api(registry, tmp_path / "project", shadow="staging")
    try:
        answers = []
        for d in range(10):
            answer = api.post("/predict", files=uploads(digits, d))
            answers.append(answer.json()["predictions"][0]["digit"])
        assert challenger.wait_idle(30)
        from mnist_pipeline.data.preprocess import preprocess_bytes

        images = np.stack([preprocess_bytes(data, "d") for data in digits])
        theirs = digits_of(registry, 2, images).tolist()
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        # labels that production gets right more often than the challenger: a swap shows
        neither = next(d for d in range(10) if d not in (*answers[:6], *theirs[:6]))
        labels = [*answers[:3], theirs[3], neither, neither]
        for d in range(6):  # the true digit of six of them (twice: counted once)
            codes = [
                api.post(
                    "/feedback",
                    headers=bearer,
                    files={"file": (f"{d}.png", digits[d], "image/png")},
                    data={"label": str(labels[d])},
                ).status_code
                for _ in range(2)
            ]
            assert codes == [201, 200]  # stored, then the same claim again
        status = api.get("/model").json()
        record = status["shadow"]["versions"]["2"]
        ours_right = sum(answers[d] == labels[d] for d in range(6))
        theirs_right = sum(theirs[d] == labels[d] for d in range(6))
        assert ours_right != theirs_right
        assert sum(sum(p.values()) for p in record["labelled"].values()) == 6
        assert record["production_accuracy"] == pytest.approx(ours_right / 6)
        assert record["challenger_accuracy"] == pytest.approx(theirs_right / 6)
        labelled = "mnist_serve_shadow_labelled_total"
        scraped = samples(api)
        right = (("model", "production"), ("outcome", "correct"), ("version", "2"))
        wrong = (("model", "challenger"), ("outcome", "incorrect"), ("version", "2"))
        assert scraped.get((labelled, right), 0) == ours_right
        assert scraped.get((labelled, wrong), 0) == 6 - theirs_right
        theirs_ok = (("model", "challenger"), ("outcome", "correct"), ("version", "2"))
        ours_wrong = (("model", "production"), ("outcome", "incorrect"), ("version", "2"))
        assert scraped.get((labelled, theirs_ok), 0) == theirs_right
        assert scraped.get((labelled, ours_wrong), 0) == 6 - ours_right
        found = shadow_report.report(status, PromotionParams())
        assert found[0]["comparison"]["images"] == 6
        assert found[0]["comparison"]["champion_accuracy"] == pytest.approx(ours_right / 6)
        assert found[0]["comparison"]["challenger_accuracy"] == pytest.approx(theirs_right / 6)
    finally:
        challenger.stop()


def tally(table: dict[str, Pairs]) -> Tally:
    return Tally(version=2, compared=500, agreed=400, skipped=3, canary=7, labelled=table)


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
    assert words[0] == (
        "v2: compared on 500 images, agreeing with production on 80.0%; 3 skipped (queue full);"
        " 7 answered as canary"
    )
    # 50 + 20 of 72 right for the shadow, 50 + 2 for production
    assert words[1].startswith("  72 labelled: shadow 97.2% vs production 72.2%: would have")
    assert "would have done better" in words[1]
    with pytest.raises(DataError, match="no shadow"):
        shadow_report.report({"model": None, "shadow": None}, policy)


@pytest.mark.slow
def test_a_real_server_shadows_and_canaries_and_serve_report_judges(
    tmp_path: Path, registry: Registry, digits: list[bytes]
) -> None:
    import time

    import httpx
    from typer.testing import CliRunner

    from mnist_pipeline.cli.app import app
    from mnist_pipeline.data.preprocess import preprocess_bytes
    from mnist_pipeline.serving.tokens import token_sha256
    from tests.process_helpers import mnist_server

    (tmp_path / "tokens").write_text(f"labeller {token_sha256(TOKEN)}\n")
    serve = {
        "shadow": "staging",
        "canary_percent": 50,
        "canary_max_disagreement": 1.0,
        "canary_max_error": 1.0,
        "feedback_tokens_file": "tokens",
        "feedback_rate_per_minute": 6000,
    }
    with mnist_server(tmp_path, tmp_path / "serve.log", **serve) as url:
        answered = []
        for i in range(20):
            files = [("files", ("d.png", digits[i % 10], "image/png"))]
            answered.append(
                httpx.post(f"{url}/predict", files=files, timeout=30).json()["model"]["version"]
            )
        deadline = time.monotonic() + 30
        while (
            httpx.get(f"{url}/model", timeout=30).json()["shadow"]["versions"]["2"]["compared"] < 20
        ):
            assert time.monotonic() < deadline, "the shadow did not compare every image"
            time.sleep(0.1)
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for d in range(10):
            file = {"file": (f"{d}.png", digits[d], "image/png")}
            labelled = httpx.post(
                f"{url}/feedback", headers=bearer, files=file, data={"label": str(d)}, timeout=30
            )
            assert labelled.status_code == 201
        runner = CliRunner()
        said = runner.invoke(app, ["--root", str(tmp_path), "serve-report", "--url", url])
        (tmp_path / "model.json").write_text(httpx.get(f"{url}/model", timeout=30).text)
    saved = ["--root", str(tmp_path), "serve-report", "--from", str(tmp_path / "model.json")]
    as_json = runner.invoke(app, [*saved, "--json"])  # the server has stopped
    assert set(answered) == {1, 2}  # 20 requests at 50 %: both versions answered
    assert said.exit_code == 0, said.output
    assert "v2 against v1: compared on 20 images" in said.output and "10 labelled" in said.output
    assert as_json.exit_code == 0, as_json.output
    (record,) = json.loads(as_json.stdout)
    images = np.stack([preprocess_bytes(data, "d") for data in digits])
    truth = np.arange(10)
    comparison = record["comparison"]
    assert comparison["images"] == 10 and record["canary"] == answered.count(2)
    assert comparison["champion_accuracy"] == (digits_of(registry, 1, images) == truth).mean()
    assert comparison["challenger_accuracy"] == (digits_of(registry, 2, images) == truth).mean()


def test_serve_report_names_a_file_that_is_not_a_saved_answer(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mnist_pipeline.cli.app import app

    saved = tmp_path / "model.json"
    both = ["--root", str(tmp_path), "serve-report", "--url", "http://127.0.0.1:9", "--from"]
    said = CliRunner().invoke(app, [*both, str(saved)])  # one is dropped unseen: refused
    assert said.exit_code == 2 and "not both" in said.output, said.output
    for url in (" ", "not a url", "127.0.0.1:8000", "ftp://127.0.0.1/"):  # a usage error
        bad = CliRunner().invoke(app, ["--root", str(tmp_path), "serve-report", "--url", url])
        words = " ".join(bad.output.replace("│", " ").split())  # the error box, unwrapped
        assert bad.exit_code == 2 and "is not an http(s) URL such as http" in words, bad.output
    for url, said in (  # a traceback, or /model put inside the query or after "http:"
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://127.0.0.1:8000/x?y", "a server's base URL has no query or fragment"),
        ("http://127.0.0.1:8000#top", "a server's base URL has no query or fragment"),
        ("http://", "is not an http(s) URL such as http"),
        ("http://127.0.0.1:port", "Port could not be cast to integer value"),
    ):
        bad = CliRunner().invoke(app, ["--root", str(tmp_path), "serve-report", "--url", url])
        words = " ".join(bad.output.replace("│", " ").split())
        assert bad.exit_code == 2 and said in words, bad.output
    for text in ('{"a": 1}', "[]"):  # JSON, but not what GET /model answers
        saved.write_text(text)
        with pytest.raises(DataError, match="not a saved GET /model answer"):
            shadow_report.read_status(saved)
    odd_digit = {"shadow": {"versions": {"2": {"version": 2, "labelled": {"x": {}}}}}}
    with pytest.raises(DataError, match=r"malformed: labelled.x.\[key\]: String should"):
        shadow_report.tallies(odd_digit)
    huge = {"both": 10**15}  # rebuilt per image for the paired test: a MemoryError
    too_many = {"shadow": {"versions": {"2": {"version": 2, "labelled": {"3": huge}}}}}
    with pytest.raises(DataError, match=r"v2: 1,000,000,000,000,000 labelled images, more than"):
        shadow_report.tallies(too_many)
    broken = {"shadow": {"versions": {"2": {"version": 2, "compared": "x"}}}}
    with pytest.raises(DataError, match="records are malformed: compared: ") as info:
        shadow_report.tallies(broken)
    assert "pydantic.dev" not in str(info.value)
    not_a_list = {"shadow": {"versions": {}, "earlier": 5}}
    with pytest.raises(DataError, match=r"malformed: .* and shadow.earlier a list$"):
        shadow_report.tallies(not_a_list)
    for key, record, said in [  # versions no registry holds, booleans, another version's key
        ("-5", {"version": -5}, r"version: Input should be greater than or equal to 1"),
        ("2", {"version": 2, "production": True}, r"production: Input should be a valid int"),
        ("2", {"version": 2, "production": 0}, r"production: Input should be greater than or"),
        ("1", {"version": True}, r"versions\['1'\] does not hold that version's record"),
        ("2", {"version": 3}, r"versions\['2'\] does not hold that version's record"),
    ]:
        with pytest.raises(DataError, match=f"records are malformed: .*{said}"):
            shadow_report.tallies({"shadow": {"versions": {key: record}}})
    more_agreed = {"shadow": {"versions": {"2": {"version": 2, "compared": 1, "agreed": 5}}}}
    with pytest.raises(DataError, match=r"are malformed: v2: agreed 5 of 1 compared$"):
        shadow_report.tallies(more_agreed)


def test_serve_report_names_a_server_it_cannot_read(tmp_path: Path) -> None:
    import socket

    with socket.socket() as listener:  # answers every connection with a line that is not HTTP
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

        server = threading.Thread(target=answer, daemon=True)
        server.start()
        with pytest.raises(DataError, match=r"/model: BadStatusLine: SSH-2.0"):
            shadow_report.fetch_status(f"http://127.0.0.1:{port}")
        server.join(timeout=10)
    with pytest.raises(DataError, match=r"cannot read http://127.0.0.1:abc/model: InvalidURL"):
        shadow_report.fetch_status("http://127.0.0.1:abc")
