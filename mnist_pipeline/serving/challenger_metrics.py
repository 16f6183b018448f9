"""The challenger's Prometheus metrics, in the server's registry (metrics.py; challenger.py).

    mnist_serve_shadow_images_total{version, outcome}        agree, disagree, skipped (queue
                                                              full), failed (the challenger
                                                              raised)
    mnist_serve_shadow_labelled_total{version, model, outcome}  labelled images: production's and
                                                              the challenger's answers, correct
                                                              or incorrect
    mnist_serve_canary_step_backs_total{version, reason}      disagreement, error, failed
    mnist_serve_canary_percent                                the share the canary answers now

`version` is always the challenger's; images answered by each version are counted by
mnist_serve_images_classified_total{version, digit}.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ChallengerMetrics:
    """The challenger's counters, registered in `registry` (the app's Metrics.registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        on = {"registry": registry}
        self.images = Counter(
            "mnist_serve_shadow_images",
            "Images compared with production (agree, disagree), not shadowed (skipped), or "
            "that the challenger failed on (failed)",
            ["version", "outcome"],
            **on,
        )
        self.labelled = Counter(
            "mnist_serve_shadow_labelled",
            "Images whose trusted label arrived, by model (production, challenger) and outcome",
            ["version", "model", "outcome"],
            **on,
        )
        self.step_backs = Counter(
            "mnist_serve_canary_step_backs",
            "Canary versions stepped back to 0 %, by reason (disagreement, error, failed)",
            ["version", "reason"],
            **on,
        )
        self.canary_percent = Gauge(
            "mnist_serve_canary_percent",
            "The share of /predict requests the canary answers now (0 after a step back)",
            multiprocess_mode="liveall",
            **on,
        )

    def compared(self, version: int, images: int, differ: int) -> None:
        if images - differ:
            self.images.labels(str(version), "agree").inc(images - differ)
        if differ:
            self.images.labels(str(version), "disagree").inc(differ)

    def skipped(self, version: int, images: int) -> None:
        self.images.labels(str(version), "skipped").inc(images)

    def failed(self, version: int, images: int) -> None:
        self.images.labels(str(version), "failed").inc(images)

    def label(self, version: int, production_right: bool, challenger_right: bool) -> None:
        for model, right in (("production", production_right), ("challenger", challenger_right)):
            self.labelled.labels(str(version), model, "correct" if right else "incorrect").inc()

    def stepped_back(self, version: int, reason: str) -> None:
        self.step_backs.labels(str(version), reason).inc()
