"""The canary's record at its edges: a label sent again, a late label after a rollback, a
request answered while production swaps, and a worker reading its own step back."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.core.service_params import ServeParams
from mnist_pipeline.registry import Registry
from mnist_pipeline.serving.canary_shared import SharedStepBacks
from mnist_pipeline.serving.challenger import Challenger
from mnist_pipeline.serving.live import Answered, LabelMemory
from tests import challenger_helpers
from tests.test_canary import full_canary, images, versions

_models, registry = challenger_helpers._models, challenger_helpers.registry  # fixtures


def test_an_image_counts_once_however_often_it_is_sent_and_labelled_again() -> None:
    memory = LabelMemory(size=4)
    first = Answered(version=2, production=7, challenger=1, production_version=1)
    assert memory.remember("x", first) is None
    assert memory.take("x", 7) == first  # counted at its first label
    assert memory.remember("x", first) is None  # predicted again ...
    assert memory.take("x", 7) is None  # ... and the same claim sent again: not counted
    memory.queued(["y"])
    assert memory.take("y", 3) is None  # labelled while still in the shadow queue
    assert memory.remember("y", first) == 3  # taken by its record: counted once
    assert memory.remember("y", first) is None and memory.take("y", 3) is None
    later = Answered(version=3, production=7, challenger=7, production_version=1)
    assert memory.remember("x", later) is None  # the next challenger version's answers ...
    assert memory.take("x", 7) == later  # ... count for it, once
    assert memory.remember("x", later) is None and memory.take("x", 7) is None
    for key in "abcd":  # the latest `size` labelled are remembered, the oldest forgotten
        memory.remember(key, first)
        memory.take(key, 7)
    assert memory.remember("x", first) is None and memory.take("x", 7) == first


def test_a_late_label_judges_the_canary_against_the_production_it_is_compared_with_now(
    registry: Registry,
) -> None:
    """v2 answered image b beside production v3 (v3 right, v2 wrong), then production was
    rolled back to v1, beside which v2 was right where v1 was wrong. b's label arriving late
    must not step v2 back: v3 is no yardstick any more."""
    limits = ServeParams(
        shadow="staging", canary_percent=30, canary_min_labels=1, canary_max_error=0.3
    )
    challenger = Challenger(registry, limits, seed=1)
    truth, right, wrong = 7, np.array([7]), np.array([1])
    challenger._record(2, 3, right, wrong, ["b"])  # production v3 answered b
    challenger._record(2, 1, wrong, right, ["a"])  # after the rollback: production v1
    challenger.label("a", truth)
    assert challenger.canary.percent(2) == 30  # right where v1 was wrong: no step back
    challenger.label("b", truth)  # the late label
    assert challenger.canary.stepped_back == {} and challenger.canary.percent(2) == 30
    shown = challenger.status(production=1)["versions"]["2"]
    assert shown["production"] == 1


def test_a_late_label_steps_nothing_back_before_labels_beside_the_production_serving_now(
    registry: Registry,
) -> None:
    """Production rolled back from v3 to v1: labels for images answered beside v3 are no
    yardstick, whether nothing was compared with v1 yet or nothing compared with it was
    labelled; the first label beside v1 is."""
    from mnist_pipeline.serving.served_model import ServedModel

    limits = ServeParams(
        shadow="staging", canary_percent=30, canary_min_labels=1, canary_max_error=0.3
    )
    production = ServedModel(registry, "production")
    assert production.refresh() and production.current.version == 1
    challenger = Challenger(registry, limits, seed=1)
    challenger.beside(production)
    truth, right, wrong = 7, np.array([7]), np.array([1])
    challenger._record(2, 3, right, wrong, ["b"])  # beside v3, before the rollback
    challenger.label("b", truth)  # nothing compared with v1 yet
    assert challenger.canary.stepped_back == {}
    challenger._record(2, 1, right, right, ["c"])  # compared with v1, never labelled
    challenger._record(2, 3, right, wrong, ["d"])
    challenger.label("d", truth)
    assert challenger.canary.stepped_back == {}
    challenger._record(2, 1, right, wrong, ["e"])  # beside v1: v1 right, v2 wrong
    challenger.label("e", truth)
    assert (
        "on the 1 compared with production v1: 100.0%, production 0.0%"
        in (challenger.canary.stepped_back[2])
    )


def test_a_request_answered_as_production_swaps_never_goes_to_the_version_it_left(
    registry: Registry,
) -> None:
    """Production and staging on v2, then production rolled back to v1: a request that
    arrives between the swap and the canary reading the alias history is production's."""
    registry.promote(2, "production")
    production, challenger, api = full_canary(registry, poll_s=3600)
    seen_at_swap: list[int] = []
    try:
        assert versions(api, images(2, 20)) == [2] * 2  # production's own: no canary

        def at_swap(event: str, _version: int | None) -> None:
            if event == "swapped":
                seen_at_swap.extend(versions(api, images(3, 21)))

        production.listeners.insert(0, at_swap)  # before the canary's listener hears of it
        registry.rollback()
        assert production.refresh() is True and production.current.version == 1
        assert seen_at_swap == [1] * 3
        assert versions(api, images(3, 22)) == [1] * 3
        assert api.get("/model").json()["shadow"]["canary"]["left_by_production"] == [2]
    finally:
        challenger.stop()


def test_a_worker_never_takes_its_own_step_back_for_another_workers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its poll may read the record its own judge has just written: not "by another worker"."""
    from mnist_pipeline.serving import canary

    shared = SharedStepBacks(tmp_path, pid=101)
    judge = canary.Canary(ServeParams(shadow="staging", canary_percent=30), "m", shared=shared)
    assert shared.record(2, "judged here") is None  # written, the judge not yet updated
    with caplog.at_level(logging.WARNING, logger="mnist_pipeline.serve"):
        judge.reread()
    assert "by another worker" not in caplog.text and judge.percent(2) == 30
    assert SharedStepBacks(tmp_path, pid=102).read() == {
        2: "judged here (judged by worker pid 101)"
    }
