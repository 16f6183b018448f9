"""Champion vs challenger: promotion on paired evidence, MNIST test and the extra holdout apart."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core.errors import ParamsError, PipelineError, RegistryError, StoreError
from mnist_pipeline.core.params import parse_params
from mnist_pipeline.core.reports import Metrics
from mnist_pipeline.core.service_params import PromotionParams
from mnist_pipeline.data import idx
from mnist_pipeline.evaluation.paired import compare, mcnemar_p, unpaired
from mnist_pipeline.inbox import extra
from mnist_pipeline.pipeline import promotion
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registry
from tests.promotion_helpers import (
    TEST,
    answering_onnx,
    answers,
    paired_candidate,
    write_holdout,
    write_test_set,
)
from tests.reports import MODEL, metrics_report, model_card, parity_report

PARAMS = parse_params({"evaluate": {"min_accuracy": 0.9}})
HOLDOUT_WRONG = [*range(TEST, TEST + 20)]  # 20 of the holdout's 84 images
# production gets MNIST test images 0..29 wrong (30 of 700) and HOLDOUT_WRONG
CHAMPION_WRONG = [*range(30), *HOLDOUT_WRONG]


def exact_two_sided(n01: int, n10: int) -> float:
    """The binomial test's two-sided p-value by its definition: the probability of every
    outcome no likelier than the one seen (scipy.stats.binomtest's), with p = 1/2."""
    n = n01 + n10
    pmf = [math.comb(n, i) / 2**n for i in range(n + 1)]
    return min(1.0, sum(p for p in pmf if p <= pmf[n01] * (1 + 1e-7)))


@pytest.mark.parametrize(
    ("n01", "n10"), [(0, 6), (6, 0), (3, 3), (0, 0), (1, 9), (12, 30), (40, 41), (0, 1)]
)
def test_mcnemar_p_is_the_exact_binomial_test(n01: int, n10: int) -> None:
    assert mcnemar_p(n01, n10) == pytest.approx(exact_two_sided(n01, n10), rel=1e-12)
    assert mcnemar_p(n01, n10) == mcnemar_p(n10, n01)


def test_mcnemar_p_known_values() -> None:
    assert mcnemar_p(0, 6) == 0.03125 and mcnemar_p(5, 5) == 1.0 and mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(0, 5) == 0.0625
    assert mcnemar_p(300, 2000) < 1e-200  # big counts stay exact (no float overflow)
    with pytest.raises(ValueError, match=">= 0"):
        mcnemar_p(-1, 3)


@pytest.mark.parametrize(
    ("promotion", "problem"),
    [
        ({"significance": 0.0}, "significance"),
        ({"significance": 1.0}, "significance"),
        ({"min_gain": -0.1}, "min_gain"),
        ({"per_digit_tolerance": 2}, "per_digit_tolerance"),
        ({"margin": 0.1}, "margin"),
    ],
)
def test_promotion_params_are_validated(promotion: dict, problem: str) -> None:
    with pytest.raises(ParamsError, match=problem):
        parse_params({"registry": {"promotion": promotion}})
    with pytest.raises(ParamsError, match="promotion_margin"):
        parse_params({"registry": {"promotion_margin": 0.0}})


def policy(**promotion) -> object:
    return parse_params({"evaluate": {"min_accuracy": 0.9}, "registry": {"promotion": promotion}})


@pytest.fixture
def arena(tmp_path: Path):
    """A registry whose production (v1) gets CHAMPION_WRONG (and no holdout image) wrong;
    `challenge(wrong, params)` registers a challenger and returns the registration."""
    data_dir, extra_dir = tmp_path / "mnist", tmp_path / "ingested"
    write_test_set(data_dir)
    write_holdout(extra_dir)
    registry = Registry(tmp_path / "registry", MODEL)
    seeds = iter(range(1, 100))

    def challenge(wrong, params=PARAMS):
        seed = next(seeds)
        candidate = paired_candidate(tmp_path / f"c{seed}", seed, wrong, data_dir, extra_dir)
        return register_candidate(registry, candidate, params)

    first = challenge(CHAMPION_WRONG)
    assert (first.version, first.alias) == (1, "production") and "first version" in first.reason
    return registry, challenge


def test_production_is_read_once_for_the_comparison(arena, monkeypatch) -> None:
    """Its card is read once for the comparison (and once before, when the registration looks
    for a version with the same files), and its model.onnx checked against that card: a store
    one round trip away pays for each read."""
    registry, challenge = arena
    read, asked = registry.storage.read, []

    def counted(key: str) -> bytes | None:
        asked.append(key)
        return read(key)

    monkeypatch.setattr(registry.storage, "read", counted)
    assert challenge([*range(27), *HOLDOUT_WRONG]).champion == 1
    assert asked.count(f"{MODEL}/v1/card.json") == 2, asked


def test_a_few_images_better_stays_staging_a_clear_gain_is_promoted(arena) -> None:
    registry, challenge = arena
    few = challenge([*range(27), *HOLDOUT_WRONG])  # 3 more right out of 700, none lost: p 0.25
    assert (few.alias, few.champion) == ("staging", 1)
    assert (
        few.reason
        == "not significantly better than production v1 on MNIST test (n10 3 / n01 0, p 0.25)"
    )
    evidence = registry.card(few.version)["decision"]["evidence"]
    assert evidence["mnist"] | {"per_digit": None} == {
        "images": TEST,
        "paired": True,
        "challenger_accuracy": 673 / 700,
        "champion_accuracy": 670 / 700,
        "gain": 3 / 700,
        "n01": 0,
        "n10": 3,
        "p_value": 0.25,
        "per_digit": None,
        "verdict": "same",
        "why": "n10 3 / n01 0, p 0.25",
    }
    assert evidence["mnist"]["per_digit"]["7"] == pytest.approx(1 / 70)  # image 27
    assert evidence["mnist"]["per_digit"]["0"] == 0.0
    assert evidence["holdout"]["n01"] == evidence["holdout"]["n10"] == 0
    assert evidence["significance"] == 0.05 and evidence["per_digit_tolerance"] == 0.005
    # 25 more right, none lost: significant, but a gain of 25/700 < min_gain 0.05
    small = challenge([*range(5), *HOLDOUT_WRONG], policy(min_gain=0.05))
    assert small.alias == "staging" and "min_gain 0.05" in small.reason
    clear = challenge([*range(5), *HOLDOUT_WRONG])
    assert clear.alias == "production"
    assert (
        clear.reason
        == "better than production v1 on MNIST test (n10 25 / n01 0, p 5.96e-08 < 0.05)"
    )
    assert registry.aliases() == {"production": clear.version, "staging": small.version}
    assert registry.card(clear.version)["decision"]["evidence"]["mnist"]["n10"] == 25


def test_a_digit_dropping_beyond_the_tolerance_blocks_a_better_model(arena) -> None:
    registry, challenge = arena
    # 25 images gained (two of them 3s), 4 lost (all 3s): digit 3 drops 2/70 = 0.0286 > 0.005
    losing_threes = [*range(5), 33, 43, 53, 63, *HOLDOUT_WRONG]
    dropped = challenge(losing_threes)
    assert dropped.alias == "staging"
    assert dropped.reason == "worse than production v1 on MNIST test (digit 3 drops 0.0286 > 0.005)"
    mnist = registry.card(dropped.version)["decision"]["evidence"]["mnist"]
    assert (mnist["n01"], mnist["n10"], mnist["verdict"]) == (4, 25, "worse")
    assert mnist["p_value"] < 0.001 and mnist["per_digit"]["3"] == pytest.approx(-2 / 70)
    loose = challenge(losing_threes, policy(per_digit_tolerance=0.03))
    assert loose.alias == "production"


def test_mnist_decides_before_the_holdout(arena) -> None:
    registry, challenge = arena
    # Right on every holdout image (20 more than production) but 30 more MNIST mistakes.
    worse_mnist = challenge(range(60))
    assert worse_mnist.alias == "staging"
    assert worse_mnist.reason.startswith("worse than production v1 on MNIST test (digit ")
    mnist = registry.card(worse_mnist.version)["decision"]["evidence"]["mnist"]
    assert (mnist["n01"], mnist["n10"], mnist["verdict"]) == (30, 0, "worse")
    held = registry.card(worse_mnist.version)["decision"]["evidence"]["holdout"]
    assert (held["n01"], held["n10"], held["images"], held["verdict"]) == (0, 20, 84, "better")
    # Better on MNIST test, 20 more holdout mistakes.
    worse_holdout = challenge([*range(5), *range(TEST, TEST + 40)])
    assert worse_holdout.alias == "staging"
    assert (
        worse_holdout.reason
        == "worse than production v1 on the extra holdout (n10 0 / n01 20, p 1.91e-06 < 0.05)"
    )
    # As good as production on MNIST test, better on the holdout: the policy decides (by
    # default the users' labels never promote a model on their own).
    same_mnist = challenge(range(30))
    assert same_mnist.alias == "staging" and "not significantly better" in same_mnist.reason
    # Promoting on the holdout still needs no loss at all on MNIST test: one more mistake
    # (image 30, not significant, within a loose per-digit tolerance) keeps it staging.
    trusting = policy(promote_on_holdout=True, per_digit_tolerance=0.05)
    one_lost = challenge(range(31), trusting)
    assert one_lost.alias == "staging" and "not significantly better" in one_lost.reason
    by_holdout = challenge(range(30), policy(promote_on_holdout=True))
    assert by_holdout.alias == "production"
    assert "better than production v1 on the extra holdout (n10 20 / n01 0" in by_holdout.reason
    assert ", no loss on MNIST test (" in by_holdout.reason


def test_the_evidence_is_shown_by_models_show(arena, tmp_path: Path) -> None:
    registry, challenge = arena
    done = challenge([*range(5), *HOLDOUT_WRONG])
    assert (
        "as production: better than production v1 on MNIST test (n10 25 / n01 0, p 5.96e-08"
        in done.summary()
    )
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"evaluate": {"min_accuracy": 0.9}}))
    opts = ["--root", str(tmp_path), "--params", str(params), "models", "show"]
    shown = CliRunner().invoke(app, [*opts, str(done.version)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert (
        "decision     production: better than production v1 on MNIST test (n10 25" in shown.output
    )
    assert any(
        line.startswith("evidence     MNIST test: better, n10 25 / n01 0, p 5.96e-08")
        for line in lines
    ), lines
    assert any(line.startswith("             extra holdout: same, n10 0 / n01 0") for line in lines)
    first = CliRunner().invoke(app, [*opts, "1"]).output
    assert "evidence     none (no production version to compare with)" in first


def test_predictions_not_the_ones_metrics_names_are_refused(arena, tmp_path: Path) -> None:
    registry, _ = arena
    mnist = tmp_path / "mnist"
    candidate = paired_candidate(tmp_path / "c", 90, [], mnist)
    candidate.predictions.write_text("index,actual,predicted,confidence\n0,0,0,0.9\n")
    with pytest.raises(PipelineError, match="predictions.csv has sha256 .* run `mnist-pipeline"):
        register_candidate(registry, candidate, PARAMS)
    other = paired_candidate(tmp_path / "d", 91, [], mnist)
    write_test_set(tmp_path / "other")
    labels = (mnist / "t10k-labels-idx1-ubyte").read_bytes()
    (tmp_path / "other" / "t10k-labels-idx1-ubyte").write_bytes(labels[:-1] + b"\x05")
    with pytest.raises(RegistryError, match="does not describe the MNIST test set"):
        register_candidate(registry, replace(other, data_dir=tmp_path / "other"), PARAMS)
    assert [card["version"] for card in registry.versions()] == [1]  # nothing stored


class ChampionOnly:
    """The part of a registry the decision reads: production's card and model.onnx bytes."""

    def __init__(self, name: str, champion: int | None, read_card, onnx: Path) -> None:
        self.name, self.champion, self.read_card, self.onnx = name, champion, read_card, onnx

    def aliases(self) -> dict[str, int]:
        return {} if self.champion is None else {"production": self.champion}

    def card(self, version: int) -> dict:
        return self.read_card(version)

    def read_file_of(self, card: dict, relpath: str) -> bytes:
        assert relpath == "model.onnx" and card["version"] == self.champion
        return self.onnx.read_bytes()


def decide(tmp_path: Path, metrics: Metrics, read_card, extra_dir, percent: int) -> dict:
    """promotion.decide (no per-image MNIST answers) against a champion whose card comes from
    `read_card`, both models answering every image right; the decision as recorded."""
    onnx = tmp_path / "right.onnx"
    answering_onnx(onnx, answers())
    registry = ChampionOnly("m", 3, read_card, onnx)
    return promotion.decide(
        registry,
        metrics,
        PARAMS.registry.promotion,
        onnx=onnx.read_bytes(),
        mnist=None,
        extra_dir=extra_dir,
        holdout_percent=percent,
    ).to_dict()


def holdout_metrics(split: extra.Split) -> Metrics:
    """metrics.json of a candidate 0.96 on MNIST test, right on all of `split`."""
    held = {"total": len(split), "correct": len(split), "accuracy": 1.0}
    full = metrics_report(0.96, correct=96, total=100)
    full["extra"] |= held | {"holdout_sha256": extra.split_sha256(split)}
    return Metrics.model_validate(full)


CHAMPION_CARD = model_card(version=3)


def test_a_holdout_changed_since_evaluation_is_refused(tmp_path: Path) -> None:
    extra_dir = tmp_path / "ingested"
    split = write_holdout(extra_dir)
    metrics = holdout_metrics(split)
    relabelled = idx.encode_idx((split.labels + 1) % 10)  # ingest ran again after evaluate
    (extra_dir / extra.labels_file("holdout")).write_bytes(relabelled)
    with pytest.raises(RegistryError, match=r"is not the one metrics.json was measured on .*train"):
        decide(tmp_path, metrics, lambda v: CHAMPION_CARD, extra_dir, 20)
    with pytest.raises(RegistryError, match="names no ingested data"):
        decide(tmp_path, metrics, lambda v: CHAMPION_CARD, None, 20)


def test_a_holdout_ingested_after_an_evaluation_without_one_is_refused(tmp_path: Path) -> None:
    """Evaluated with no ingested digits, then ingest made a holdout: the candidate was never
    judged on it (min_extra_accuracy), so it is not registered (before: registered, the
    holdout never looked at)."""
    extra_dir = tmp_path / "ingested"
    write_holdout(extra_dir)
    metrics = Metrics.model_validate(metrics_report(0.96, correct=96, total=100))
    assert metrics.extra.total == 0
    with pytest.raises(RegistryError, match="measured without one: ingest ran since"):
        decide(tmp_path, metrics, lambda v: CHAMPION_CARD, extra_dir, 20)
    assert decide(tmp_path, metrics, lambda v: CHAMPION_CARD, tmp_path / "none", 20)


def test_an_unreadable_champion_is_named(tmp_path: Path) -> None:
    extra_dir = tmp_path / "ingested"
    metrics = holdout_metrics(write_holdout(extra_dir))

    def broken(version: int) -> dict:
        raise RegistryError(f"v{version}: card.json was modified after registration")

    with pytest.raises(RegistryError, match="cannot compare with production v3: v3: card.json"):
        decide(tmp_path, metrics, broken, extra_dir, 20)

    def unreachable(version: int) -> dict:
        raise StoreError("s3://models/mnist-cnn/v3/card.json: no answer from http://10.0.0.2")

    with pytest.raises(StoreError) as down:  # the store, not production: nothing to repair
        decide(tmp_path, metrics, unreachable, extra_dir, 20)
    assert str(down.value) == (
        "cannot read production v3 to compare with: s3://models/mnist-cnn/v3/card.json: no "
        "answer from http://10.0.0.2; try again once the store answers"
    )


def test_without_predictions_mnist_is_compared_unpaired(tmp_path: Path) -> None:
    extra_dir = tmp_path / "ingested"
    metrics = holdout_metrics(write_holdout(extra_dir))
    decision = decide(tmp_path, metrics, lambda v: CHAMPION_CARD, extra_dir, 20)
    mnist = decision["evidence"]["mnist"]
    assert mnist["paired"] is False and "n01" not in mnist and "p_value" not in mnist
    assert (mnist["challenger_accuracy"], mnist["champion_accuracy"]) == (0.96, 0.95)
    assert decision["alias"] == "production" and "unpaired" in decision["reason"]


def test_recorded_accuracies_alone_promote_only_a_gain() -> None:
    """Without per-image answers a tie is no evidence (it promoted as "better" with min_gain
    0), and a gain of exactly min_gain reaches it although floats say 0.0099999..."""
    none, some = PromotionParams(min_gain=0.0), PromotionParams(min_gain=0.01)
    assert unpaired(0.95, 0.95, 10_000, none).verdict == "same"
    assert unpaired(0.9501, 0.95, 10_000, none).verdict == "better"
    assert unpaired(0.9499, 0.95, 10_000, none).verdict == "worse"
    assert unpaired(0.9128, 0.9028, 10_000, some).verdict == "better"
    assert unpaired(0.9127, 0.9028, 10_000, some).verdict == "same"


def test_the_paired_limits_hold_at_their_boundaries() -> None:
    """p must be below the significance, a gain of exactly min_gain is enough, and a digit may
    drop by exactly the tolerance: 100 images, ten of each digit."""
    labels = np.arange(100) % 10
    champion, challenger = np.ones(100, bool), np.ones(100, bool)
    champion[:6] = False  # the challenger right on six more (digits 0-5), none lost: p 1/32
    assert mcnemar_p(0, 6) == 0.03125
    at = compare(champion, challenger, labels, PromotionParams(significance=0.03125))
    assert at.verdict == "same", at.why
    assert compare(champion, challenger, labels, PromotionParams(significance=0.0313)).verdict == (
        "better"
    )
    exact = compare(champion, challenger, labels, PromotionParams(min_gain=0.06))
    assert exact.gain == 0.06 and exact.verdict == "better", exact.why
    champion, challenger = np.ones(100, bool), np.ones(100, bool)
    challenger[3] = False  # one of the ten 3s lost: digit 3 drops 0.1
    at = compare(champion, challenger, labels, PromotionParams(per_digit_tolerance=0.1))
    assert at.per_digit["3"] == -0.1 and at.verdict == "same", at.why
    past = compare(champion, challenger, labels, PromotionParams(per_digit_tolerance=0.09))
    assert past.verdict == "worse"


def test_answers_that_do_not_line_up_or_none_at_all_are_refused() -> None:
    right = np.ones(4, bool)
    for champion, challenger, labels in (
        (right, right[:3], np.zeros(4, int)),  # one answer short
        (right, right, np.zeros(5, int)),  # a label too many
        (right.reshape(2, 2), right.reshape(2, 2), np.zeros((2, 2), int)),  # not one row
    ):
        with pytest.raises(ValueError, match="do not line up"):
            compare(champion, challenger, labels, PromotionParams())
    with pytest.raises(ValueError, match="no images to compare on"):
        compare(right[:0], right[:0], np.zeros(0, int), PromotionParams())


def test_a_champion_that_trained_on_todays_holdout_is_not_compared_on_it(tmp_path: Path) -> None:
    extra_dir = tmp_path / "ingested"
    metrics = holdout_metrics(write_holdout(extra_dir))
    card = {**CHAMPION_CARD, "data": {"dataset_sha256": "d" * 64, "extra_sha256": "e" * 64}}
    for theirs, ours, compared in ((20, 20, True), (30, 20, True), (10, 20, False)):
        trained = {**card, "params": {"ingest": {"holdout_percent": theirs}}}
        decision = decide(tmp_path, metrics, lambda v, c=trained: c, extra_dir, ours)
        assert ("holdout" in decision["evidence"]) is compared
        if not compared:
            assert decision["alias"] == "staging"
            assert (
                "production v3 was trained with 10: part of today's extra holdout"
                in decision["reason"]
            )
    mnist_only = {**CHAMPION_CARD, "params": {"ingest": {"holdout_percent": 10}}}
    assert mnist_only["data"]["extra_sha256"] == "none"  # saw no labelled digit at all
    decision = decide(tmp_path, metrics, lambda v: mnist_only, extra_dir, 20)
    assert "holdout" in decision["evidence"] and "trained with" not in decision["reason"]
    unknown = {**card, "data": {"dataset_sha256": "d" * 64, "extra_sha256": None}}
    decision = decide(tmp_path, metrics, lambda v: unknown, extra_dir, 20)  # no fingerprint
    assert "holdout" not in decision["evidence"] and decision["alias"] == "staging"
    assert "v3's card does not say which labelled digits it trained on" in decision["reason"]


def test_data_split_with_another_holdout_share_is_refused(tmp_path: Path) -> None:
    """params.yaml's ingest.holdout_percent changed after ingest: the card would record a share
    the data was not split with, and the leak check above would trust it."""
    import json

    from mnist_pipeline.inbox.ingest import split_of

    extra_dir = tmp_path / "ingested"
    metrics = holdout_metrics(write_holdout(extra_dir))
    shas = [f"{n:08x}" + "0" * 56 for n in (5, 15, 25, 35)]  # buckets 5, 15, 25, 35 of 100
    manifest = [{"sha256": sha, "split": split_of(sha, 20)} for sha in shas]
    (extra_dir / extra.MANIFEST_FILE).write_text(json.dumps(manifest))
    assert decide(tmp_path, metrics, lambda v: CHAMPION_CARD, extra_dir, 20)["alias"]
    with pytest.raises(RegistryError, match=r"split with another ingest.holdout_percent than 40 "):
        decide(tmp_path, metrics, lambda v: CHAMPION_CARD, extra_dir, 40)  # 25, 35 moved


def test_a_candidate_without_a_holdout_is_still_checked_against_the_split(
    tmp_path: Path,
) -> None:
    """Ingested with holdout_percent 0 (every digit trained on), registered with 20 in
    params.yaml: the card would claim a 20% holdout the model trained on, and the next
    candidate's production would be scored on digits it learnt. Refused like any other split."""
    import json

    extra_dir = tmp_path / "ingested"
    extra_dir.mkdir()
    shas = [f"{n:08x}" + "0" * 56 for n in (5, 15, 25)]  # buckets 5, 15, 25 of 100
    manifest = [{"sha256": sha, "split": "train"} for sha in shas]
    (extra_dir / extra.MANIFEST_FILE).write_text(json.dumps(manifest))
    for name in ("holdout", "train"):  # the images themselves play no part here
        empty = extra.Split.empty()
        (extra_dir / extra.images_file(name)).write_bytes(idx.encode_idx(empty.images))
        (extra_dir / extra.labels_file(name)).write_bytes(idx.encode_idx(empty.labels))
    metrics = Metrics.model_validate(metrics_report(0.96))
    assert metrics.extra.total == 0  # no holdout to score
    assert decide(tmp_path, metrics, lambda v: CHAMPION_CARD, extra_dir, 0)["alias"]
    with pytest.raises(RegistryError, match=r"split with another ingest.holdout_percent than 20 "):
        decide(tmp_path, metrics, lambda v: CHAMPION_CARD, extra_dir, 20)


def test_the_run_report_shows_the_evidence(arena, tmp_path: Path) -> None:
    from flows.artifacts import report_markdown
    from mnist_pipeline.core.layout import Layout
    from mnist_pipeline.core.reports import ModelCard, Parity

    registry, challenge = arena
    done = challenge([*range(5), *HOLDOUT_WRONG])
    card = ModelCard.model_validate(registry.card(done.version))
    metrics = Metrics.model_validate(metrics_report(0.99))
    parity = Parity.model_validate(parity_report())
    text = report_markdown(PARAMS, Layout(tmp_path), metrics, parity, done, card, 0.95)
    assert f"| registered | version {done.version}, alias `production`: {done.reason} |" in text
    assert "| promotion evidence | MNIST test: better, n10 25 / n01 0, p 5.96e-08" in text
    assert "; extra holdout: same, n10 0 / n01 0, p 1, gain +0.0000, worst digit" in text
