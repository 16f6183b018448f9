"""A challenger beside production: shadowed off the response path, and a canary share.

`serve.shadow` names an alias or a version, followed by a second `ServedModel` (verified before
use exactly as production; a missing or refused version is logged and shown in GET /model, and
requests are answered by production regardless). `Challenger.answer` gives each /predict
request its answer:

- usually production's; the same preprocessed images then go to a queue (at most
  `serve.shadow_queue_images` waiting; beyond that they are skipped and counted) that a
  background thread classifies with the challenger, comparing its digits with production's;
- for `serve.canary_percent` of requests (canary.py) the challenger's, with production computed
  too on the request path, so that every canary image is compared and a canary that goes over a
  threshold steps back at once.

Both models' digits for each uploaded image are remembered by the SHA-256 of its bytes
(live.LabelMemory); when /feedback accepts a label for that image, both are scored (live.Tally,
per challenger version: GET /model's `shadow`, /metrics, `mnist-pipeline serve-report`).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import queue
import threading
import time
from typing import Any

import numpy as np

from mnist_pipeline.core.service_params import ServeParams
from mnist_pipeline.registry import Registry
from mnist_pipeline.serving.canary import Canary, trying
from mnist_pipeline.serving.canary_shared import SharedStepBacks
from mnist_pipeline.serving.challenger_metrics import ChallengerMetrics
from mnist_pipeline.serving.live import Answered, LabelMemory
from mnist_pipeline.serving.served_model import Loaded, ServedModel
from mnist_pipeline.serving.shadow_jobs import Job, Reply, waiting_jobs
from mnist_pipeline.serving.tallies import Tallies

logger = logging.getLogger("mnist_pipeline.serve")
GATHER_S = 0.05  # after a job arrives, how long the shadow thread lets others gather first


class Challenger:
    """The challenger of one server process: its model, shadow queue, canary and records."""

    def __init__(
        self,
        registry: Registry,
        limits: ServeParams,
        seed: int | None = None,
        shared: SharedStepBacks | None = None,
    ) -> None:
        if limits.shadow is None:
            raise ValueError("a challenger needs serve.shadow")
        self.model = ServedModel(registry, limits.shadow, role="shadow: ")
        self.limit = limits.shadow_queue_images
        self.canary = Canary(limits, registry.name, seed, shared)
        self.metrics: ChallengerMetrics | None = None
        self.tallies = Tallies()
        self.memory = LabelMemory()
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._waiting = 0  # images queued or being classified
        self._lock = threading.Lock()  # tallies, memory, _waiting
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    def start(self, interval_s: float, follow_events: bool) -> None:
        """Load the challenger now (a failure is logged and shown), follow its alias, and start
        the shadow thread."""
        self.model.refresh()
        self.model.follow(interval_s, then=self.canary.reread)  # a rejection moves no alias
        if follow_events:
            self.model.follow_events()
        self._thread = threading.Thread(target=self._work, name="shadow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.model.stop()
        self._jobs.put(None)

    def beside(self, production: ServedModel) -> None:
        """Follow `production`: the canary share follows both models (canary.py)."""
        self.canary.follow(self.model, production)

    def count(self, metrics: ChallengerMetrics) -> None:
        """Record into `metrics` from now on (the canary share's gauge too)."""
        self.metrics = self.canary.metrics = metrics
        self.canary.share_changed()

    def answer(self, production: Loaded, digits: np.ndarray, uploads: list[bytes] | None) -> Reply:
        """The version that answers these images and its probabilities [N, 10]. Only
        production's own failure fails the request: the challenger's is logged."""
        challenger = self.model.current
        if challenger is None or challenger.version == production.version:  # nothing to try
            probabilities = production.probabilities(digits)
            return Reply(production, probabilities, probabilities)
        # hashed here, not in the queue: a job holds 64 bytes per image, not the upload
        keys = [hashlib.sha256(data).hexdigest() for data in uploads or ()]
        if self.model.problem is None and self.canary.takes(challenger.version):
            ours = production.probabilities(digits)  # its failure is the request's, as always
            try:
                answered = challenger.probabilities(digits)
            except Exception:  # noqa: BLE001 - production answers instead; logged in _failed
                try:
                    self._failed(challenger.version, production.version, len(digits))
                except Exception:  # noqa: BLE001 - as a record that fails: production answers
                    logger.exception("shadow: could not count the canary's failure")
                return Reply(production, ours, ours)  # not shadowed: it failed
            try:
                self._record(
                    challenger.version, production.version, ours.argmax(1), answered.argmax(1), keys
                )
            except Exception:  # noqa: BLE001 - the canary answered; only the record is lost
                logger.exception("shadow: could not record the canary's answers")
            return Reply(challenger, answered, ours)
        probabilities = production.probabilities(digits)
        try:
            job = Job(digits, probabilities.argmax(axis=1), keys, production.version, challenger)
            self._shadow(challenger.version, job)
        except Exception:  # noqa: BLE001 - the answer goes out regardless
            logger.exception("shadow: could not queue %d image(s)", len(digits))
        return Reply(production, probabilities, probabilities)

    def label(self, sha256: str, truth: int) -> None:
        """A trusted label for the uploaded image with this SHA-256 (from /feedback); a failure
        here is logged, never the feedback's."""
        try:
            self._label(sha256, truth)
        except Exception:  # noqa: BLE001 - the claim is stored whatever the record does
            logger.exception("shadow: could not score the label of %s", sha256[:12])

    def _label(self, sha256: str, truth: int) -> None:
        with self._lock:
            seen = self.memory.take(sha256, truth)  # None: scored when its answers are recorded
            stepped_back = seen is not None and self._score(seen, truth)
        if stepped_back:
            self.canary.share_changed()
        if seen is not None and self.metrics is not None:
            self.metrics.label(seen.version, seen.production == truth, seen.challenger == truth)

    def _score(self, seen: Answered, truth: int) -> bool:
        """Count a label for the image answered `seen` and judge its version (the caller holds
        the lock); True if it stepped back now."""
        tally = self.tallies.of(seen.version, seen.production_version, latest=False)
        tally.label(truth, seen.production, seen.challenger)
        # judged against the production version serving now (_judge), or the one compared with
        # last, not the one that answered this image (a late label, from before a rollback)
        against = self.tallies.last_against(seen.version, seen.production_version)
        return self._judge(seen.version, against)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no shadow image is waiting; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._waiting == 0, timeout_s)

    def status(self, production: int | None) -> dict[str, Any]:
        """GET /model's `shadow`: the challenger followed, queue, canary (beside `production`,
        the version production serves) and tallies: in `versions` each challenger version's
        against `production` (or, never compared with it, the production version it was last
        compared with), in `earlier` the others."""
        with self._lock:  # a step back (judge) writes the canary's record under it
            latest, earlier = self.tallies.shown(production)
            waiting = self._waiting
            canary = self.canary.status(trying(self.model), production)
        return {
            **self.model.status(),
            "queue": {"waiting": waiting, "limit": self.limit},
            "canary": canary,
            "versions": latest,
            "earlier": earlier,
        }

    def _judge(self, version: int, production: int) -> bool:
        """Judge the canary `version` on its tallies added up (the caller holds the lock); they
        are added up only while it can still step back. Its errors are compared with those of
        the production version serving now (`production` when that is not known: no production
        followed). True if it stepped back now."""
        if not self.canary.judges(version):
            return False
        serving = self.canary.production()
        production = production if serving is None else serving
        return self.canary.judge(*self.tallies.judged(version, production))

    def _shadow(self, version: int, job: Job) -> None:
        images = len(job.digits)
        with self._lock:
            full = self._waiting + images > self.limit
            if full:
                self.tallies.of(version, job.production_version).skipped += images
            else:
                self._waiting += images
                self.memory.queued(job.keys)
        if full:
            if self.metrics is not None:
                self.metrics.skipped(version, images)
            return
        self._jobs.put(job)

    def _record(
        self,
        version: int,
        production_version: int,
        production: np.ndarray,
        challenger: np.ndarray,
        keys: list[str],
        canary: bool = True,
    ) -> None:
        answers = zip(production.tolist(), challenger.tolist(), strict=True)
        labelled = []  # the images whose label came before this record
        with self._lock:
            tally = self.tallies.of(version, production_version)
            differ = tally.compare(production, challenger)
            tally.canary += len(production) if canary else 0
            # a JSON batch has no keys: its images cannot be labelled through /feedback
            for key, (ours, theirs) in zip(keys, answers, strict=False):
                seen = Answered(version, ours, theirs, production_version)
                if (truth := self.memory.remember(key, seen)) is not None:
                    labelled.append((seen, truth))
            stepped_back = any([self._score(seen, truth) for seen, truth in labelled])
            stepped_back = self._judge(version, production_version) or stepped_back
        if stepped_back:
            self.canary.share_changed()
        if self.metrics is not None:
            self.metrics.compared(version, len(production), differ)
            for seen, truth in labelled:
                self.metrics.label(version, seen.production == truth, seen.challenger == truth)

    def _failed(self, version: int, production_version: int, images: int) -> None:
        """The challenger raised on `images` images (called where it was caught): counted,
        judged (it steps back once it has failed on serve.canary_min_images), and logged with
        its traceback the first time beside each production version, not on every batch."""
        with self._lock:
            tally = self.tallies.of(version, production_version)
            first, tally.failed = tally.failed == 0, tally.failed + images
            stepped_back = self._judge(version, production_version)
        if first:
            logger.exception(
                "shadow: v%d failed on %d image(s), answered by production v%d; its later "
                "failures are counted (GET /model, /metrics), not logged",
                version,
                images,
                production_version,
            )
        if stepped_back:
            self.canary.share_changed()
        if self.metrics is not None:
            self.metrics.failed(version, images)

    def _work(self) -> None:
        while (first := self._jobs.get()) is not None:
            # One wake-up for a moment's requests, not one each: waking per request and taking
            # the GIL from the event loop cost more than the challenger's own work.
            time.sleep(GATHER_S)
            more, stopped = waiting_jobs(self._jobs)
            jobs = [first, *more]
            # consecutive jobs of one challenger, classified in one call
            for _, run in itertools.groupby(jobs, key=lambda job: id(job.challenger)):
                group = list(run)
                try:
                    self._shadow_group(group)
                except Exception:  # noqa: BLE001 - a failed record never stops the next job
                    images = sum(len(job.digits) for job in group)
                    logger.exception("shadow: could not record %d image(s)", images)
                finally:
                    with self._idle:
                        self._waiting -= sum(len(job.digits) for job in group)
                        self.memory.done([key for job in group for key in job.keys])
                        self._idle.notify_all()
            if stopped:
                return

    def _shadow_group(self, jobs: list[Job]) -> None:
        """Classify queued jobs of one challenger at once and record each under that version;
        only the challenger's own failure counts against it."""
        challenger = jobs[0].challenger
        try:
            theirs = self.classify(challenger, np.concatenate([job.digits for job in jobs]))
        except Exception:  # noqa: BLE001 - counted and logged (_failed); the next jobs go on
            for job in jobs:
                self._failed(challenger.version, job.production_version, len(job.digits))
            return
        ends = np.cumsum([len(job.digits) for job in jobs])[:-1]
        for job, answers in zip(jobs, np.split(theirs, ends), strict=True):
            version = challenger.version
            self._record(version, job.production_version, job.production, answers, job.keys, False)

    def classify(self, challenger: Loaded, digits: np.ndarray) -> np.ndarray:
        """The challenger's digits for a shadowed batch (in the shadow thread)."""
        return challenger.probabilities(digits).argmax(axis=1)
