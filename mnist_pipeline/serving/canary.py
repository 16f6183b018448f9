"""The canary share: which requests the challenger answers, and when it steps back to 0.

`serve.canary_percent` of /predict requests (drawn at random per request) are answered by the
challenger's version (challenger.py). A version steps back, for good until the server restarts,
once its disagreement with production goes over `serve.canary_max_disagreement` (after
`serve.canary_min_images` compared images), its error on labelled images over
`serve.canary_max_error` while above production's on the same images (after
`serve.canary_min_labels`: labels sent through /feedback are often corrections of a wrong
answer, so any model's error on them runs high), or once it has failed (raised) on
`serve.canary_min_images` images; another version of the alias starts afresh. With
`serve --workers N` each worker judges its own share, and a step back by one is taken by all
(canary_shared.py). A version the
production alias has pointed at and moved away from (rolled back from, or replaced by a newer
promotion), or that was refused for production (`models reject`), is not tried again: it answers
no share while production is elsewhere. A step back is
logged, counted in /metrics and, with a Prefect API configured, emitted as the event
`mnist.canary.stepped_back` from a background thread, so that emitting can neither fail nor
slow a request (without `PREFECT_API_URL`, Prefect is not even imported).
"""

from __future__ import annotations

import logging
import random
import threading
from typing import TYPE_CHECKING, Any

from mnist_pipeline.core.service_params import ServeParams
from mnist_pipeline.registry import Registry
from mnist_pipeline.registry.aliases import MOVING_ACTIONS, names_version
from mnist_pipeline.serving.alias_events import emit_if_configured
from mnist_pipeline.serving.canary_shared import SharedStepBacks
from mnist_pipeline.serving.challenger_metrics import ChallengerMetrics
from mnist_pipeline.serving.live import Tally
from mnist_pipeline.serving.shadow_jobs import version_of

if TYPE_CHECKING:
    from mnist_pipeline.serving.served_model import ServedModel

STEPPED_BACK = "mnist.canary.stepped_back"
logger = logging.getLogger("mnist_pipeline.serve")


def left_behind(
    events: list[Any], alias: str, current: int | None, challenger: str | None = None
) -> set[int]:
    """The versions `alias` pointed at and moved away from, per the alias document's `events` in
    their order (each move records where the alias was: `previous`), and those refused for it
    (a `reject` event: a person said no, or the approval came after `alias` moved), except
    `current` and those the `challenger` alias was pointed at again since (proposed anew on
    purpose)."""
    left: set[int] = set()
    for event in events:
        if not isinstance(event, dict):
            continue
        version, previous = event.get("version"), event.get("previous")
        if event.get("action") == "reject" and event.get("alias") == alias and type(version) is int:
            left.add(version)  # refused for production: not tried on its traffic either
            continue
        if event.get("action") not in MOVING_ACTIONS:
            continue  # a decision that moved nothing (an expired proposal, say)
        if event.get("alias") == alias and type(previous) is int and previous != version:
            left.add(previous)
        elif challenger is not None and event.get("alias") == challenger:
            left.discard(version)
    return left - {current}


def step_back_reason(
    tally: Tally, limits: ServeParams, against: Tally | None = None
) -> tuple[str, str] | None:
    """(reason, why in words) when the tally's version must step back, else None. `tally` holds
    everything the version saw; `against`, its part compared with the production version that
    serves now, is where its errors are compared with production's (`tally` when None): a
    production version of the past is no yardstick, so with no labelled image compared with
    the one serving now, its error steps nothing back yet."""
    if tally.failed >= limits.canary_min_images:  # a version that cannot answer
        enough = f"serve.canary_min_images ({limits.canary_min_images})"
        return "failed", f"failed on {tally.failed} images, as many as {enough}"
    checks = (
        ("disagreement", "disagrees with production on", "images", tally.compared,
         limits.canary_min_images, tally.disagreement, limits.canary_max_disagreement),
        ("error", "is wrong on", "labelled images", tally.labels,
         limits.canary_min_labels, tally.challenger_error, limits.canary_max_error),
    )  # fmt: skip
    paired = tally if against is None else against
    for reason, verb, what, seen, enough, share, limit in checks:
        if seen < enough or share <= limit:
            continue
        if reason == "error" and (
            not paired.labels or paired.challenger_error <= paired.production_error
        ):
            continue  # no worse than production on the same images: hard images, not the canary
        than = _than_production(paired, tally) if reason == "error" else ""
        why = (
            f"{verb} {share:.1%} of {seen} {what}{than}, over serve.canary_max_{reason} ({limit:g})"
        )
        return reason, why
    return None


def _than_production(paired: Tally, tally: Tally) -> str:
    """How production did on the labelled images the errors were compared on."""
    production = "production" if paired.production is None else f"production v{paired.production}"
    if paired.labels == tally.labels:
        return f" ({production} on {paired.production_error:.1%})"
    return (
        f" (on the {paired.labels} compared with {production}: {paired.challenger_error:.1%}, "
        f"production {paired.production_error:.1%})"
    )


class Canary:
    """The canary share of one server process and the versions stepped back."""

    def __init__(
        self,
        limits: ServeParams,
        model_name: str,
        seed: int | None = None,
        shared: SharedStepBacks | None = None,
    ) -> None:
        self.limits = limits
        self.model_name = model_name
        self.shared = shared  # the other workers' step backs (serve --workers N)
        # version -> why; replaced, never changed in place (read without a lock), under _backing
        self.stepped_back: dict[int, str] = {} if shared is None else shared.read()
        self._backing = threading.Lock()
        self.left: set[int] = set()  # versions production has moved away from (left_behind)
        self._production: int | None = None  # production's version when `left` was last read
        self._reading = threading.Lock()
        self._unread: str | None = None  # why the alias history could not be read, last time
        self._models: tuple[ServedModel, ServedModel] | None = None  # challenger, production
        # the share gauge computed and set in one step: a reload thread's older figure must
        # not overwrite a step back's newer one
        self._setting = threading.Lock()
        self.metrics: ChallengerMetrics | None = None
        self._random = random.Random(seed)

    def follow(self, challenger: ServedModel, production: ServedModel) -> None:
        """The share follows both models: when either one's version changes, the versions
        production's alias moved away from are read again and the share gauge is set."""
        self._models = (challenger, production)
        challenger.listeners.append(self._versions_changed)
        production.listeners.append(self._versions_changed)
        self._versions_changed()

    def reread(self) -> None:
        """Read the versions left behind or refused, and those other workers stepped back,
        again (the challenger's poll calls it: a `models reject` changes no version, so no
        listener hears of it)."""
        if self.shared is not None:
            for version, why in self.shared.read(others=True).items():
                if self._step_back(version, why):
                    logger.warning("canary v%d stepped back to 0 %% by another worker", version)
        self._versions_changed()

    def _step_back(self, version: int, why: str) -> bool:
        """Record `version` as stepped back; False if it already was."""
        with self._backing:
            if version in self.stepped_back:
                return False
            self.stepped_back = {**self.stepped_back, version: why}
            return True

    def _versions_changed(self, _event: str = "", _version: int | None = None) -> None:
        if self._models is not None:
            challenger, production = self._models
            self.read_left(production.registry, production.ref, challenger.ref)
        self.share_changed()

    def share_changed(self) -> None:
        """Set the share gauge (with metrics) from both models' versions now."""
        if self.metrics is not None and self._models is not None:
            challenger, production = self._models
            with self._setting:
                now = self.share(trying(challenger), version_of(production.current))
                self.metrics.canary_percent.set(now)

    def read_left(self, registry: Registry, alias: str, challenger: str) -> bool:
        """`left` read again from the alias document (`alias`, which production follows, and
        `challenger`, the challenger's), and the version production served just before it
        (until the next read, `percent` refuses the version production leaves); while the
        store cannot be read, the versions known stay (False). One read at a time, each
        taking production's version first: the last one assigned is the latest read."""
        with self._reading:
            serving = self.production()  # before the document: `left` is at least as new
            if names_version(alias):
                self._production = serving
                return True  # a version number never moves
            try:
                state = registry.state()
            except Exception as exc:  # noqa: BLE001 - logged; the canary goes on as it was
                problem = str(exc)
                if problem != self._unread:  # once per new problem: this runs at every poll
                    logger.warning(
                        "shadow: could not read the history of alias %r: %s", alias, problem
                    )
                self._unread = problem
                return False
            self._unread = None
            current = state.aliases.get(alias)
            self.left = left_behind(state.events, alias, current, challenger)
            self._production = serving
            return True

    def percent(self, version: int | None) -> float:
        """The share `version` answers now: 0 without one, once stepped back, or when
        production has moved away from it."""
        if version is None or version in self.stepped_back or version in self.left:
            return 0.0
        if self._left_a_moment_ago(version):
            return 0.0
        return self.limits.canary_percent

    def _left_a_moment_ago(self, version: int) -> bool:
        """Whether production served `version` when `left` was last read and serves another
        now: left behind, before the alias history (being read) says so."""
        return version == self._production and self.production() != version

    def takes(self, version: int | None) -> bool:
        """Whether this request goes to the canary `version`."""
        share = self.percent(version)
        return share > 0 and self._random.random() * 100 < share

    def production(self) -> int | None:
        """The version production serves now (None before `follow`, or before one loads)."""
        return None if self._models is None else version_of(self._models[1].current)

    def judges(self, version: int) -> bool:
        """Whether `version` can still step back (a canary share is set, and it has not)."""
        return self.limits.canary_percent != 0 and version not in self.stepped_back

    def judge(self, tally: Tally, against: Tally | None = None) -> bool:
        """Step the tally's version back if it went over a threshold (once per version; a late
        label may judge an earlier version; `against`: as in step_back_reason); True if it
        stepped back now."""
        if not self.judges(tally.version):
            return False
        found = step_back_reason(tally, self.limits, against)
        if found is None:
            return False
        reason, why = found
        first = None if self.shared is None else self.shared.record(tally.version, why)
        if first is not None:  # another worker stepped it back a moment ago: no second event
            self._step_back(tally.version, first)
            logger.warning("canary v%d stepped back to 0 %% by another worker", tally.version)
            return True
        self._step_back(tally.version, why)
        logger.warning("canary v%d stepped back to 0 %%: %s", tally.version, why)
        if self.metrics is not None:
            self.metrics.stepped_back(tally.version, reason)
        payload = {
            "version": tally.version,
            "production": tally.production,
            "reason": reason,
            "why": why,
            "compared": tally.compared,
            "labelled": tally.labels,
        }
        threading.Thread(
            target=emit_if_configured, args=(STEPPED_BACK, self.model_name, payload), daemon=True
        ).start()
        return True

    def share(self, version: int | None, production: int | None) -> float:
        """The share the challenger's `version` answers now: 0 as well when it is the version
        production serves (nothing to try)."""
        return 0.0 if version == production else self.percent(version)

    def status(self, version: int | None, production: int | None) -> dict[str, object]:
        """GET /model's `canary`: the configured and current share, and the versions stepped
        back with why."""
        return {
            "percent": self.limits.canary_percent,
            "now": self.share(version, production),
            "stepped_back": {str(v): why for v, why in self.stepped_back.items()},
            "left_by_production": sorted(self.left),
        }


def trying(challenger: ServedModel) -> int | None:
    """The version the canary share goes to: none while the challenger's alias names a version
    that was refused or cannot be read (the one kept is only shadowed)."""
    return None if challenger.problem is not None else version_of(challenger.current)
