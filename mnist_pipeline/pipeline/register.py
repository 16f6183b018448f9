"""Register stage: store what one run produced as the next version of the model (torch-free).

The pipeline does all the judging before the registry is asked: the candidate's reports must
hold a passing gate and parity verdict for these very files (candidate.check_reports), the
promotion decision is reached against production on the same images (promotion.py), and the
card's description says how the model was made (card.py), and the version gets the drift
reference measured on MNIST test (reference.py). The registry then stores the files,
decides the version number and records the decision. The card records the effective params
(`model` and `train` as the weights were trained, from the training record; the rest as
configured now), which is why this stage, unlike the others, takes all of them.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from mnist_pipeline.core.errors import PipelineError, RegistryError, StoreError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import Params
from mnist_pipeline.core.reports import (
    Metrics,
    ModelCard,
    Parity,
    TrainRecord,
    parse_json_report,
    parse_report,
)
from mnist_pipeline.monitoring.drift import REFERENCE_FILE
from mnist_pipeline.pipeline import announce, promotion
from mnist_pipeline.pipeline.candidate import (
    Candidate,
    RunReports,
    candidate_from_layout,
    check_evaluated_data,
    check_reports,
    exported_params,
)
from mnist_pipeline.pipeline.card import describe, lineage
from mnist_pipeline.pipeline.evidence import candidate_answers
from mnist_pipeline.pipeline.reference import drift_reference
from mnist_pipeline.pipeline.versions import (
    IDENTITY,
    METRICS_FILE,
    ONNX_FILE,
    PARITY_FILE,
    STATE_DICT_FILE,
    TRAIN_RECORD_FILE,
    open_registry,
)
from mnist_pipeline.registry import Registration, Registry, Submission
from mnist_pipeline.registry.aliases import STAGING
from mnist_pipeline.registry.registration import ChampionMoved, NotPromotable

DECISION_ATTEMPTS = 20
REPORT_MODELS = {METRICS_FILE: Metrics, PARITY_FILE: Parity, TRAIN_RECORD_FILE: TrainRecord}


def register(params: Params, layout: Layout, skip_same_inputs: bool = False) -> Registration:
    """Stage entry: register layout's outputs, with their inputs fingerprint, as a version
    (not when a version already holds the same files, or, with `skip_same_inputs`, inputs)."""
    registry = open_registry(params.registry, layout)
    candidate = candidate_from_layout(layout)  # a missing output names the stage to run
    return register_candidate(registry, candidate, params, skip_same_inputs)


def register_candidate(
    registry: Registry,
    candidate: Candidate,
    params: Params,
    skip_same_inputs: bool = False,
) -> Registration:
    """Check `candidate`, decide its alias against production (`registry.promotion`), and
    register it; with `registry.approval: required` a production decision is registered as
    staging and the result's `pending` says production awaits approval."""
    contents = candidate.read()
    hashes = {rel: hashlib.sha256(data).hexdigest() for rel, data in contents.items()}
    reports = RunReports.parse(contents)
    _, trained = check_reports(reports, hashes, params)  # refuses a broken chain
    trained = exported_params(trained, contents[ONNX_FILE])  # the card names the file's opset
    check_evaluated_data(candidate, reports.metrics)  # the images read below are those scored
    fingerprint = reports.record.fingerprint
    reference = drift_reference(candidate, reports.metrics)  # None: no predictions to measure
    if reference is not None:
        contents[REFERENCE_FILE] = reference  # stored and listed in the card like the others
    registry.restore_lost(contents, IDENTITY)  # before production, perhaps this one, is read
    description = describe(
        metrics=reports.metrics,
        parity=reports.parity,
        params=trained,
        origin=lineage(candidate.workdir),
        fingerprint=fingerprint,
    )
    mnist = None
    if candidate.predictions is not None:  # read once, when there is a production to compare
        where = (candidate.predictions, candidate.data_dir, reports.metrics)
        mnist = functools.cache(functools.partial(candidate_answers, *where))
    actor = announce.current_actor()
    for _ in range(DECISION_ATTEMPTS):
        decision = promotion.decide(  # outside any lock: onnxruntime scores production
            registry,
            reports.metrics,
            params.registry.promotion,
            onnx=contents[ONNX_FILE],
            mnist=mnist,
            extra_dir=candidate.extra_dir,
            holdout_percent=params.ingest.holdout_percent,
        )
        decision = promotion.held_for_approval(decision, params.registry.approval)
        submission = Submission(
            files=contents,
            description=description,
            decision=decision,
            identity=IDENTITY,
            fingerprint=fingerprint.sha256,
        )
        try:
            done = registry.register(submission, skip_same_inputs=skip_same_inputs, actor=actor)
        except ChampionMoved:
            continue  # another run changed production meanwhile: compare with the new one
        announce.registered(registry, done, actor)
        proposed = decision.evidence.get("proposed")
        if done.registered and proposed is not None and done.alias == STAGING:
            return replace(done, pending=str(proposed))  # held back for approval
        return done
    raise RegistryError(f"production kept moving during {DECISION_ATTEMPTS} comparisons")


def chain_problems(registry: Registry, version: int, card: ModelCard) -> list[str]:
    """Where a version's stored reports contradict its card (call after its files verified):
    parity must have checked the card's model.onnx, every report must describe the card's
    model.pt, and metrics must hold the card's accuracy. A store that does not answer raises
    StoreError: that says nothing against the version."""
    files, problems = card.files, []
    missing = [name for name in (ONNX_FILE, STATE_DICT_FILE) if name not in files]
    if missing:  # a card edited and sealed again: nothing could serve or re-export it
        problems.append(f"the card lists no {' and no '.join(missing)}")
    found: dict[str, Any] = {}
    for name, model in (
        (METRICS_FILE, Metrics),
        (PARITY_FILE, Parity),
        (TRAIN_RECORD_FILE, TrainRecord),
    ):
        if name in files:  # versions registered before model.json existed lack it
            try:
                found[name] = parse_json_report(model, registry.read_file(version, name), name)
            except StoreError:
                raise  # the store did not answer: nothing is known against the version
            except PipelineError as exc:
                problems.append(str(exc))
    parity, metrics = found.get(PARITY_FILE), found.get(METRICS_FILE)
    if parity is not None and parity.onnx_sha256 != files.get(ONNX_FILE):
        problems.append(f"{PARITY_FILE} checked another {ONNX_FILE} than the card's")
    for name, report in found.items():
        if report.state_dict_sha256 != files.get(STATE_DICT_FILE):
            problems.append(f"{name} describes another {STATE_DICT_FILE} than the card's")
    if metrics is not None and metrics.accuracy != card.metrics.accuracy:
        problems.append(
            f"the card's accuracy {card.metrics.accuracy!r} is not "
            f"{METRICS_FILE}'s {metrics.accuracy!r}"
        )
    return problems


def promotion_problems(registry: Registry, version: int) -> list[str]:
    """Why `version` must not be promoted by hand: its card is not one this pipeline writes, or
    chain_problems (a card sealed again without model.onnx would leave nothing to serve)."""
    try:
        typed = parse_report(ModelCard, registry.card(version), "its card")
    except StoreError:
        raise
    except PipelineError as exc:
        return [str(exc)]
    return chain_problems(registry, version, typed)


def require_promotable(registry: Registry, verb: str = "promoted") -> Callable[[int], None]:
    """Registry.promote/rollback's `accept`: NotPromotable for what promotion_problems finds."""

    def accept(version: int) -> None:
        problems = promotion_problems(registry, version)
        if problems:
            raise NotPromotable(f"v{version} cannot be {verb}: " + "; ".join(problems))

    return accept


def verify(registry: Registry) -> list[str]:
    """The registry's own audit, plus each intact version's card and reports checked."""
    problems = registry.verify()
    damaged = {p.partition(":")[0] for p in problems}
    for version, card, _ in registry.catalogue():
        if card is None or f"v{version}" in damaged:
            continue
        try:
            typed = parse_report(ModelCard, card, f"v{version}: its card")
        except PipelineError as exc:
            problems.append(str(exc))
            continue
        try:
            problems += [f"v{version}: {p}" for p in chain_problems(registry, version, typed)]
        except StoreError as exc:  # as the registry's own audit lists one: the next go on
            if exc.whole_store:  # so would every other read
                raise
            problems.append(f"v{version}: {exc}")
    return problems
