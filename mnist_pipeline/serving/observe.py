"""What the server tells operators about each request: Prometheus metrics (metrics.py) and, with
`serve.json_logs`, one JSON object per request on the `mnist_pipeline.serve.access` logger.

Handlers note what they did on the request (`note_prediction`, `note_feedback`); the `Observer`
middleware, outermost, times every request (refusals such as 413 included), takes its status
and route template, and records it with those notes once the response is sent.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mnist_pipeline.core.service_params import ServeParams
from mnist_pipeline.serving.metrics import Metrics

if TYPE_CHECKING:
    from mnist_pipeline.serving.served_model import ServedModel

ACCESS_LOGGER = "mnist_pipeline.serve.access"
logger = logging.getLogger("mnist_pipeline.serve")
NOTES = "mnist_pipeline.observed"  # the scope key of the handlers' notes (an Observer's dict)
OTHER = "other"  # the label of a path no route has, or of an unknown method (bounded labels)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def note_prediction(request: Request, version: int, probabilities: np.ndarray) -> None:
    """/predict answered these [N, 10] probabilities with `version`."""
    notes = request.scope.get(NOTES)
    if notes is not None:  # observed
        notes["prediction"] = (version, probabilities)


def note_feedback(request: Request, outcome: str, label: int) -> None:
    """/feedback stored a claim: `outcome` "pending" (new) or "known"."""
    notes = request.scope.get(NOTES)
    if notes is not None:
        notes["feedback"] = (outcome, label)


class Observer:
    """ASGI middleware recording each HTTP request in `metrics` and/or the access log."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None, log: logging.Logger | None) -> None:
        self.app, self.metrics, self.log = app, metrics, log
        self.paths: frozenset[str] | None = None  # the app's route paths, once it has them all

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # unless the app starts a response
        notes: dict[str, Any] = {}
        scope[NOTES] = notes

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            try:
                self.record(scope, notes, status, time.perf_counter() - start)
            except Exception:  # noqa: BLE001 - a broken record never fails the request
                logger.exception("recording %s %s failed", scope["method"], scope["path"])

    def record(self, scope: Scope, notes: dict[str, Any], status: int, seconds: float) -> None:
        endpoint = self.endpoint(scope)
        prediction = notes.get("prediction")
        digits = confidences = None
        if prediction is not None:
            digits, confidences = prediction[1].argmax(axis=1), prediction[1].max(axis=1)
        if self.metrics is not None:
            method = scope["method"] if scope["method"] in METHODS else OTHER
            self.metrics.request(endpoint, method, status, seconds)
            if prediction is not None:
                self.metrics.classified(prediction[0], digits, confidences)
            if "feedback" in notes:
                self.metrics.feedback_stored(*notes["feedback"])
        if self.log is not None:
            entry: dict[str, Any] = {
                "time": round(time.time(), 3),
                "method": scope["method"],
                "path": scope["path"],
                "endpoint": endpoint,
                "status": status,
                "latency_ms": round(seconds * 1000, 3),
            }
            if prediction is not None:
                entry["version"] = prediction[0]
                entry["digits"] = digits.tolist()
                entry["confidences"] = [round(c, 6) for c in confidences.tolist()]
            if "feedback" in notes:
                entry["feedback"], entry["label"] = notes["feedback"]
            self.log.info(json.dumps(entry))

    def endpoint(self, scope: Scope) -> str:
        """The route template that answered, or the path of a route refused before routing
        (413 by Content-Length), or OTHER: never a raw path no route has."""
        route = scope.get("route")
        if route is not None and hasattr(route, "path"):
            return route.path
        if self.paths is None:
            app = scope.get("app")
            self.paths = frozenset(r.path for r in getattr(app, "routes", ()) if hasattr(r, "path"))
        return scope["path"] if scope["path"] in self.paths else OTHER


def access_logger() -> logging.Logger:
    """The access logger: the JSON object alone on each line of stderr, in every process."""
    log = logging.getLogger(ACCESS_LOGGER)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False  # not prefixed by the server's own format
    return log


def observe(app: FastAPI, served: ServedModel, limits: ServeParams) -> Metrics | None:
    """Add GET /metrics (with `serve.metrics`) and the Observer (with metrics or json_logs) to
    `app`; the metrics hear `served`'s loads, swaps and refusals from now on (returned, for
    the drift monitor; None with `serve.metrics` off)."""
    metrics = Metrics() if limits.metrics else None
    if metrics is not None:
        served.listeners.append(metrics.model_event)
        if served.current is not None:  # loaded before the app was built
            metrics.model_event("loaded", served.current.version)

        @app.get(
            "/metrics",
            response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
        )
        def prometheus_metrics() -> Response:
            """Prometheus text exposition format (all worker processes)."""
            return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

        app.add_api_route(  # `curl -I`: GET's status and headers (http_api.py)
            "/metrics", prometheus_metrics, methods=["HEAD"], include_in_schema=False
        )

    if metrics is not None or limits.json_logs:
        log = access_logger() if limits.json_logs else None
        app.add_middleware(Observer, metrics=metrics, log=log)
    return metrics
