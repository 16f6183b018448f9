"""The model an HTTP server answers with: a registry alias, followed as it moves (no torch).

`ServedModel` holds one immutable `Loaded` (version, card summary, onnxruntime session) and
replaces it whole when the alias it follows (`serve.model`, "production" by default) points at
another version: a request reads the reference once and finishes on the session it got, while
the next request gets the new one. A new version is loaded only after its ONNX bytes match the
SHA-256 in its card (and its signature, with trusted keys configured); a version that fails is
refused, logged and shown in `status()`, and the old one keeps serving.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from mnist_pipeline.core.contract import INPUT_NAME, PROBABILITIES
from mnist_pipeline.core.reports import ModelCard
from mnist_pipeline.export.session import open_session
from mnist_pipeline.pipeline.versions import ONNX_FILE, typed_card
from mnist_pipeline.registry import Registry
from mnist_pipeline.registry.aliases import names_version

if TYPE_CHECKING:
    from mnist_pipeline.serving.alias_events import AliasEvents

logger = logging.getLogger("mnist_pipeline.serve")

HIDDEN = "<registry>"  # what a public answer says in place of the store's path or endpoint
# an endpoint, a request's URL (not a sentence's colon, comma or full stop after it)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]*[^\s'\":,.;)]")
# A refused version is tried again after these seconds, doubling while it keeps failing: a
# damaged version is not downloaded and hashed on every poll while another one serves (with
# none loaded yet, every poll tries: readiness waits for nothing but the version).
RETRY_REFUSED_S, RETRY_REFUSED_MAX_S = 2.0, 300.0
clock = time.monotonic  # the retry's clock


def without_locations(message: str, registry: Registry) -> str:
    """`message` with where the registry lives replaced by HIDDEN: its folder, every URL (the
    endpoint, s3://bucket/..., a request URL botocore quotes, a bucket's own host name) and the
    bucket's name. /readyz and /model answer anyone who reaches the port; the log keeps it."""
    storage = registry.storage
    folder = storage.location.rstrip("/\\")
    if "/" in folder or "\\" in folder:  # a bare relative folder name says nothing, and is a word
        message = message.replace(folder, HIDDEN)
    message = _URL.sub(HIDDEN, message)
    bucket = getattr(storage, "bucket", None)
    if bucket:  # "bucket 'acme-models' does not exist", path-style keys
        message = re.sub(rf"(?<![\w.-]){re.escape(bucket)}(?![\w-])", HIDDEN, message)
    return message


@dataclass(frozen=True)
class Loaded:
    """One loaded, verified version: its session and the exact bytes it was built from (the
    ONNX file, the stored card and its signature), which GET /model.onnx and /model/card send."""

    version: int
    card: ModelCard
    session: ort.InferenceSession
    onnx: bytes  # hashed against the card, then loaded: the same bytes
    card_json: bytes  # the card as stored (sealed; signed when signing is on)
    signature: dict[str, str] | None  # the card's {"key_id", "ed25519"}; None: unsigned

    @property
    def onnx_sha256(self) -> str:
        return self.card.files[ONNX_FILE]

    @cached_property
    def card_sha256(self) -> str:
        return hashlib.sha256(self.card_json).hexdigest()

    def summary(self, name: str, ref: str) -> dict[str, Any]:
        return {
            "name": name,
            "alias": ref,
            "version": self.version,
            "accuracy": self.card.metrics.accuracy,
            "created": self.card.created,
            "fingerprint": None if self.card.fingerprint is None else self.card.fingerprint.sha256,
            "onnx_sha256": self.onnx_sha256,
        }

    def probabilities(self, digits: np.ndarray) -> np.ndarray:
        """float32 [N, 28, 28] in [0, 1] -> probabilities [N, 10]."""
        return self.session.run([PROBABILITIES], {INPUT_NAME: digits[:, None, :, :]})[0]


def load_version(registry: Registry, ref: str) -> Loaded:
    """The version `ref` names, its ONNX bytes checked against its card, in a CPU session."""
    stored, card_json = registry.card_with_bytes(ref)  # sealed (and signed, with trusted keys)
    card = typed_card(registry, stored)
    version = card.version
    data = registry.read_file_of(stored, ONNX_FILE)  # checked against the card kept: the bytes
    # requests run in parallel threads: one core each
    session = open_session(data, where=f"{registry.name} v{version} {ONNX_FILE}", threads=1)
    return Loaded(version, card, session, data, card_json, registry.signature(stored))


class ServedModel:
    """The version `ref` currently names, reloaded when the alias moves."""

    def __init__(self, registry: Registry, ref: str, role: str = "") -> None:
        self.registry = registry
        self.ref = ref
        self.role = role  # what its log lines start with ("shadow: " for the challenger)
        self.current: Loaded | None = None
        self.problem: str | None = None  # why the newest target is not the one served
        self.checked: float | None = None  # time.time() of the last check
        # the version refused, the wait, when to try again, and the problem it was refused for
        self._refused: tuple[int, float, float, str | None] | None = None
        self._lock = threading.Lock()  # one refresh at a time
        self._stop = threading.Event()
        self.events: AliasEvents | None = None  # the event stream followed beside the poll
        # each told every "loaded" (the first), "swapped", and "refused" (a version that failed
        # verification or loading) or "unresolved" (the alias could not be read) once per new
        # problem, and "resumed" when the alias names the served version again after one, with
        # the version served after it (metrics.py, the challenger's canary share)
        self.listeners: list[Callable[[str, int | None], None]] = []

    def refresh(self) -> bool:
        """Load the version `ref` names now if it is not the one served; True if it changed.
        A failure keeps the current version and records why."""
        with self._lock:
            self.checked = time.time()
            try:  # the number only: the version's card is checked by load_version (refused)
                target = self.registry.version_of(self.ref)
            except Exception as exc:  # noqa: BLE001 - whatever fails, the old version serves on
                self._keep(exc, "unresolved")  # the store or the alias, not a version
                return False
            if self.current is not None and target == self.current.version:
                self._refused = None
                if self.problem is not None:
                    self.problem = None
                    self._tell("resumed")
                return False
            refused = self._refused if self._refused and self._refused[0] == target else None
            if refused is not None and self.current is not None and clock() < refused[2]:
                self.problem = refused[3]  # shown again after a problem of the store meanwhile
                return False  # refused a moment ago: the old version serves on
            try:
                loaded = load_version(self.registry, str(target))
            except Exception as exc:  # noqa: BLE001 - whatever fails, the old version serves on
                wait = RETRY_REFUSED_S if refused is None else refused[1] * 2
                wait = min(wait, RETRY_REFUSED_MAX_S)
                self._keep(exc, "refused")
                self._refused = (target, wait, clock() + wait, self.problem)
                return False
            first = self.current is None
            self._refused = None
            before, self.current, self.problem = self._serving(), loaded, None
            logger.info(
                "%snow serving %s v%d (was %s)", self.role, self.registry.name, target, before
            )
            self._tell("loaded" if first else "swapped")
            return True

    def _keep(self, exc: Exception, event: str) -> None:
        """Keep serving what is served; log and tell `event` once per new problem."""
        full = str(exc) or type(exc).__name__  # for the log; the public problem hides where
        message = without_locations(full, self.registry)
        known, self.problem = self.problem, message  # set before the listeners hear of it
        if message != known:
            logger.error(
                "%skeeping %s: %s (registry %s)",
                self.role,
                self._serving(),
                full,
                self.registry.location,
            )
            self._tell(event)

    def _tell(self, event: str) -> None:
        version = None if self.current is None else self.current.version
        for listener in self.listeners:
            try:
                listener(event, version)
            except Exception:  # noqa: BLE001 - the alias is followed on regardless
                logger.exception("a listener of %r failed", event)

    def _serving(self) -> str:
        return "nothing" if self.current is None else f"v{self.current.version}"

    def follow(self, interval_s: float, then: Callable[[], None] | None = None) -> threading.Thread:
        """Check the alias every `interval_s` seconds in a daemon thread until `stop()`, and
        call `then` after each check."""

        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.refresh()
                if then is not None:
                    try:
                        then()
                    except Exception:  # noqa: BLE001 - the alias is followed on regardless
                        logger.exception("%safter checking the alias", self.role)

        thread = threading.Thread(target=loop, name="follow-alias", daemon=True)
        thread.start()
        return thread

    def follow_events(self) -> bool:
        """Also refresh at once when the Prefect event stream says the alias moved (a hint; the
        poll goes on). False, and nothing started, when `PREFECT_API_URL` is not in the
        environment or a version number (which never moves) is served."""
        from mnist_pipeline.serving.alias_events import AliasEvents, api_configured

        if not api_configured() or names_version(self.ref):
            return False
        self.events = AliasEvents(self.registry.name, self.ref, self.refresh)
        self.events.start()
        return True

    def stop(self) -> None:
        self._stop.set()
        if self.events is not None:
            self.events.stop()

    def status(self) -> dict[str, Any]:
        """What is served, what was last checked, and the last refusal (for GET /model)."""
        current = self.current
        served = None if current is None else current.summary(self.registry.name, self.ref)
        return {
            "model": served,
            "following": self.ref,
            "problem": self.problem,
            "checked": self.checked,
            "events": None if self.events is None else self.events.status(),
        }
