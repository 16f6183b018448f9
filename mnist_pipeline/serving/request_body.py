"""Reading a request: its body within serve.max_upload_bytes, and its images in any of the
forms POST /predict takes (multipart files, an image body, a JSON batch of preprocessed
digits), each problem a ClientError with a status and a message naming it.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
from anyio import CapacityLimiter, to_thread
from fastapi import Request
from fastapi.responses import JSONResponse
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mnist_pipeline.core.contract import IMAGE_SIZE
from mnist_pipeline.core.service_params import ServeParams
from mnist_pipeline.data.decode import ImageError, header_pixels
from mnist_pipeline.data.preprocess import preprocess_bytes

# A request whose images decode to more pixels than this (a few milliseconds of work and up)
# is decoded in a worker thread, so the event loop meanwhile answers the probes and small
# requests; smaller ones stay on the loop, where a thread's hand-offs would cost more than they
# take (http_api.py `predict`).
OFFLOAD_PIXELS = 250_000
# The uploads of such requests, decoding or waiting for the thread, hold at most this many
# times serve.max_upload_bytes together; one more is answered 503 (retry). A batch of small PNGs
# is many pixels but few bytes: only large uploads fill it.
HEAVY_UPLOADS = 16
PNG_START = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"  # signature, IHDR's length and type


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


async def read_form(request: Request, max_files: int, max_fields: int, takes: str) -> FormData:
    """The request's multipart form; ClientError naming the problem when it is malformed or has
    more parts than allowed (saying what the endpoint `takes`, not Starlette's own limits)."""
    try:
        return await request.form(max_files=max_files, max_fields=max_fields)
    except HTTPException as exc:  # Starlette's 400 for a malformed body or too many parts
        detail = str(exc.detail)
        if detail.startswith("Too many files"):
            message = f"more than {max_files} files; {takes}"
        elif detail.startswith("Too many fields"):
            message = f"more than {max_fields} form fields; {takes}"
        else:
            message = f"malformed multipart body: {detail}"
        raise ClientError(422, message) from None


def checked_pixels(files: list[tuple[str, bytes]], limits: ServeParams) -> int:
    """The pixels the uploaded images decode to, from their headers (nothing decoded yet);
    ClientError for no image, too many, or a batch over serve.max_pixels together. A single
    image whose header cannot be read counts 0: decoding it names the problem."""
    if not files:
        raise ClientError(422, "no image: send multipart field 'files', an image body, or JSON")
    if len(files) > limits.max_batch:
        raise ClientError(422, f"{len(files)} images, over serve.max_batch ({limits.max_batch})")
    total = 0
    for name, data in files:
        try:
            total += png_pixels(data) or header_pixels(data, name)
        except ImageError as exc:
            if len(files) == 1:
                return 0
            raise ClientError(422, str(exc)) from None
        if len(files) > 1 and total > limits.max_pixels:  # one image: checked as decoded
            raise ClientError(
                422,
                f"{name}: the request's images have {total:,}+ pixels together, more than "
                f"serve.max_pixels ({limits.max_pixels:,})",
            )
    return total


def png_pixels(data: bytes) -> int | None:
    """Width x height of a PNG from its IHDR chunk (bytes 16-24), None for anything else: a
    PNG, what most uploads are, is sized in a microsecond instead of Pillow's ten."""
    if data[:16] != PNG_START or len(data) < 24:
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width * height


def digits_from_files(files: list[tuple[str, bytes]], limits: ServeParams) -> np.ndarray:
    """Preprocessed digits of uploaded image files; ClientError naming the first bad one."""
    try:
        limit = limits.max_pixels
        digits = [preprocess_bytes(data, name, limit, "serve.max_pixels") for name, data in files]
        return np.stack(digits)
    except ImageError as exc:
        raise ClientError(422, str(exc)) from None


async def read_images(request: Request, limits: ServeParams) -> tuple[list[str], np.ndarray]:
    """The request's images, whatever form they came in, as (names, digits)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        return digits_from_json(parse_json(await request.body()), limits.max_batch)
    if kind == "multipart/form-data":
        files = await form_files(request, limits)
    elif kind.startswith("image/") or kind == "application/octet-stream":
        files = [("body", await request.body())]
    else:
        raise ClientError(
            415,
            f"unsupported content type {kind or '(none)'!r}: send "
            "multipart/form-data files, an image/* body, or application/json",
        )
    if checked_pixels(files, limits) <= OFFLOAD_PIXELS:
        digits = digits_from_files(files, limits)  # on the event loop: see `predict`
    else:  # in a worker thread, one request at a time: the loop goes on answering meanwhile
        offload = getattr(request.app.state, "offload", None)
        if offload is None:  # made in the loop that uses it (anyio's limiter needs one)
            offload = request.app.state.offload = Offload(HEAVY_UPLOADS * limits.max_upload_bytes)
        digits = await offload.decode(files, limits)
    request.state.uploads = [data for _, data in files]  # keys of later labels (challenger.py)
    return [name for name, _ in files], digits


class Offload:
    """Decoding off the event loop, one request at a time; the uploads of the requests decoding
    or waiting hold at most `budget` bytes together (one more: 503, with Retry-After)."""

    def __init__(self, budget: int) -> None:
        self.limiter, self.budget, self.held = CapacityLimiter(1), budget, 0

    async def decode(self, files: list[tuple[str, bytes]], limits: ServeParams) -> np.ndarray:
        size = sum(len(data) for _, data in files)
        if self.held and self.held + size > self.budget:
            raise ClientError(
                503,
                f"busy: requests of large images waiting to be decoded already hold "
                f"{self.held:,} bytes; retry in a moment",
                {"Retry-After": "1"},
            )
        self.held += size
        try:
            return await to_thread.run_sync(digits_from_files, files, limits, limiter=self.limiter)
        finally:
            self.held -= size


async def form_files(request: Request, limits: ServeParams) -> list[tuple[str, bytes]]:
    """(file name, bytes) of the multipart field `files`; ClientError when the field came as
    text rather than files, or the body ended before its closing boundary (the parser would
    drop the part it cut short without a word)."""
    takes = f"a request takes at most serve.max_batch ({limits.max_batch}) images"
    body = await request.body()  # kept: the form is parsed from it, then its end is checked
    # one part more than a batch may have: a batch one over is named by its count below
    form = await read_form(request, limits.max_batch + 1, limits.max_batch + 1, takes)
    try:
        sent = form.getlist("files")
        uploads = [v for v in sent if isinstance(v, UploadFile)]
        if len(uploads) < len(sent):
            raise ClientError(
                422,
                "multipart field 'files' came as text, not as a file: send it with a file name "
                "(curl -F files=@digit.png)",
            )
        files = [(u.filename or f"file {i}", await u.read()) for i, u in enumerate(uploads)]
    finally:
        await form.close()  # the uploads' spooled files, now rather than when collected
    boundary = parse_options_header(request.headers["content-type"])[1].get(b"boundary", b"")
    close = b"--" + boundary + b"--"  # the parser accepted it: it has a boundary
    # a delimiter only at the start or after a CRLF: "--B--" right after a part's bytes ends a
    # body cut short, whose last part the parser dropped
    if not body.startswith(close) and b"\r\n" + close not in body:
        raise ClientError(422, "malformed multipart body: it ends before its closing boundary")
    return files
