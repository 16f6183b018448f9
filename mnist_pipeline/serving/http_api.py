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
                    shared inbox's queue: inbox/review_shared.py)
    GET  /docs      OpenAPI (/openapi.json: every body and answer, api_schema.py)

Client input never causes a 500: an oversized body is 413, an unsupported content type 415, an
undecodable image, a bad array, a malformed body (JSON nested past the parser's limit too) or
too many images 422, each a JSON {"error": "..."} naming the problem (and the image, by file
name or index); so are FastAPI's own refusals (a bad query parameter, 404, 405).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mnist_pipeline.core.contract import IMAGE_SIZE, NUM_CLASSES
from mnist_pipeline.core.service_params import ServeParams
from mnist_pipeline.data.preprocess import ImageError, header_pixels, preprocess_bytes
from mnist_pipeline.serving import api_schema, model_files
from mnist_pipeline.serving.challenger_metrics import ChallengerMetrics
from mnist_pipeline.serving.drift import DriftMonitor
from mnist_pipeline.serving.observe import note_prediction, observe
from mnist_pipeline.serving.predict import top_digits
from mnist_pipeline.serving.served_model import ServedModel

if TYPE_CHECKING:  # feedback.py imports this module
    from mnist_pipeline.serving.challenger import Challenger
    from mnist_pipeline.serving.feedback import Feedback


CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client gone before the answer (metrics, logs)


class ClientError(Exception):
    """A request the server refuses: its status code, a message naming the problem, and any
    headers the status needs (WWW-Authenticate, Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is refused with 413 before it is read
    whole (by Content-Length, or while streaming when there is none)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send, int(declared))
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ClientError(413, self._message(seen))
            return message

        try:
            await self.app(scope, counted, send)
        except ClientError:
            await self._refuse(send, seen)

    def _message(self, size: int) -> str:
        return f"request body of {size:,}+ bytes is over serve.max_upload_bytes ({self.limit:,})"

    async def _refuse(self, send: Send, size: int) -> None:
        response = JSONResponse({"error": self._message(size)}, status_code=413)
        await response({"type": "http"}, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _json_kind(value: Any) -> str:
    """What a parsed JSON value is, in JSON's words ("an array", "null")."""
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    kinds |= {list: "an array", dict: "an object", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def digits_from_json(body: Any, max_batch: int) -> tuple[list[str], np.ndarray]:
    """Names and float32 [N, 28, 28] digits of a JSON batch; ClientError naming the problem."""
    images = body.get("images") if isinstance(body, dict) else None
    if not isinstance(images, list) or not images:
        got = (
            f"got {_json_kind(body)}"
            if not isinstance(body, dict)
            else "no 'images' key"
            if "images" not in body
            else "'images' is empty"
            if images == []
            else f"'images' is {_json_kind(images)}"
        )
        raise ClientError(422, f'expected a JSON object {{"images": [28x28 arrays]}} ({got})')
    if len(images) > max_batch:
        raise ClientError(422, f"{len(images)} images, over serve.max_batch ({max_batch})")
    try:  # no dtype: strings, booleans and integers beyond 64 bits are not numbers here
        raw = np.asarray(images)
    except (TypeError, ValueError, OverflowError):
        raw = None
    if raw is None or raw.dtype.kind not in "iuf":
        raise ClientError(422, "images must be arrays of numbers, all 28x28")
    digits = raw.astype(np.float32)
    if digits.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or digits.ndim != 3:
        raise ClientError(422, f"images must be 28x28 each; got shape {list(digits.shape)}")
    bad = np.flatnonzero(
        ~np.isfinite(digits).all(axis=(1, 2))
        | (digits.min(axis=(1, 2)) < 0)
        | (digits.max(axis=(1, 2)) > 1)
    )
    if bad.size:
        raise ClientError(422, f"image {int(bad[0])}: values must be finite and in [0, 1]")
    return [f"image {i}" for i in range(len(digits))], digits


def parse_json(body: bytes) -> Any:
    """The JSON value of a request body; ClientError when it is not JSON or nests deeper than
    the parser can follow (a RecursionError, which must not become a 500)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ClientError(422, "the JSON body is nested too deeply to parse") from None
    except ValueError:
        raise ClientError(422, "the body is not valid JSON") from None


async def read_form(request: Request, max_files: int, max_fields: int) -> FormData:
    """The request's multipart form; ClientError naming the problem when it is malformed."""
    try:
        return await request.form(max_files=max_files, max_fields=max_fields)
    except HTTPException as exc:  # Starlette's 400 for a malformed body or too many parts
        raise ClientError(422, f"malformed multipart body: {exc.detail}") from None


def digits_from_files(files: list[tuple[str, bytes]], limits: ServeParams) -> np.ndarray:
    """Preprocessed digits of uploaded image files; ClientError naming the first bad one."""
    if not files:
        raise ClientError(422, "no image: send multipart field 'files', an image body, or JSON")
    if len(files) > limits.max_batch:
        raise ClientError(422, f"{len(files)} images, over serve.max_batch ({limits.max_batch})")
    try:
        total = 0  # a batch's images within serve.max_pixels together, before any is decoded
        for name, data in files if len(files) > 1 else ():  # one image: checked as decoded
            total += header_pixels(data, name)
            if total > limits.max_pixels:
                raise ImageError(
                    f"{name}: the request's images have {total:,}+ pixels together, more than "
                    f"serve.max_pixels ({limits.max_pixels:,})"
                )
        return np.stack([preprocess_bytes(data, name, limits.max_pixels) for name, data in files])
    except ImageError as exc:
        raise ClientError(422, str(exc)) from None


async def read_images(request: Request, limits: ServeParams) -> tuple[list[str], np.ndarray]:
    """The request's images, whatever form they came in, as (names, digits)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        return digits_from_json(parse_json(await request.body()), limits.max_batch)
    if kind == "multipart/form-data":
        form = await read_form(request, limits.max_batch + 1, limits.max_batch + 1)
        uploads = [v for v in form.getlist("files") if isinstance(v, UploadFile)]
        files = [(u.filename or f"file {i}", await u.read()) for i, u in enumerate(uploads)]
    elif kind.startswith("image/") or kind == "application/octet-stream":
        files = [("body", await request.body())]
    else:
        raise ClientError(
            415,
            f"unsupported content type {kind or '(none)'!r}: send "
            "multipart/form-data files, an image/* body, or application/json",
        )
    digits = digits_from_files(files, limits)  # on the event loop: see `predict`
    request.state.uploads = [data for _, data in files]  # keys of later labels (challenger.py)
    return [name for name, _ in files], digits


def create_app(
    served: ServedModel,
    limits: ServeParams,
    feedback: Feedback | None = None,
    challenger: Challenger | None = None,
) -> FastAPI:
    """The API answering with `served` under `limits` (serve params); POST /feedback only with
    `feedback` (its credentials and pending area); `challenger` shadows production and answers
    the canary share (challenger.py)."""
    app = FastAPI(title="mnist-pipeline", summary="Classify handwritten digits (ONNX model).")
    drift = DriftMonitor(served, limits)  # off the response path (serving/drift.py)

    @app.exception_handler(ClientError)
    async def client_error(_: Request, exc: ClientError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)  # 404, 405 (with Allow): the same JSON shape
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

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

    @app.get("/model")
    def model() -> dict[str, Any]:
        if challenger is None:
            shadow = None
        else:
            loaded = served.current
            shadow = challenger.status(None if loaded is None else loaded.version)
        return served.status() | {"shadow": shadow, "drift": drift.status()}

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
        # only add hand-offs and contention; more cores are used with `serve.workers`.
        names, digits = await read_images(request, limits)
        loaded = served.current  # read once: this request finishes on this version
        if loaded is None:
            raise ClientError(503, f"no model loaded yet: {served.problem or 'starting'}")
        if challenger is None:
            probabilities = loaded.probabilities(digits)
        else:  # the canary's share is answered by the challenger's version
            uploads = getattr(request.state, "uploads", None)
            loaded, probabilities = challenger.answer(loaded, digits, uploads)
        note_prediction(request, loaded.version, probabilities)
        drift.offer(loaded, digits, probabilities)
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
            CORSMiddleware,
            allow_origins=limits.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "If-None-Match"],  # /feedback; revalidating a model
            expose_headers=model_files.EXPOSED_HEADERS,  # a page checks the model it fetched
        )
    metrics = observe(app, served, limits)  # outermost: every request, refusals included
    if challenger is not None and metrics is not None:
        challenger.count(ChallengerMetrics(metrics.registry), served)
    drift.start(metrics)
    return app
