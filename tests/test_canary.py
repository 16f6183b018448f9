"""The canary share in-process: both versions answer, a disagreeing or wrong canary steps back
to production, and the thresholds."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mnist_pipeline.core.service_params import ServeParams
from mnist_pipeline.registry import Registry
from mnist_pipeline.serving import canary
from mnist_pipeline.serving.canary import step_back_reason
from mnist_pipeline.serving.challenger import Challenger
from mnist_pipeline.serving.http_api import create_app
from mnist_pipeline.serving.live import Pairs, Tally
from mnist_pipeline.serving.served_model import ServedModel
from tests import challenger_helpers
from tests.challenger_helpers import TOKEN, Emitted, digits_of, samples, served_api, uploads

_models, registry = challenger_helpers._models, challenger_helpers.registry  # fixtures
digits = challenger_helpers.digits


def images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 28, 28), dtype=np.float32)


def versions(api, batch: np.ndarray) -> list[int]:
    """The version that answered each one-image JSON request."""
    answered = []
    for image in batch:
        answer = api.post("/predict", json={"images": [image.tolist()]})
        assert answer.status_code == 200
        answered.append(answer.json()["model"]["version"])
    return answered


def test_half_the_requests_are_answered_by_the_canary(registry: Registry) -> None:
    api, challenger = served_api(
        registry, shadow="staging", canary_percent=50, canary_max_disagreement=1.0
    )
    try:
        answered = versions(api, images(200, 0))
        assert set(answered) == {1, 2}
        assert 60 <= answered.count(2) <= 140  # binomial(200, 0.5): far outside 10 sd
        assert challenger.wait_idle(30)
        record = api.get("/model").json()["shadow"]["versions"]["2"]
        assert record["canary"] == answered.count(2)
        assert record["compared"] == 200  # answered by the canary or shadowed, all compared
        classified = "mnist_serve_images_classified_total"
        scraped = samples(api)
        by_version = {
            v: sum(
                n
                for (name, labels), n in scraped.items()
                if name == classified and ("version", v) in labels
            )
            for v in ("1", "2")
        }
        assert by_version == {"1": answered.count(1), "2": answered.count(2)}
        assert scraped[("mnist_serve_canary_percent", ())] == 50
    finally:
        challenger.stop()


def test_a_canary_that_disagrees_steps_back_and_production_answers(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    emitted = Emitted()
    monkeypatch.setattr(canary, "emit_if_configured", emitted)
    pool = images(400, 1)
    differ = pool[digits_of(registry, 1, pool) != digits_of(registry, 2, pool)][:30]
    assert len(differ) == 30, "the two models agree too often to build the traffic"
    limits = {"canary_min_images": 20, "canary_max_disagreement": 0.5}
    api, challenger = served_api(registry, shadow="staging", canary_percent=100, **limits)
    try:
        with caplog.at_level(logging.WARNING, logger="mnist_pipeline.serve"):
            answered = versions(api, differ)
        assert answered == [2] * 20 + [1] * 10  # stepped back at the 20th compared image
        assert "canary v2 stepped back to 0 %" in caplog.text
        status = api.get("/model").json()["shadow"]["canary"]
        assert status["percent"] == 100 and status["now"] == 0
        assert "disagrees with production on 100.0% of 20 images" in status["stepped_back"]["2"]
        scraped = samples(api)
        back = (("reason", "disagreement"), ("version", "2"))
        assert scraped[("mnist_serve_canary_step_backs_total", back)] == 1
        assert scraped[("mnist_serve_canary_percent", ())] == 0
        challenger.wait_idle(30)
        registry.promote(1, "staging")  # the alias moves to production's version: no canary
        assert challenger.model.refresh()
        assert api.get("/model").json()["shadow"]["canary"]["now"] == 0
        assert samples(api)[("mnist_serve_canary_percent", ())] == 0
        assert versions(api, differ[:1]) == [1]
        assert challenger.canary.percent(3) == 100  # another version would start afresh
        assert emitted.reached(1)
        (event, model, payload), *more = emitted
        assert not more and event == canary.STEPPED_BACK and model == registry.name
        assert (payload["version"], payload["production"], payload["reason"]) == (
            2,
            1,
            "disagreement",
        )
    finally:
        challenger.stop()


def test_a_step_back_judged_on_shadowed_images_names_production(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    emitted = Emitted()
    monkeypatch.setattr(canary, "emit_if_configured", emitted)
    pool = images(400, 1)
    differ = pool[digits_of(registry, 1, pool) != digits_of(registry, 2, pool)][:30]
    limits = {"canary_min_images": 20, "canary_max_disagreement": 0.5}
    api, challenger = served_api(registry, shadow="staging", canary_percent=1, **limits)
    monkeypatch.setattr(challenger.canary, "takes", lambda version: False)  # all shadowed
    try:
        assert versions(api, differ) == [1] * 30
        challenger.wait_idle(30)
        assert emitted.reached(1)
        (event, _, payload), *more = emitted
        assert not more and event == canary.STEPPED_BACK
        assert (payload["version"], payload["production"]) == (2, 1)  # from the shadow thread
    finally:
        challenger.stop()


def production_digits(registry: Registry, pngs: list[bytes]) -> list[int]:
    """What production (v1) answers for each PNG, from a server without a challenger."""
    served = ServedModel(registry, "production")
    served.refresh()
    api = TestClient(create_app(served, ServeParams(), None, None))
    uploads = [api.post("/predict", files=[("files", ("d.png", png, "image/png"))]) for png in pngs]
    return [answer.json()["predictions"][0]["digit"] for answer in uploads]


def test_a_canary_wrong_on_labelled_images_steps_back_when_production_is_right_on_them(
    registry: Registry, digits: list[bytes], tmp_path: Path
) -> None:
    limits = {"canary_max_disagreement": 1.0, "canary_min_labels": 3, "canary_max_error": 0.5}
    api, challenger = served_api(
        registry, tmp_path / "project", shadow="staging", canary_percent=100, **limits
    )
    production = production_digits(registry, digits)
    try:
        bearer = {"Authorization": f"Bearer {TOKEN}"}

        def label(d: int, right_one: str) -> int:
            """Have the canary classify digit d, then label it so that `right_one` is right
            ("production") or neither is ("none"); returns the version that answers next."""
            answer = api.post("/predict", files=uploads(digits, d)).json()
            assert answer["model"]["version"] == 2
            canary_digit = answer["predictions"][0]["digit"]
            if right_one == "production":
                assert production[d] != canary_digit, "the two models must disagree here"
                truth = production[d]
            else:
                truth = ({*range(10)} - {production[d], canary_digit}).pop()
            labelled = api.post(
                "/feedback",
                headers=bearer,
                files={"file": (f"{d}.png", digits[d], "image/png")},
                data={"label": str(truth)},
            )
            assert labelled.status_code == 201
            assert challenger.wait_idle(30)
            later = api.post("/predict", files=[("files", ("9.png", digits[9], "image/png"))])
            return later.json()["model"]["version"]

        # wrong on every labelled image, as production is (corrections of hard images): it stays
        assert [label(d, "none") for d in range(3)] == [2, 2, 2]
        assert api.get("/model").json()["shadow"]["canary"]["stepped_back"] == {}
        # wrong where production is right: over the limit, and now worse than production
        assert label(3, "production") == 1
        why = api.get("/model").json()["shadow"]["canary"]["stepped_back"]["2"]
        assert "is wrong on 100.0% of 4 labelled images (production v1 on 75.0%)" in why
    finally:
        challenger.stop()


def test_the_thresholds_need_enough_evidence() -> None:
    limits = ServeParams(
        shadow="staging",
        canary_percent=10,
        canary_min_images=10,
        canary_max_disagreement=0.2,
        canary_min_labels=4,
        canary_max_error=0.25,
    )
    assert step_back_reason(Tally(version=2, compared=9, agreed=0), limits) is None
    assert step_back_reason(Tally(version=2, compared=10, agreed=8), limits) is None  # = limit
    assert step_back_reason(Tally(version=2, compared=10, agreed=7), limits)[0] == "disagreement"
    three = Tally(version=2, labelled={"1": Pairs(production_only=3)})
    assert step_back_reason(three, limits) is None
    four = Tally(version=2, labelled={"1": Pairs(production_only=2, both=2)})
    assert step_back_reason(four, limits) == (
        "error",
        "is wrong on 50.0% of 4 labelled images (production on 0.0%), over "
        "serve.canary_max_error (0.25)",
    )
    # as often wrong as production on the same images, or less: not the canary's doing
    hard = Tally(version=2, labelled={"1": Pairs(neither=2, both=2)})
    assert hard.challenger_error == hard.production_error == 0.5
    assert step_back_reason(hard, limits) is None
    corrections = Tally(version=2, labelled={"3": Pairs(neither=14, challenger_only=6)})
    assert step_back_reason(corrections, limits) is None  # production wrong on every one
    assert step_back_reason(Tally(version=2, labelled={"1": Pairs(neither=3, production_only=1)}),
                            limits)[0] == "error"  # fmt: skip
    # compared with the production serving now (v3), not with one of the past (v1)
    past = Tally(version=2, production=1, labelled={"1": Pairs(neither=100, challenger_only=80,
                                                               both=20)})  # fmt: skip
    now = Tally(version=2, production=3, labelled={"1": Pairs(production_only=20, neither=5,
                                                              both=25)})  # fmt: skip
    pooled = Tally.total([past, now], production=3)
    assert pooled.challenger_error == 0.5 and pooled.production_error == 0.74
    assert step_back_reason(pooled, limits) is None  # pooled, v1's errors would hide it
    assert step_back_reason(pooled, limits, against=now) == (
        "error",
        "is wrong on 50.0% of 250 labelled images (on the 50 compared with production v3: "
        "50.0%, production 10.0%), over serve.canary_max_error (0.25)",
    )
    assert step_back_reason(pooled, limits, against=past) is None
    assert step_back_reason(Tally(version=2, failed=9), limits) is None
    assert step_back_reason(Tally(version=2, failed=10), limits) == (
        "failed",
        "failed on 10 images, as many as serve.canary_min_images (10)",
    )
    with pytest.raises(ValueError, match="canary_percent > 0 needs serve.shadow"):
        ServeParams(canary_percent=5)


@pytest.mark.slow
def test_a_real_server_steps_back_and_tells_prefect(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import httpx

    from tests.process_helpers import mnist_server, prefect_server

    pool = images(400, 2)
    differ = pool[digits_of(registry, 1, pool) != digits_of(registry, 2, pool)][:8]
    serve = {"shadow": "staging", "canary_percent": 100, "canary_min_images": 5}
    (tmp_path / "prefect").mkdir()
    with prefect_server(tmp_path / "prefect") as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)  # the serve process's environment
        with mnist_server(tmp_path, tmp_path / "serve.log", **serve) as url:
            answered = []
            for image in differ:
                answer = httpx.post(f"{url}/predict", json={"images": [image.tolist()]}, timeout=30)
                answered.append(answer.json()["model"]["version"])
            body = {"filter": {"event": {"name": [canary.STEPPED_BACK]}}, "limit": 10}
            deadline, events = time.monotonic() + 60, []
            while not events and time.monotonic() < deadline:
                found = httpx.post(f"{env['PREFECT_API_URL']}/events/filter", json=body, timeout=30)
                events = found.json()["events"]
                time.sleep(0.5)
    assert answered == [2] * 5 + [1] * 3
    (event,) = events
    assert event["resource"]["prefect.resource.id"] == f"mnist.model.{registry.name}"
    assert event["payload"]["version"] == 2 and event["payload"]["reason"] == "disagreement"


def test_a_late_step_back_of_an_earlier_canary_leaves_the_current_ones_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A label that arrives for v2's answer after the alias moved to v3 steps v2 back; v3
    keeps its share (none while it is the version production serves)."""
    from prometheus_client import CollectorRegistry

    from mnist_pipeline.serving.challenger_metrics import ChallengerMetrics

    sent = Emitted()
    monkeypatch.setattr(canary, "emit_if_configured", sent)
    limits = ServeParams(
        shadow="staging", canary_percent=30, canary_min_labels=1, canary_max_error=0.5
    )
    judge = canary.Canary(limits, "m", seed=1)
    judge.metrics = ChallengerMetrics(CollectorRegistry())
    wrong = Tally(version=2, production=1)
    wrong.label(truth=7, production=7, challenger=1)
    assert judge.judge(wrong) is True
    assert judge.percent(2) == 0 and judge.percent(3) == 30 and sent.reached(1)
    assert judge.share(3, production=1) == 30 and judge.share(3, production=3) == 0
    assert judge.judge(Tally(version=3)) is False  # nothing over a limit: no change
    assert judge.judge(wrong) is False and len(sent) == 1  # once per version
    assert sent[0][2]["production"] == 1  # the version it was judged against


def test_step_back_events_need_a_prefect_api_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mnist_pipeline.pipeline import announce
    from mnist_pipeline.serving import alias_events
    from mnist_pipeline.serving.alias_events import emit_if_configured

    sent = []
    monkeypatch.setattr(announce, "emit", lambda *args: sent.append(args) or True)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert emit_if_configured(canary.STEPPED_BACK, "m", {}) is False and sent == []
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setattr(alias_events, "api_problem", lambda: None)  # as if it answered
    assert emit_if_configured(canary.STEPPED_BACK, "m", {}) is True and len(sent) == 1


def test_a_challenger_alias_on_productions_version_costs_no_second_inference(
    registry: Registry,
) -> None:
    """Once staging is promoted both aliases name one version: nothing is shadowed or split."""
    registry.promote(2, "production")
    api, challenger = served_api(registry, shadow="staging", canary_percent=50)
    try:
        assert versions(api, images(6, 3)) == [2] * 6
        challenger.wait_idle(30)
        shadow = api.get("/model").json()["shadow"]
        assert shadow["versions"] == {}  # no tally: no comparison
        assert shadow["canary"] == {
            "percent": 50,
            "now": 0,
            "stepped_back": {},
            "left_by_production": [1],
        }
        assert samples(api)[("mnist_serve_canary_percent", ())] == 0
    finally:
        challenger.stop()


def full_canary(registry: Registry, poll_s: float) -> tuple[ServedModel, Challenger, TestClient]:
    """Production on its alias and staging answering every request as the canary (never
    stepping back for disagreement), its alias polled every `poll_s`; stop the challenger."""
    limits = ServeParams(shadow="staging", canary_percent=100, canary_max_disagreement=1.0)
    production = ServedModel(registry, "production")
    production.refresh()
    challenger = Challenger(registry, limits, seed=7)
    challenger.start(poll_s, follow_events=False)
    return production, challenger, TestClient(create_app(production, limits, None, challenger))


def test_a_version_production_was_rolled_back_from_is_not_tried_again(
    registry: Registry,
) -> None:
    """Staging promoted, then production rolled back: staging still names the version that
    was taken out of production, and the canary gives it no share; a newer one gets it."""
    production, challenger, api = full_canary(registry, poll_s=3600)
    try:
        assert versions(api, images(3, 8)) == [2] * 3  # the canary answers every request
        registry.promote(2, "production")
        assert production.refresh() is True
        registry.rollback()  # v2 misbehaved: production back on v1, staging still on v2
        assert production.refresh() is True and production.current.version == 1
        assert versions(api, images(3, 9)) == [1] * 3
        canary_status = api.get("/model").json()["shadow"]["canary"]
        assert canary_status["now"] == 0 and canary_status["left_by_production"] == [2]
        assert samples(api)[("mnist_serve_canary_percent", ())] == 0
        assert challenger.wait_idle(30)  # still shadowed: compared, answering no one
        assert api.get("/model").json()["shadow"]["versions"]["2"]["compared"] == 6
        registry.promote(2, "staging")  # proposed anew, on purpose: a canary again
        assert challenger.model.refresh() is False  # the same version: no swap, nothing told
        assert versions(api, images(2, 10)) == [1] * 2  # read on a change, or a poll (1 h)
        registry.promote(1, "staging")
        assert challenger.model.refresh() is True  # staging on production's v1: nothing to try
        registry.promote(2, "staging")
        assert challenger.model.refresh() is True
        assert versions(api, images(3, 11)) == [2] * 3
        assert api.get("/model").json()["shadow"]["canary"]["left_by_production"] == []
    finally:
        challenger.stop()


def test_a_version_rejected_for_production_stops_answering_at_the_next_poll(
    registry: Registry,
) -> None:
    """`models reject` moves no alias, so no version change tells the canary: the challenger's
    poll reads the history again, and the rejected version answers no one from then on."""
    production, challenger, api = full_canary(registry, poll_s=0.1)
    try:
        assert versions(api, images(3, 12)) == [2] * 3
        registry.note(2, "production", "reject", "user:bob rejected v2", "user:bob", "no")
        deadline = time.monotonic() + 30
        while challenger.canary.percent(2) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert versions(api, images(3, 13)) == [1] * 3
        canary_status = api.get("/model").json()["shadow"]["canary"]
        assert canary_status["now"] == 0 and canary_status["left_by_production"] == [2]
        assert registry.aliases() == {"production": 1, "staging": 2}  # nothing moved
    finally:
        challenger.stop()


def test_left_behind_reads_where_the_alias_was_before_each_move() -> None:
    events = [
        {"alias": "production", "action": "promote", "version": 1, "previous": None},
        {"alias": "staging", "action": "promote", "version": 2, "previous": None},
        {"alias": "production", "action": "promote", "version": 2, "previous": 1},
        {"alias": "production", "action": "rollback", "version": 1, "previous": 2},
        {"alias": "production", "action": "reject", "version": 3, "previous": 1},
        {"alias": "staging", "action": "promote", "version": 3, "previous": 2},
        "not an event",
        {"alias": "production", "version": 4, "previous": True},
    ]
    assert canary.left_behind(events, "production", 1) == {2, 3}  # 3: refused for production
    assert canary.left_behind(events[:4], "production", 1) == {2}
    assert canary.left_behind(events, "production", 1, "staging") == {2}  # 3: proposed anew
    assert canary.left_behind(events, "staging", 3) == {2}
    assert canary.left_behind(events, "canary", None) == set()
    not_a_version = {"alias": "production", "action": "promote", "version": 2, "previous": True}
    assert canary.left_behind([not_a_version], "production", 2) == set()  # True is not v1
    proposed_again = {"alias": "staging", "action": "promote", "version": 2, "previous": 3}
    assert canary.left_behind([*events, proposed_again], "production", 1, "staging") == set()
    rolled_back_later = {"alias": "production", "action": "rollback", "version": 1, "previous": 2}
    later = [*events, proposed_again, rolled_back_later]
    assert canary.left_behind(later, "production", 1, "staging") == {2}
    noted = {"alias": "staging", "action": "reject", "version": 2, "previous": 3}  # moves nothing
    assert canary.left_behind([*events, noted], "production", 1, "staging") == {2}
    rejected = {"alias": "production", "action": "reject", "version": 3, "previous": 1}
    expired = {"alias": "production", "action": "expire", "version": 2, "previous": 1}
    staged = [*events, proposed_again]  # staging: v2; then v3 refused again, v2's wait expires
    assert canary.left_behind([*staged, rejected, expired], "production", 1, "staging") == {3}


def test_a_challenger_alias_that_cannot_be_followed_gets_no_canary_share(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While staging cannot be read (or names a version that was refused), the version kept
    from before is shadowed but answers no one; the share comes back with the alias."""
    api, challenger = served_api(
        registry, shadow="staging", canary_percent=100, canary_max_disagreement=1.0
    )
    try:
        assert versions(api, images(3, 5)) == [2] * 3  # the canary answers every request
        followed = challenger.model.registry
        reads = followed.version_of

        def unreachable(ref: str) -> int:
            raise OSError("the store cannot be reached")

        monkeypatch.setattr(followed, "version_of", unreachable)
        challenger.model.refresh()
        assert challenger.model.current.version == 2  # kept, and shadowed
        assert versions(api, images(4, 6)) == [1] * 4
        shadow = api.get("/model").json()["shadow"]
        assert shadow["canary"]["now"] == 0 and "cannot be reached" in shadow["problem"]
        assert samples(api)[("mnist_serve_canary_percent", ())] == 0
        assert challenger.wait_idle(30)
        assert api.get("/model").json()["shadow"]["versions"]["2"]["compared"] == 7
        monkeypatch.setattr(followed, "version_of", reads)
        challenger.model.refresh()  # staging can be read again: still v2
        assert versions(api, images(2, 7)) == [2] * 2
        assert samples(api)[("mnist_serve_canary_percent", ())] == 100
        # the challenger's unreadable alias is its own problem: production's model events
        # (what an operator alerts on) count no unresolved alias
        unresolved = ("mnist_serve_model_events_total", (("event", "unresolved"),))
        assert samples(api)[unresolved] == 0
    finally:
        challenger.stop()


def test_images_the_canary_answers_still_reach_productions_drift_monitor(tmp_path: Path) -> None:
    """At canary_percent 100 production answers nothing, yet its drift window fills: the
    monitor watches production's own probabilities, computed for every canary request."""
    import time

    from mnist_pipeline.pipeline.register import register_candidate
    from tests.drift_helpers import candidate_with_reference
    from tests.registry_helpers import MODEL, PARAMS, candidate_in, exported_candidate

    registry = Registry(tmp_path / "registry", MODEL)  # v1 production, with a drift reference
    register_candidate(registry, candidate_with_reference(tmp_path / "c1", seed=2), PARAMS)
    register_candidate(registry, candidate_in(exported_candidate(tmp_path / "c2", 1)), PARAMS)
    assert registry.aliases() == {"production": 1, "staging": 2}
    api, challenger = served_api(
        registry, shadow="staging", canary_percent=100, canary_max_disagreement=1.0
    )
    try:
        with api:  # the app's lifespan starts the drift monitor
            assert versions(api, images(20, 8)) == [2] * 20
            deadline = time.monotonic() + 30
            while (drift := api.get("/model").json()["drift"])["images"] < 20:
                assert time.monotonic() < deadline, drift
                time.sleep(0.1)
        assert drift["version"] == 1 and drift["enabled"] is True
    finally:
        challenger.stop()


def test_productions_own_failure_fails_the_request_and_is_not_the_canarys(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """On a canary request both versions answer; when production's answer fails, the request
    fails (as it would without a canary), and the healthy canary is neither blamed nor
    stepped back."""
    from mnist_pipeline.serving.challenger import Challenger
    from mnist_pipeline.serving.served_model import load_version

    limits = ServeParams(shadow="staging", canary_percent=100, canary_min_images=1)
    challenger = Challenger(registry, limits, seed=7)
    challenger.start(3600, follow_events=False)
    production = load_version(registry, "1")

    class Failing:  # production, out of memory on every batch
        version = production.version

        def probabilities(self, digits: np.ndarray) -> np.ndarray:
            raise MemoryError(f"no memory for {len(digits)} image(s)")

    try:
        for _ in range(3):
            with pytest.raises(MemoryError), caplog.at_level(logging.ERROR):
                challenger.answer(Failing(), images(4, 0), None)
        record = challenger.status(production.version)
        assert record["versions"].get("2", {}).get("failed", 0) == 0
        assert record["canary"]["now"] == 100 and not record["canary"]["stepped_back"]
        assert "v2 failed on" not in caplog.text
        chosen, answered, _ = challenger.answer(production, images(4, 0), None)
        assert chosen.version == 2 and answered.shape == (4, 10)  # still the canary's share
    finally:
        challenger.stop()


def test_an_unreadable_alias_history_is_logged_once_per_problem(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The challenger's poll reads the history every second: a store that stays down is one
    warning, not one a poll; a new problem, or the same after a good read, is told again."""

    class Store:
        problem: str | None = "s3: no answer"

        def state(self) -> object:
            if self.problem:
                raise OSError(self.problem)
            return SimpleNamespace(aliases={"production": 1}, events=[])

    store = Store()
    share = canary.Canary(ServeParams(shadow="staging", canary_percent=10), "mnist-cnn")
    with caplog.at_level(logging.WARNING, logger="mnist_pipeline.serve"):
        for problem in ("s3: no answer", "s3: no answer", "s3: no answer", None, "s3: no answer"):
            store.problem = problem
            share.read_left(store, "production", "staging")  # type: ignore[arg-type]
        store.problem = "refusing the aliases"
        share.read_left(store, "production", "staging")  # type: ignore[arg-type]
    told = [r.getMessage() for r in caplog.records if "could not read the history" in r.message]
    assert told == [
        "shadow: could not read the history of alias 'production': s3: no answer",
        "shadow: could not read the history of alias 'production': s3: no answer",
        "shadow: could not read the history of alias 'production': refusing the aliases",
    ]


def test_a_slow_reread_does_not_overwrite_the_version_a_swap_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The challenger's poll rereads while production's swap to v3 (the challenger's version)
    is heard: whichever finishes last, the canary must remember that production served v3,
    so that a rollback to v2 keeps v3 off the canary share until the history is read again."""
    import threading

    class Store:
        def state(self) -> object:
            return SimpleNamespace(aliases={"production": 3}, events=[])

    store = Store()
    production = SimpleNamespace(
        current=SimpleNamespace(version=2), registry=store, ref="production", listeners=[]
    )
    challenger = SimpleNamespace(
        current=SimpleNamespace(version=3), registry=store, ref="staging", listeners=[]
    )
    share = canary.Canary(ServeParams(shadow="staging", canary_percent=10), "mnist-cnn")
    share.follow(challenger, production)
    go, entered, real = threading.Event(), threading.Event(), canary.Canary.read_left

    def preempted(self, *args):  # the poll's thread, paused on its way in
        if threading.current_thread().name == "poll":
            entered.set()
            go.wait(10)
        return real(self, *args)

    monkeypatch.setattr(canary.Canary, "read_left", preempted)
    poll = threading.Thread(target=share.reread, name="poll")
    poll.start()
    assert entered.wait(10)  # the poll is on its way into the read, not before it
    production.current = SimpleNamespace(version=3)  # v3 promoted and swapped in
    share._versions_changed("swapped", 3)  # production's listener
    go.set()
    poll.join(10)
    production.current = SimpleNamespace(version=2)  # rolled back, not yet reread
    assert share.percent(3) == 0.0
