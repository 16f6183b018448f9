"""Champion vs challenger: promotion compares both versions on the same current extra holdout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.reports import Metrics
from mnist_pipeline.data import idx
from mnist_pipeline.inbox import extra
from mnist_pipeline.pipeline import promotion
from tests.reports import metrics_report, model_card

HOLDOUT = 50


class ChampionOnly:
    """The part of a registry the decision reads: production's card and model.onnx bytes."""

    def __init__(self, name: str, champion: int | None, read_card, champion_onnx) -> None:
        self.name, self.champion = name, champion
        self.read_card, self.champion_onnx = read_card, champion_onnx

    def aliases(self) -> dict[str, int]:
        return {} if self.champion is None else {"production": self.champion}

    def card(self, version: int) -> dict:
        return self.read_card(version)

    def read_file(self, version: int, relpath: str) -> bytes:
        assert relpath == "model.onnx"
        return Path(self.champion_onnx(version)).read_bytes()


def decide(name, metrics, margin, champion, read_card, champion_onnx, extra_dir, percent) -> dict:
    """promotion.decide against a champion given by callables; the decision as recorded."""
    registry = ChampionOnly(name, champion, read_card, champion_onnx)
    full = metrics_report(metrics["accuracy"], correct=metrics["correct"], total=metrics["total"])
    full["extra"] |= metrics["extra"]
    report = Metrics.model_validate(full)
    return promotion.decide(registry, report, margin, extra_dir, percent).to_dict()


def write_holdout(extra_dir: Path, seed: int) -> extra.Split:
    """A random extra holdout (and an empty train split), as ingest writes them."""
    rng = np.random.default_rng(seed)
    split = extra.Split(
        rng.integers(0, 256, (HOLDOUT, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, HOLDOUT, dtype=np.uint8),
    )
    extra_dir.mkdir(parents=True, exist_ok=True)
    for name, parts in (("holdout", split), ("train", extra.Split.empty())):
        (extra_dir / extra.images_file(name)).write_bytes(idx.encode_idx(parts.images))
        (extra_dir / extra.labels_file(name)).write_bytes(idx.encode_idx(parts.labels))
    return split


def correct_of(onnx_path: Path, split: extra.Split) -> int:
    """The ONNX model's correct answers on `split`, computed here independently."""
    session = ort.InferenceSession(str(onnx_path))
    images = split.images[:, None].astype(np.float32) / 255
    probabilities = session.run(["probabilities"], {"image": images})[0]
    return int((probabilities.argmax(axis=1) == split.labels).sum())


def candidate_metrics(split: extra.Split | None, extra_correct: int) -> dict:
    held = {"total": 0}
    if split is not None:
        held = {
            "total": len(split),
            "correct": extra_correct,
            "accuracy": extra_correct / len(split),
            "holdout_sha256": extra.split_sha256(split),
        }
    return {"accuracy": 0.90, "correct": 90, "total": 100, "extra": held}


CHAMPION_CARD = model_card(version=3)


def test_both_are_scored_on_the_current_holdout(tmp_path: Path, untrained: Layout) -> None:
    extra_dir = tmp_path / "ingested"
    split = write_holdout(extra_dir, seed=1)
    theirs = correct_of(untrained.onnx, split)
    asked = []

    def champion_onnx(version: int) -> Path:
        asked.append(version)
        return untrained.onnx

    # Worse on MNIST test (0.90 vs 0.95), but it learnt the new digits: pooled, it is better.
    decision = decide(
        "m",
        candidate_metrics(split, HOLDOUT),
        0.0,
        3,
        lambda v: CHAMPION_CARD,
        champion_onnx,
        extra_dir,
        20,
    )
    assert asked == [3]
    assert decision["alias"] == "production" and decision["champion"] == 3
    pooled = (95 + theirs) / (100 + HOLDOUT)
    assert (
        f"the {HOLDOUT}-image extra holdout 0.9333 vs production v3 {pooled:.4f}"
        in decision["reason"]
    )
    assert decision["holdout"] == {
        "holdout_sha256": extra.split_sha256(split),
        "images": HOLDOUT,
        "candidate_correct": HOLDOUT,
        "champion_correct": theirs,
    }
    # As bad as the champion on the holdout: MNIST decides, and it stays staging.
    decision = decide(
        "m",
        candidate_metrics(split, theirs),
        0.0,
        3,
        lambda v: CHAMPION_CARD,
        champion_onnx,
        extra_dir,
        20,
    )
    assert decision["alias"] == "staging"


def test_without_a_holdout_mnist_test_accuracy_decides(untrained: Layout) -> None:
    decision = decide(
        "m",
        candidate_metrics(None, 0),
        0.0,
        3,
        lambda v: CHAMPION_CARD,
        lambda v: untrained.onnx,
        None,
        20,
    )
    assert decision["alias"] == "staging" and "holdout" not in decision
    assert decision["reason"].startswith("accuracy 0.9000 vs production v3 0.9500")
    first = decide("m", candidate_metrics(None, 0), 0.0, None, dict, lambda v: Path(), None, 20)
    assert first["alias"] == "production" and "first version" in first["reason"]


def test_a_holdout_changed_since_evaluation_is_refused(tmp_path: Path, untrained: Layout) -> None:
    extra_dir = tmp_path / "ingested"
    split = write_holdout(extra_dir, seed=1)
    metrics = candidate_metrics(split, 10)
    write_holdout(extra_dir, seed=2)  # ingest ran again after evaluate
    with pytest.raises(RegistryError, match=r"is not the one metrics.json was measured on"):
        decide(
            "m", metrics, 0.0, 3, lambda v: CHAMPION_CARD, lambda v: untrained.onnx, extra_dir, 20
        )
    with pytest.raises(RegistryError, match="names no ingested data"):
        decide("m", metrics, 0.0, 3, lambda v: CHAMPION_CARD, lambda v: untrained.onnx, None, 20)


def test_an_unreadable_champion_is_named(tmp_path: Path) -> None:
    extra_dir = tmp_path / "ingested"
    split = write_holdout(extra_dir, seed=1)

    def broken(version: int) -> dict:
        raise RegistryError(f"v{version}: card.json was modified after registration")

    with pytest.raises(RegistryError, match="cannot compare with production v3: v3: card.json"):
        decide("m", candidate_metrics(split, 10), 0.0, 3, broken, lambda v: Path(), extra_dir, 20)


def test_a_champion_that_trained_on_todays_holdout_is_not_compared_on_it(
    tmp_path: Path, untrained: Layout
) -> None:
    extra_dir = tmp_path / "ingested"
    split = write_holdout(extra_dir, seed=1)
    card = {**CHAMPION_CARD, "data": {"dataset_sha256": "d" * 64, "extra_sha256": "e" * 64}}
    for theirs, ours, compared in ((20, 20, True), (30, 20, True), (10, 20, False)):
        trained = {**card, "params": {"ingest": {"holdout_percent": theirs}}}
        decision = decide(
            "m",
            candidate_metrics(split, HOLDOUT),
            0.0,
            3,
            lambda v, c=trained: c,
            lambda v: untrained.onnx,
            extra_dir,
            ours,
        )
        assert ("holdout" in decision) is compared
        if not compared:
            assert decision["alias"] == "staging"
            assert (
                "production v3 was trained with 10: part of today's extra holdout"
                in decision["reason"]
            )
