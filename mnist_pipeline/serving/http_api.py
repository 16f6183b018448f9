"""The HTTP API of `mnist-pipeline serve` (FastAPI; onnxruntime only, no torch).

    POST /predict   images as multipart `files` (one or many, any format `predict` reads), one
                    image as the raw body (Content-Type image/*), or JSON {"images": [28x28 ...]}
                    already preprocessed per the ONNX contract (floats in [0, 1]); `?top=k`
    GET  /healthz   the process is up
    GET  /readyz    a verified model is loaded (503 until then)
    GET  /metrics   Prometheus metrics (serve.metrics; serving/metrics.py and observe.py)
    GET  /model     the served version's card summary, the alias followed, the last refusal,
                    whether the alias's Prefect events are followed, the shadow's record,
                    the drift monitor's state
    GET  /model.onnx, /model/card   the served version's verified bytes (model_files.py)
    POST /feedback  only with feedback credentials (feedback.py): a bearer token, multipart
                    `file` and `label`, quarantined for review (data/pending/, or the
                    shared inbox's queue: inbox/review_queue.py)
    GET  /docs      OpenAPI (/openapi.json: every body and answer, api_schema.py)

Client input never causes a 500: an oversized body is 413, an unsupported content type 415, an
undecodable image, a bad array, a malformed body (JSON nested past the parser's limit too) or
too many images 422, each a JSON {"error": "..."} naming the problem (and the image, by file
name or index); so are FastAPI's own refusals (a bad query parameter, 404, 405).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from mnist_pipeline.core.contract import NUM_CLASSES
from mnist_pipeline.core.service_params import ServeParams
from mnist_pipeline.serving import api_schema, model_files
from mnist_pipeline.serving.challenger_metrics import ChallengerMetrics
from mnist_pipeline.serving.drift import DriftMonitor
from mnist_pipeline.serving.drift_claim import DriftClaims
from mnist_pipeline.serving.observe import note_prediction, observe
from mnist_pipeline.serving.predict import top_digits
from mnist_pipeline.serving.request_body import BodyLimit, ClientError, read_images
from mnist_pipeline.serving.served_model import ServedModel

if TYPE_CHECKING:  # annotations only
    from mnist_pipeline.serving.challenger import Challenger
    from mnist_pipeline.serving.feedback import Feedback


CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client gone before the answer (metrics, logs)


def create_app(
    served: ServedModel,
    limits: ServeParams,
    feedback: Feedback | None = None,
    challenger: Challenger | None = None,
    drift_claims: DriftClaims | None = None,
) -> FastAPI:
    """The API answering with `served` under `limits` (serve params); POST /feedback only with
    `feedback` (its credentials and pending area); `challenger` shadows production and answers
    the canary share (challenger.py); `drift_claims` makes one drift event per cooldown
    across processes (drift_claim.py)."""
    drift = DriftMonitor(served, limits, claims=drift_claims)  # off the response path

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        drift.start(metrics)  # with the server (uvicorn runs the lifespan), not at app creation
        yield  # at shutdown, the threads that watch for the app end with it
        drift.stop()
        served.stop()
        if challenger is not None:
            challenger.stop()

    app = FastAPI(
        title="mnist-pipeline",
        summary="Classify handwritten digits (ONNX model).",
        lifespan=lifespan,
        responses={413: api_schema.TOO_LARGE},  # any route: BodyLimit reads Content-Length first
        # "/predict/" is a JSON 404, not a 307 built from the client's Host header that would
        # have a client that follows it send its upload twice
        redirect_slashes=False,
    )

    @app.exception_handler(ClientError)
    async def client_error(_: Request, exc: ClientError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)  # 404, 405 (with Allow): the same JSON shape
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        headers = exc.headers
        if exc.status_code == 405:  # Starlette's Allow names the first route's methods only
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=headers)

    @app.exception_handler(ClientDisconnect)  # gone mid-upload: counted as 499, not a 500
    async def gone(_: Request, __: ClientDisconnect) -> Response:
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(RequestValidationError)  # a bad query parameter: 422, named
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{' '.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "; ".join(problems)}, status_code=422)

    # The probes run on the event loop: in the worker threads they would wait behind slow
    # requests there (/feedback waiting on the inbox's lock), and a busy server would be killed.
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses=api_schema.READYZ_RESPONSES)
    async def readyz() -> JSONResponse:
        status = served.status()
        ready = status["model"] is not None
        body = {
            "ready": ready,
            "version": (status["model"] or {}).get("version"),
            "problem": status["problem"],
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    # HEAD (`curl -I`, load balancers' checks): GET's status, no body; implied by GET in HTTP,
    # so left out of the OpenAPI document, as for /model, /metrics and /model.onnx
    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
    app.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)

    @app.get("/model")
    def model() -> dict[str, Any]:
        if challenger is None:
            shadow = None
        else:
            loaded = served.current
            shadow = challenger.status(None if loaded is None else loaded.version)
        return served.status() | {"shadow": shadow, "drift": drift.status()}

    app.add_api_route("/model", model, methods=["HEAD"], include_in_schema=False)

    @app.post(
        "/predict",
        responses=api_schema.PREDICT_RESPONSES,
        openapi_extra={"requestBody": api_schema.predict_body(limits.max_batch)},
    )
    async def predict(
        request: Request, top: int = Query(default=limits.top_k, ge=1, le=NUM_CLASSES)
    ) -> JSONResponse:
        # Decoding, preprocessing and inference run on the event loop, not in a thread pool:
        # they hold the GIL (onnxruntime's share is microseconds per digit), so threads would
        # only add hand-offs and contention; more cores are used with `serve.workers`. Only
        # images of many pixels are decoded in a thread (request_body.OFFLOAD_PIXELS), so that
        # the loop answers the probes meanwhile.
        names, digits = await read_images(request, limits)
        loaded = served.current  # read once: this request finishes on this version
        if loaded is None:
            raise ClientError(503, f"no model loaded yet: {served.problem or 'starting'}")
        production = loaded
        if challenger is None:
            probabilities = watched = loaded.probabilities(digits)
        else:  # the canary's share is answered by the challenger's version
            uploads = getattr(request.state, "uploads", None)
            loaded, probabilities, watched = challenger.answer(loaded, digits, uploads)
        note_prediction(request, loaded.version, probabilities)
        drift.offer(production, digits, watched)  # production's, whoever answered
        predictions = []
        for name, probs in zip(names, probabilities, strict=True):
            ranked = [{"digit": d, "probability": p} for d, p in top_digits(probs, top)]
            predictions.append({"name": name, "digit": ranked[0]["digit"], "top": ranked})
        version = {"name": served.registry.name, "version": loaded.version}
        return JSONResponse({"model": version, "predictions": predictions})

    model_files.mount(app, served)
    if feedback is not None:
        feedback.mount(app, None if challenger is None else challenger.label)

    app.add_middleware(BodyLimit, limit=limits.max_upload_bytes)
    if limits.cors_origins:
        app.add_middleware(
            JsonRefusingCORS,
            allow_origins=limits.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "If-None-Match"],  # /feedback; revalidating a model
            # a page checks the model it fetched, and reads when to retry (429, 503) and how
            # to authenticate (401)
            expose_headers=[*model_files.EXPOSED_HEADERS, "Retry-After", "WWW-Authenticate"],
        )
    metrics = observe(app, served, limits)  # outermost: every request, refusals included
    if challenger is not None:
        challenger.beside(served)
        if metrics is not None:
            challenger.count(ChallengerMetrics(metrics.registry))
    return app


class JsonRefusingCORS(CORSMiddleware):
    """Starlette's CORS, its preflight refusals (plain text there) in the server's JSON error
    shape, naming the setting that allows an origin."""

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code != 400:
            return answer
        said = bytes(answer.body).decode()
        error = {"error": f"CORS preflight refused: {said} (serve.cors_origins)"}
        kept = {
            k: v for k, v in answer.headers.items() if k not in ("content-length", "content-type")
        }
        return JSONResponse(error, status_code=400, headers=kept)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app takes at the request's path (GET and its HEAD are
    separate routes, the HEAD one left out of the OpenAPI document)."""
    methods = set()
    for route in request.app.router.routes:
        if route.matches(request.scope)[0] is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)
