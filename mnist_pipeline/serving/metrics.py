"""The server's Prometheus metrics (prometheus-client), scraped at GET /metrics.

    mnist_serve_requests_total{endpoint, method, status}      answered requests (route template)
    mnist_serve_request_duration_seconds{endpoint, method}    histogram, arrival to last byte
    mnist_serve_images_classified_total{version, digit}       images answered, by predicted digit
    mnist_serve_confidence{version}                           histogram of the top probability
    mnist_serve_model_events_total{event}                     loaded, swapped, refused, unresolved
    mnist_serve_model_version                                 the version each process serves
    mnist_serve_feedback_total{outcome, label}                /feedback claims: pending, known
    mnist_serve_drift_psi{feature}                            live window's PSI (drift.py)
    mnist_serve_drift_judged                                  1 once a full window was judged
    mnist_serve_drift_events_total                            drift events (one per shift)

With several worker processes each one writes its numbers to files in PROMETHEUS_MULTIPROC_DIR
(prometheus-client's multiprocess mode; `serve` makes a fresh folder and removes it at exit),
and a scrape answered by any worker adds them all up.
"""

from __future__ import annotations

import glob
import os
import socket
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from uvicorn import Config
from uvicorn.supervisors import Multiprocess

from mnist_pipeline.serving.env_folder import env_folder

ENV_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
CONFIDENCE_BUCKETS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)
MODEL_EVENTS = ("loaded", "swapped", "refused", "unresolved")


class Metrics:
    """One process's metrics, in a registry of their own (a test may build several apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        on = {"registry": self.registry}
        self.requests = Counter(
            "mnist_serve_requests", "Requests answered", ["endpoint", "method", "status"], **on
        )
        self.latency = Histogram(
            "mnist_serve_request_duration_seconds",
            "Time from a request's arrival to its last byte sent",
            ["endpoint", "method"],
            buckets=LATENCY_BUCKETS,
            **on,
        )
        self.images = Counter(
            "mnist_serve_images_classified",
            "Images classified, by served version and predicted digit",
            ["version", "digit"],
            **on,
        )
        self.confidence = Histogram(
            "mnist_serve_confidence",
            "Probability of the predicted digit, per image",
            ["version"],
            buckets=CONFIDENCE_BUCKETS,
            **on,
        )
        self.model_events = Counter(
            "mnist_serve_model_events",
            "Versions loaded (first), swapped in, or refused (failed verification or loading); "
            "unresolved: the alias could not be read",
            ["event"],
            **on,
        )
        self.version = Gauge(
            "mnist_serve_model_version",
            "The version this process serves",
            multiprocess_mode="liveall",
            **on,
        )
        self.feedback = Counter(
            "mnist_serve_feedback",
            "/feedback claims stored (pending: new; known: already claimed), by label",
            ["outcome", "label"],
            **on,
        )
        self.psi = Gauge(
            "mnist_serve_drift_psi",
            "PSI of the live window against the served version's reference, per feature",
            ["feature"],
            multiprocess_mode="livemax",
            **on,
        )
        self.drift_judged = Gauge(
            "mnist_serve_drift_judged",
            "1 when the served version's PSI was measured on a full window; 0 before (and "
            "for a version without a drift reference), when mnist_serve_drift_psi is no verdict",
            multiprocess_mode="livemax",
            **on,
        )
        self.drift_events = Counter(
            "mnist_serve_drift_events", "Drift found (one per shift: a cooldown follows)", **on
        )
        for event in MODEL_EVENTS:
            self.model_events.labels(event)  # shown at 0 before the first one
        # labels() validates and locks (~4 us a call); the label sets are few, so keep them
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        child = self._children.get((metric, labels))
        if child is None:
            child = self._children[(metric, labels)] = metric.labels(*labels)
        return child

    def request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self._child(self.requests, endpoint, method, str(status)).inc()
        self._child(self.latency, endpoint, method).observe(seconds)

    def classified(self, version: int, digits: np.ndarray, confidences: np.ndarray) -> None:
        """One answered batch: predicted digits and their probabilities, per image."""
        label = str(version)
        counts = np.bincount(digits, minlength=10).tolist()
        for digit, count in enumerate(counts):
            if count:
                self._child(self.images, label, str(digit)).inc(count)
        histogram = self._child(self.confidence, label)
        for confidence in confidences.tolist():
            histogram.observe(confidence)

    def model_event(self, event: str, version: int | None) -> None:
        """ServedModel's listener: `event` is counted if one of MODEL_EVENTS; `version` is now
        served."""
        if event in MODEL_EVENTS:
            self.model_events.labels(event).inc()
        if version is not None:
            self.version.set(version)

    def feedback_stored(self, outcome: str, label: int) -> None:
        self.feedback.labels(outcome, str(label)).inc()

    def drift_psi(self, psi: dict[str, float], judged: bool = True) -> None:
        for feature, value in psi.items():
            self.psi.labels(feature).set(value)
        self.drift_judged.set(1 if judged else 0)

    def drift_event(self) -> None:
        self.drift_events.inc()

    def exposition(self) -> bytes:
        """The text format: every worker's files in multiprocess mode, else this registry."""
        if ENV_MULTIPROC not in os.environ:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        WrittenFilesCollector(merged)
        return generate_latest(merged)


class WrittenFilesCollector(MultiProcessCollector):
    """Every worker's files but those still 0 bytes long. prometheus-client creates a file
    before it sizes it, and reading one in that moment fails the whole scrape; a worker killed
    in it leaves the file so for good, failing every later one (prometheus/client_python#1199,
    open in 0.26). A file that is empty holds no value yet."""

    def collect(self) -> Iterable[Metric]:
        files = [path for path in glob.glob(os.path.join(self._path, "*.db")) if _sized(path)]
        return self.merge(files, accumulate=True)


def _sized(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except FileNotFoundError:  # a live gauge's file removed by mark_process_dead meanwhile
        return False


def multiprocess_dir() -> AbstractContextManager[str]:
    """A fresh PROMETHEUS_MULTIPROC_DIR for worker processes started inside (set in this
    process's environment, which they inherit), removed with its files afterwards."""
    return env_folder(ENV_MULTIPROC, "mnist-serve-metrics-")


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor that also tells prometheus-client when a worker it replaced
    or removed (SIGTTOU) has gone, so that the dead process's live gauges are no longer shown
    (its counters still count)."""

    def __init__(self, config: Config, sockets: list[socket.socket], folder: str) -> None:
        super().__init__(config, sockets)
        self.folder = folder

    def keep_subprocess_alive(self) -> None:
        self._marking(super().keep_subprocess_alive)

    def restart_all(self) -> None:
        self._marking(super().restart_all)

    def handle_ttou(self) -> None:
        self._marking(super().handle_ttou)

    def _marking(self, step: Callable[[], None]) -> None:
        """Run `step`, then mark dead every process with live gauges in the folder that is no
        worker now: one replaced or removed, and one a restart started and killed because it
        was not ready in time (never among the workers, so not found by comparing them)."""
        step()
        workers = {process.pid for process in self.processes}
        for path in Path(self.folder).glob("gauge_live*_*.db"):
            pid = path.stem.rpartition("_")[2]
            if pid.isdigit() and int(pid) not in workers:
                mark_process_dead(int(pid), self.folder)
