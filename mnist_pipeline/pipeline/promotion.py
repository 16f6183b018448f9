"""The promotion decision, reached before registering: champion vs challenger on the same images.

MNIST's test set never changes, so the champion's recorded MNIST score stands. The extra holdout
(labelled digits users added, held out by ingest) grows with the inbox: when the candidate was
evaluated on one, the production model is scored on that very holdout now (its verified
model.onnx, through onnxruntime), and both are compared on the pooled accuracy over MNIST test
plus that holdout: every labelled test image the project has counts once. The registry then
records the decision (and keeps the candidate as staging if production moved meanwhile).
Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from mnist_pipeline.core.contract import INPUT_NAME, LOGITS
from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.core.reports import Metrics, ModelCard
from mnist_pipeline.export.session import model_input, open_session
from mnist_pipeline.inbox import extra
from mnist_pipeline.inbox.extra import NO_EXTRA_SHA256
from mnist_pipeline.pipeline.versions import ONNX_FILE, read_card
from mnist_pipeline.registry import Registry
from mnist_pipeline.registry.aliases import PRODUCTION, STAGING
from mnist_pipeline.registry.registration import Decision


def holdout_correct(onnx: bytes, holdout: extra.Split) -> int:
    """How many holdout digits the ONNX model `onnx` classifies correctly."""
    session = open_session(onnx, where="production's model.onnx", outputs=(LOGITS,))
    (logits,) = session.run([LOGITS], {INPUT_NAME: model_input(holdout.images)})
    return int((logits.argmax(axis=1) == holdout.labels).sum())


def promotion_decision(
    name: str,
    accuracy: float,
    margin: float,
    champion: tuple[int, float] | None,
    measure: str = "accuracy",
) -> Decision:
    """Production if `accuracy` >= the champion's (version, accuracy) + margin, else staging;
    `measure` says in the reason what both accuracies were measured on."""
    if champion is None:
        reason = f"first version of {name}: production"
        return Decision(PRODUCTION, reason, None, {"margin": margin})
    version, best = champion
    compared = f"{measure} {accuracy:.4f} vs production v{version} {best:.4f} + margin {margin:g}"
    if accuracy >= best + margin:
        alias, reason = PRODUCTION, f"{compared}: promoted to production"
    else:
        alias, reason = STAGING, f"{compared}: not better, kept as staging"
    return Decision(alias, reason, version, {"margin": margin})


def candidate_holdout(metrics: Metrics, extra_dir: Path | None) -> extra.Split | None:
    """The extra holdout the candidate was evaluated on (None: it had none); RegistryError when
    the files at `extra_dir` are no longer the ones its metrics.json describes."""
    held = metrics.extra
    if not held.total:
        return None
    if extra_dir is None:
        raise RegistryError(
            "metrics.json scores an extra holdout, but the candidate names no ingested data "
            "(Candidate.extra_dir) to compare production on"
        )
    split = extra.read_split(extra_dir, "holdout")
    found, recorded = extra.split_sha256(split), held.holdout_sha256
    if found != recorded:
        raise RegistryError(
            f"the extra holdout in {extra_dir} (sha256 {found[:12]}) is not the one metrics.json "
            f"was measured on ({str(recorded)[:12]}): run `mnist-pipeline evaluate` again"
        )
    return split


def _trained_on_holdout(card: ModelCard, holdout_percent: int) -> str | None:
    """Why production cannot be scored fairly on today's holdout (None: it can): it trained on
    labelled digits with a smaller holdout share, so part of today's holdout was its training
    data (an image's side depends only on its hash and the share)."""
    if card.data.extra_sha256 in (None, NO_EXTRA_SHA256):
        return None  # trained on MNIST alone: none of the holdout was seen
    theirs = card.params.get("ingest", {}).get("holdout_percent")
    if isinstance(theirs, int) and theirs >= holdout_percent:
        return None
    return (
        f"ingest.holdout_percent is {holdout_percent}, production v{card.version} was "
        f"trained with {theirs}: part of today's extra holdout was its training data"
    )


def decide(
    registry: Registry,
    metrics: Metrics,
    margin: float,
    extra_dir: Path | None,
    holdout_percent: int,
) -> Decision:
    """The promotion decision for a candidate with `metrics` (its metrics.json) against the
    registry's production version, on MNIST test plus the candidate's extra holdout in
    `extra_dir`, made with `ingest.holdout_percent` = `holdout_percent`."""
    if not math.isfinite(margin) or margin < 0:
        raise RegistryError(f"promotion_margin must be >= 0, got {margin!r}")
    name = registry.name
    accuracy = metrics.accuracy
    holdout = candidate_holdout(metrics, extra_dir)
    champion = registry.aliases().get(PRODUCTION)
    if champion is None:
        return promotion_decision(name, accuracy, margin, None)
    try:
        card = read_card(registry, champion)
        recorded = card.metrics
        best = recorded.accuracy
        if holdout is None:
            return promotion_decision(name, accuracy, margin, (champion, best))
        leaked = _trained_on_holdout(card, holdout_percent)
        if leaked:
            reason = f"{leaked}; kept as staging: compare them yourself, then `models promote`"
            return Decision(STAGING, reason, champion, {"margin": margin})
        theirs = holdout_correct(registry.read_file(champion, ONNX_FILE), holdout)
        total = recorded.total + len(holdout)
        champion_pooled = (recorded.correct + theirs) / total
    except Exception as exc:  # an unreadable card, or onnxruntime refusing its model
        raise RegistryError(
            f"cannot compare with production v{champion}: {exc}; "
            "point production at an intact version with `models promote`"
        ) from None
    ours = metrics.extra.correct
    pooled = (metrics.correct + ours) / (metrics.total + len(holdout))
    measure = f"accuracy on MNIST test + the {len(holdout)}-image extra holdout"
    decision = promotion_decision(name, pooled, margin, (champion, champion_pooled), measure)
    holdout_record = {
        "holdout_sha256": metrics.extra.holdout_sha256,
        "images": len(holdout),
        "candidate_correct": ours,
        "champion_correct": theirs,
    }
    return replace(decision, evidence={**decision.evidence, "holdout": holdout_record})
