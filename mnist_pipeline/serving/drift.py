"""The server's drift monitor: does live traffic still look like MNIST test to the served version?

`/predict` hands each answered batch (images, probabilities, the version that answered) to
`offer`, which only queues it (a full queue skips the batch, counted): the features, the window
and the comparison run in the monitor's own thread, off the response path. The window holds the
last `serve.drift_window` images answered by the served version; once full, each feature's PSI
against the version's reference (`drift_reference.json`, stored when it was registered;
monitoring/drift.py) is computed, and any over `serve.drift_threshold` is drift. Drift is
logged, counted in /metrics and, with a Prefect API configured, emitted as the event
`mnist.serve.drift` (drift_event.py). One sustained shift makes one event, however long it
lasts and across promotions: the next event needs a full window judged normal first, and then
waits out `serve.drift_cooldown_s` since the last, which every worker and every later server
of the project folder share (drift_claim.py). A version without a reference is not
monitored (the status says so); one whose reference could not be read (the store down) is tried
again with the traffic that follows, every REREAD_S; a window not yet full has no verdict.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from mnist_pipeline.core.service_params import ServeParams
from mnist_pipeline.monitoring import drift
from mnist_pipeline.serving import alias_events
from mnist_pipeline.serving.alias_events import api_configured
from mnist_pipeline.serving.drift_claim import DriftClaims
from mnist_pipeline.serving.drift_event import drift_payload, emit_drift
from mnist_pipeline.serving.served_model import without_locations

if TYPE_CHECKING:
    from mnist_pipeline.serving.metrics import Metrics
    from mnist_pipeline.serving.served_model import Loaded, ServedModel

QUEUE_IMAGES = 16_384  # answered images waiting for the monitor's thread (~50 MB); more skipped
REREAD_S = 30.0  # a reference that could not be read (the store down) is read again after this
IDLE_CHECK_S = 1.0  # without traffic, how often the monitor looks for a newly served version
GATHER_S = 0.05  # after a request arrives, how long the monitor lets others gather first
RESEND_S = 60.0  # after the Prefect API did not answer, how long before an event is tried again
CLOSE_EVERY_S = 10.0  # how often a worker judging windows normal tells the claim file so
logger = logging.getLogger("mnist_pipeline.serve")


class DriftMonitor:
    """A sliding window of live images compared with the served version's reference."""

    def __init__(
        self,
        served: ServedModel,
        params: ServeParams,
        emitter: Callable[[str, dict[str, Any]], bool] = emit_drift,
        claims: DriftClaims | None = None,
    ) -> None:
        self.served, self.registry, self.emitter = served, served.registry, emitter
        self.claims = claims  # shared with the other workers and later servers of the project
        self.enabled = params.drift
        self.size, self.threshold = params.drift_window, params.drift_threshold
        self.cooldown_s = params.drift_cooldown_s
        self.metrics: Metrics | None = None
        self.version: int | None = None
        self.reference: drift.DriftReference | None = None
        self.problem: str | None = None  # why the served version is not monitored
        self.psi: dict[str, float] | None = None
        self.events, self.last_event, self.skipped = 0, None, 0
        self._armed = True  # no event since the last window judged normal
        self._send_due = 0.0  # time.monotonic() before which no event is tried (after a failure)
        self._close_due = 0.0  # and before which a normal window does not close the shift again
        self._event_at: float | None = None  # time.monotonic() of the last event (cooldown)
        self.seen = 0  # images the monitor's thread took in, every version (status: "seen")
        self._rows = np.zeros((self.size, len(drift.FEATURES)))
        self._times = np.zeros(self.size)  # time.time() each row came in (closing a shift)
        self._filled = self._next = self._unjudged = 0
        self._queue: queue.Queue[tuple[Loaded, np.ndarray, np.ndarray]] = queue.Queue()
        self._waiting = 0  # images in the queue (bounded by QUEUE_IMAGES, under self._lock)
        self._lock = threading.Lock()  # status() reads what the thread writes
        self._retry_at: float | None = None  # when to read a reference that could not be read
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _retry_due(self) -> bool:
        return self._retry_at is not None and time.monotonic() >= self._retry_at

    def start(self, metrics: Metrics | None) -> None:
        """Watch from now on in a daemon thread (nothing with `serve.drift` off)."""
        self.metrics = metrics
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, name="drift-monitor", daemon=True)
            self._thread.start()

    def stop(self, wait_s: float = 2 * IDLE_CHECK_S) -> None:
        """End the monitor's thread (within IDLE_CHECK_S when idle); what waits is dropped."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(wait_s)

    def offer(self, loaded: Loaded, digits: np.ndarray, probabilities: np.ndarray) -> None:
        """A request's answered batch; never blocks (a batch that does not fit in the queue's
        QUEUE_IMAGES is skipped, its images counted)."""
        if not self.enabled:
            return
        with self._lock:
            if self._waiting + len(digits) > QUEUE_IMAGES:
                self.skipped += len(digits)
                return
            self._waiting += len(digits)
        self._queue.put_nowait((loaded, digits, probabilities))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                batch = [self._queue.get(timeout=IDLE_CHECK_S)]  # then whatever else waits
            except queue.Empty:
                self._follow_idle()
                continue
            # One wake-up for a moment's requests, not one each: waking per request and taking
            # the GIL from the event loop cost more than the features themselves.
            self._stop.wait(GATHER_S)
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            with self._lock:
                self._waiting -= sum(len(digits) for _, digits, _ in batch)
            try:
                self.process(batch)
            except Exception:  # noqa: BLE001 - the monitor goes on; requests never see it
                logger.exception("drift monitor: a batch could not be compared")

    def _follow_idle(self) -> None:
        """Without traffic, still read a newly served version's reference, so that GET /model
        says at once whether it is monitored."""
        now = self.served.current
        if now is not None:
            try:
                self._follow(now)
            except Exception:  # noqa: BLE001 - as for a batch: the monitor goes on
                logger.exception("drift monitor: the served version's reference was not read")

    def process(self, batch: list[tuple[Loaded, np.ndarray, np.ndarray]]) -> None:
        """Add answered batches to the window and judge it (the monitor thread's work)."""
        for _, run in itertools.groupby(batch, key=lambda item: id(item[0])):  # one version's
            loaded, digit_parts, probability_parts = zip(*run, strict=True)
            now = self.served.current
            if now is not None and now.version != loaded[0].version:
                continue  # answered just before a swap: the window is the served version's
            self._follow(loaded[0])
            if self.reference is None:
                continue
            digits, probabilities = np.concatenate(digit_parts), np.concatenate(probability_parts)
            found = drift.features(digits, probabilities.argmax(axis=1), probabilities.max(axis=1))
            self._append(np.column_stack([found[name] for name in drift.FEATURES]))
        if self.reference is not None and self._unjudged >= max(1, self.size // 50):
            self._judge()

    def _follow(self, loaded: Loaded) -> None:
        """Switch to `loaded` when it is a new version, or when its reference is due a reread."""
        if loaded.version != self.version or self._retry_due():
            self._switch(loaded)

    def _switch(self, loaded: Loaded) -> None:
        """A new served version: its reference, an empty window."""
        reference, problem, self._retry_at = None, None, None
        if drift.REFERENCE_FILE not in loaded.card.files:
            problem = f"v{loaded.version} has no {drift.REFERENCE_FILE} (registered before drift "
            problem += "references were measured): not monitored"
        else:
            try:
                data = self.registry.read_file(loaded.version, drift.REFERENCE_FILE)  # verified
            except Exception as exc:  # noqa: BLE001 - the store down, or the file altered
                problem = f"{exc}: not monitored; read again in {REREAD_S:.0f} s"
                self._retry_at = time.monotonic() + REREAD_S
            else:
                try:
                    name = f"v{loaded.version} {drift.REFERENCE_FILE}"
                    reference = drift.parse_reference(data, name)
                except Exception as exc:  # noqa: BLE001 - a bad reference turns monitoring off
                    problem = f"{exc}: not monitored"
        if problem is not None:
            logger.warning("drift monitor: %s (registry %s)", problem, self.registry.location)
            problem = without_locations(problem, self.registry)  # what GET /model shows
        with self._lock:
            self.version, self.reference, self.problem, self.psi = (
                loaded.version,
                reference,
                problem,
                None,
            )
            self._filled = self._next = self._unjudged = 0
        if self.metrics is not None:
            self.metrics.drift_psi(dict.fromkeys(drift.FEATURES, 0.0), judged=False)  # no window

    def _append(self, rows: np.ndarray) -> None:
        self.seen += len(rows)  # every image, also those a batch larger than the window drops
        rows = rows[-self.size :]
        where = (self._next + np.arange(len(rows))) % self.size
        self._rows[where] = rows
        self._times[where] = time.time()
        self._next = int((self._next + len(rows)) % self.size)
        self._filled = min(self.size, self._filled + len(rows))
        self._unjudged += len(rows)

    def _judge(self) -> None:
        if self._filled < self.size or self.reference is None:
            return  # too few images for a verdict: judged as soon as the window is full
        self._unjudged = 0
        window = {name: self._rows[:, i] for i, name in enumerate(drift.FEATURES)}
        psi = {
            name: round(value, 6) for name, value in drift.compare(self.reference, window).items()
        }
        with self._lock:
            self.psi = psi
        if self.metrics is not None:
            self.metrics.drift_psi(psi)
        over = sorted(name for name, value in psi.items() if value > self.threshold)
        now = time.monotonic()
        if not over:
            self._armed = True  # the shift is over: the next one makes an event
            if self.claims is not None and now >= self._close_due:  # for every process
                self.claims.close(since=float(self._times.min()))
                self._close_due = now + CLOSE_EVERY_S
            return
        cooling = self._event_at is not None and now - self._event_at < self.cooldown_s
        if not self._armed or cooling or now < self._send_due:
            return
        if (problem := alias_events.api_problem()) is not None:  # before claiming: a claim
            logger.warning(  # left by a server stopped during this check would block the shift
                "drift: v%s: the Prefect API does not answer (%s); tried again in %.0f s",
                self.version, problem, RESEND_S,
            )  # fmt: skip
            self._send_due = now + RESEND_S
            return
        sent_at = time.time()
        wait = 0.0 if self.claims is None else self.claims.claim(sent_at)
        if wait == math.inf:  # this shift's event went from another process
            self._armed = False
            logger.info("drift: v%s: another worker or server sent the event", self.version)
            return
        if wait > 0:  # a new shift within the cooldown of another process's closed one
            self._send_due = now + wait
            return
        self._armed = False  # this shift's event is sent below
        self._send(psi, over, now, sent_at)

    def _send(self, psi: dict[str, float], over: list[str], now: float, sent_at: float) -> None:
        """Emit the claimed event and count it (once per shift across processes); one the
        configured Prefect server did not take gives its claim back and is tried again
        RESEND_S later, while the shift lasts. Without a Prefect API there is nothing to send
        to: the claim stands, so the shift is still counted once."""
        payload = drift_payload(self.version, psi, over, self.threshold, self.size)
        summary = payload["summary"]
        if not self.emitter(self.registry.name, payload) and api_configured():
            if self.claims is not None:
                self.claims.give_back(sent_at)
            self._armed, self._send_due = True, now + RESEND_S
            logger.warning("drift: %s (event not taken: tried again in %.0f s)", summary, RESEND_S)
            return
        self._event_at = now
        with self._lock:
            self.events, self.last_event = self.events + 1, sent_at
        logger.warning("drift: %s", summary)
        if self.metrics is not None:
            self.metrics.drift_event()

    def status(self) -> dict[str, Any]:
        """The `drift` object of GET /model."""
        with self._lock:
            if not self.enabled:
                return {"enabled": False, "problem": "serve.drift is false"}
            monitored = self.reference is not None
            if not monitored:
                verdict = None
            elif self.psi is None:
                verdict = f"too few images: {self._filled} of {self.size}"
            else:
                drifting = any(value > self.threshold for value in self.psi.values())
                verdict = "drift" if drifting else "normal"
            return {
                "enabled": monitored,
                "version": self.version,
                "problem": self.problem,
                "window": self.size,
                "images": self._filled,
                "threshold": self.threshold,
                "verdict": verdict,
                "psi": self.psi,
                "events": self.events,
                "last_event": self.last_event,
                "skipped": self.skipped,
                "seen": self.seen,
            }
