"""The promotion decision, reached before registering: champion vs challenger on the same images.

Both are compared image by image (McNemar's exact test, per-digit deltas; evaluation/paired.py)
on MNIST test, and separately on the extra holdout (labelled digits users added, held out by
ingest) when the candidate was evaluated on one. The challenger's MNIST answers are evaluate's
predictions CSV; production's come from its verified model.onnx (onnxruntime), as do both
models' answers on the holdout. The rules, in order (docs/registry.md#promotion):

1. no production yet: production;
2. worse on MNIST test (significant loss, or a digit dropping beyond per_digit_tolerance):
   staging, whatever the holdout says;
3. significantly worse on the holdout: staging;
4. significantly better on MNIST test (gain >= min_gain): production;
5. with promote_on_holdout, not better on MNIST test (by rule 4) but no loss there at all (gain
   >= 0: no significant change, or a significant gain below min_gain) and significantly
   better on the holdout: production;
6. otherwise (not significantly better): staging.

A challenger without per-image answers (a Candidate built without `predictions`; the pipeline
always has them) is compared on recorded MNIST test accuracy alone (above production's, by
min_gain at least), marked unpaired in the evidence. The registry records the decision and its
evidence (and keeps the candidate as staging if production moved meanwhile). With
`registry.approval: required` a production decision is registered as staging, proposed for
production (`held_for_approval`). Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mnist_pipeline.core import json_text
from mnist_pipeline.core.errors import RegistryError, StoreError
from mnist_pipeline.core.reports import Metrics, ModelCard, PromotionEvidence
from mnist_pipeline.core.service_params import PromotionParams
from mnist_pipeline.evaluation import paired
from mnist_pipeline.inbox import extra
from mnist_pipeline.inbox.extra import NO_EXTRA_SHA256
from mnist_pipeline.inbox.ingest import split_of
from mnist_pipeline.pipeline.evidence import MnistAnswers, onnx_correct
from mnist_pipeline.pipeline.versions import ONNX_FILE, typed_card
from mnist_pipeline.registry import RESTART, Registry
from mnist_pipeline.registry.aliases import PRODUCTION, STAGING
from mnist_pipeline.registry.registration import Decision


def rule(evidence: PromotionEvidence, champion: int) -> tuple[str, str]:
    """The alias (and why) the comparisons with production v`champion` call for, by the rules
    in the module docstring."""
    mnist, held = evidence.mnist, evidence.holdout
    than = f"than production v{champion}"
    assert mnist is not None
    if mnist.verdict == "worse":
        return STAGING, f"worse {than} on MNIST test ({mnist.why})"
    if held is not None and held.verdict == "worse":
        return STAGING, f"worse {than} on the extra holdout ({held.why})"
    if mnist.verdict == "better":
        return PRODUCTION, f"better {than} on MNIST test ({mnist.why})"
    if (
        held is not None
        and held.verdict == "better"
        and evidence.promote_on_holdout
        and mnist.gain >= 0
    ):
        return PRODUCTION, (
            f"better {than} on the extra holdout ({held.why}), no loss on MNIST test ({mnist.why})"
        )
    return STAGING, f"not significantly better {than} on MNIST test ({mnist.why})"


def held_for_approval(decision: Decision, approval: str) -> Decision:
    """`decision` as registered under `registry.approval`: with "required", a production
    decision becomes staging proposed for production (its evidence kept whole), to be moved
    only when a person approves it (pipeline/approval.py)."""
    if approval != "required" or decision.alias != PRODUCTION:
        return decision
    reason = f"{decision.reason}; awaits approval for production (registry.approval: required)"
    evidence = {**decision.evidence, "proposed": PRODUCTION}
    return Decision(STAGING, reason, decision.champion, evidence)


def check_split_with(extra_dir: Path, holdout_percent: int) -> None:
    """RegistryError when ingest's manifest in `extra_dir` put an image on the other side than
    `holdout_percent` does: the data was split with another share (the card would record the
    wrong one, and promotion's leak check trusts it)."""
    try:
        manifest = json_text.loads(extra.checked(extra_dir, extra.MANIFEST_FILE))
        moved = [e for e in manifest if split_of(e["sha256"], holdout_percent) != e["split"]]
    except FileNotFoundError:
        return  # written by an ingest before manifests: nothing to check against
    except (ValueError, TypeError, KeyError) as exc:
        raise RegistryError(f"{extra_dir / extra.MANIFEST_FILE} is malformed ({exc})") from None
    if moved:
        raise RegistryError(
            f"{extra_dir} was split with another ingest.holdout_percent than {holdout_percent} "
            f"({len(moved)} image(s) on the other side): run `mnist-pipeline ingest`, then "
            "train and evaluate again"
        )


_EVALUATE_AGAIN = (
    "ingest ran since; run `mnist-pipeline train` (if the model trains on ingested digits) and "
    "`evaluate` again, or `dvc repro`"
)


def candidate_holdout(metrics: Metrics, extra_dir: Path | None) -> extra.Split | None:
    """The extra holdout the candidate was evaluated on (None: it had none); RegistryError when
    the files at `extra_dir` are no longer the ones its metrics.json describes."""
    held = metrics.extra
    if not held.total:
        if extra_dir is not None and len(extra.read_split(extra_dir, "holdout")):
            raise RegistryError(
                f"{extra_dir} has an extra holdout, and metrics.json was measured without one: "
                f"{_EVALUATE_AGAIN}"
            )
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
            f"was measured on ({str(recorded)[:12]}): {_EVALUATE_AGAIN}"
        )
    return split


def _trained_on_holdout(card: ModelCard, holdout_percent: int) -> str | None:
    """Why production cannot be scored fairly on today's holdout (None: it can): it trained on
    labelled digits with a smaller holdout share, so part of today's holdout was its training
    data (an image's side depends only on its hash and the share; a copy of a digit that
    arrives later can move it to the holdout once, which favours production, inbox/ingest.py)."""
    if card.data.extra_sha256 is None:  # a card without a fingerprint: its data is unknown
        return (
            f"production v{card.version}'s card does not say which labelled digits it trained "
            "on, so it may have trained on part of today's extra holdout"
        )
    if card.data.extra_sha256 == NO_EXTRA_SHA256:
        return None  # trained on MNIST alone: none of the holdout was seen
    theirs = card.params.get("ingest", {}).get("holdout_percent")
    if isinstance(theirs, int) and theirs >= holdout_percent:
        return None
    return (
        f"ingest.holdout_percent is {holdout_percent}, production v{card.version} was "
        f"trained with {theirs}: part of today's extra holdout was its training data"
    )


def _versions(numbers: list[int]) -> str:
    """ "v1", "v1-v3" or "v1, v3" (a gap left by a failed registration is not a range)."""
    if numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 1:
        return f"v{numbers[0]}-v{numbers[-1]}"
    return ", ".join(f"v{n}" for n in numbers)


def _restart_since(registry: Registry) -> str | None:
    """Who restarted the alias document and when, if production has had no version since (a
    restart clears every alias: the rule "no production yet" is for a registry's first)."""
    events = registry.alias_log()["events"]
    restarts = [event for event in events if event.get("action") == RESTART]
    if not restarts:
        return None
    last = restarts[-1]
    return f"by {last.get('actor')} at {last.get('time')}"


def decide(
    registry: Registry,
    metrics: Metrics,
    policy: PromotionParams,
    *,
    onnx: bytes,
    mnist: Callable[[], MnistAnswers] | None,
    extra_dir: Path | None,
    holdout_percent: int,
) -> Decision:
    """The promotion decision for a candidate (its metrics.json, model.onnx bytes and per-image
    MNIST test answers, loaded only when there is a production version) against the registry's
    production version, on MNIST test and the candidate's extra holdout in `extra_dir`, made
    with `ingest.holdout_percent`."""
    holdout = candidate_holdout(metrics, extra_dir)
    if extra_dir is not None:  # also without a holdout: the card records the share
        check_split_with(extra_dir, holdout_percent)
    record = policy.model_dump() | {
        "holdout_sha256": None if holdout is None else metrics.extra.holdout_sha256
    }
    champion = registry.aliases().get(PRODUCTION)
    if champion is None and (restart := _restart_since(registry)) is not None:
        reason = (
            f"production was cleared by restart-aliases ({restart}) and no version promoted "
            "since: kept as staging, for a person to promote (`models promote N`)"
        )
        return Decision(STAGING, reason, None, {"evidence": PromotionEvidence(**record).to_dict()})
    if champion is None:
        evidence = PromotionEvidence(**record)
        earlier = registry.version_numbers()  # a rejected first proposal leaves no production
        reason = (
            f"no production version of {registry.name} to compare with ({_versions(earlier)} "
            "registered, none production): production"
            if earlier
            else f"first version of {registry.name}: production"
        )
        return Decision(PRODUCTION, reason, None, {"evidence": evidence.to_dict()})
    ours = None if holdout is None else onnx_correct(onnx, holdout, "the candidate's model.onnx")
    ours_mnist = None if mnist is None else mnist()  # the candidate's own files: not wrapped
    try:
        stored = registry.card(champion)  # its files are checked against this very card
        card = typed_card(registry, stored)
        leaked = None if holdout is None else _trained_on_holdout(card, holdout_percent)
        if leaked:
            reason = f"{leaked}; kept as staging: compare them yourself, then `models promote`"
            evidence = PromotionEvidence(**record | {"holdout_sha256": None})
            return Decision(STAGING, reason, champion, {"evidence": evidence.to_dict()})
        where = f"production v{champion}'s model.onnx"
        needed = mnist is not None or holdout is not None
        theirs_onnx = registry.read_file_of(stored, ONNX_FILE) if needed else b""
        if ours_mnist is None:
            recorded = card.metrics.accuracy
            on_mnist = paired.unpaired(metrics.accuracy, recorded, metrics.total, policy)
        else:
            test = ours_mnist.test
            theirs = onnx_correct(theirs_onnx, test, where)
            on_mnist = paired.compare(theirs, ours_mnist.correct, test.labels, policy)
        on_holdout = None
        if holdout is not None and ours is not None:
            theirs = onnx_correct(theirs_onnx, holdout, where)
            on_holdout = paired.compare(theirs, ours, holdout.labels, policy, per_digit_check=False)
    except StoreError as exc:  # the store did not answer: production may well be intact
        raise StoreError(
            f"cannot read production v{champion} to compare with: {exc}; try again once the "
            "store answers"
        ) from None
    except Exception as exc:  # an unreadable card, or onnxruntime refusing its model
        raise RegistryError(
            f"cannot compare with production v{champion}: {exc}; "
            "point production at an intact version with `models promote`"
        ) from None
    evidence = PromotionEvidence(**record, mnist=on_mnist, holdout=on_holdout)
    alias, reason = rule(evidence, champion)
    return Decision(alias, reason, champion, {"evidence": evidence.to_dict()})
