"""POST /feedback: a trusted client's corrected digit, quarantined for review (inbox/pending.py).

    Authorization: Bearer <token>     a credential of serving/tokens.py
    multipart `file` (one image) and `label` (the digit it shows)

201 a new claim awaits review in data/pending/ (or, with `inbox.shared`, in the shared inbox's
store: inbox/review_queue.py), 200 this credential already claimed it, 401 no
or an unknown or expired token (with `WWW-Authenticate: Bearer`), 429 over
`serve.feedback_rate_per_minute` or with `serve.feedback_quota` images of this credential
awaiting review (with `Retry-After`), 415/422 a malformed submission, 503 a problem on the
server's side (the tokens file or data/pending/ unreadable, the inbox's lock busy, the store
down): its details are logged, never sent. Each error is JSON {"error": ...} and stores
nothing. The tokens file's check and the quarantine's file work run in worker threads, off the
event loop. Nothing posted here reaches training until `mnist-pipeline data accept` moves it
into data/extra/.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from anyio import CapacityLimiter, to_thread
from fastapi import FastAPI, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from filelock import Timeout
from starlette.datastructures import FormData, UploadFile

from mnist_pipeline.core.contract import CLASS_LABELS
from mnist_pipeline.core.errors import DataError, describe_os_error
from mnist_pipeline.data.decode import MAX_PIXELS, ImageError, header_pixels
from mnist_pipeline.inbox import pending, review_queue
from mnist_pipeline.inbox.claims import BadSubmission
from mnist_pipeline.inbox.seen import check_not_lost
from mnist_pipeline.inbox.shared import IDENTITY, SharedInbox, StoreUnavailable
from mnist_pipeline.serving import api_schema
from mnist_pipeline.serving.observe import note_feedback
from mnist_pipeline.serving.request_body import ClientError, read_form
from mnist_pipeline.serving.tokens import Credentials, RateLimiter, Unauthorized

QUOTA_RETRY_AFTER_S = 3600  # a full quota frees up only when a reviewer gets to it
BUSY_RETRY_AFTER_S = 30  # the inbox's lock is held by a review or an ingest
# Submissions waiting on the inbox's lock (up to a minute) hold at most this many threads, not
# the pool that GET /model and /metrics answer from
SUBMISSION_THREADS = 8
UNAVAILABLE = "feedback storage is unavailable (a problem on the server, logged there)"
logger = logging.getLogger("mnist_pipeline.serve")
# Only for the OpenAPI document (a bearer scheme); `authorize` reads and checks the header.
BEARER = Security(HTTPBearer(auto_error=False, description="a feedback token (tokens.py)"))


@dataclass(frozen=True)
class Feedback:
    """Where /feedback quarantines images, who may send them, and how many."""

    inbox: Path  # data/extra: only its lock is taken (a submission never reads the inbox)
    pending: Path  # data/pending
    credentials: Credentials
    limiter: RateLimiter
    quota: int
    shared: str | None = None  # inbox.shared, resolved: the queue is the store's (review_queue)
    max_pixels: int = MAX_PIXELS  # serve.max_pixels, as for /predict (from the image's header)
    # the store's identity as this server first read it (see `_same_store`)
    first_store: dict[str, str] = field(default_factory=dict, compare=False)

    @cached_property
    def store(self) -> SharedInbox:
        """The shared inbox, opened at the first claim (a store that is down then fails that
        claim with 503, not the server's start; a failed open is tried again next time)."""
        assert self.shared is not None
        return SharedInbox(self.shared)

    def submit(
        self, data: bytes, name: str, label: str, source: str, client: str | None
    ) -> pending.Submitted:
        """Quarantine one claim: in data/pending/, or in the shared inbox's store."""
        try:  # serve.max_pixels from the header (the inbox's own limit is far higher)
            pixels = header_pixels(data, name)
        except ImageError as exc:
            raise BadSubmission(str(exc)) from None
        if pixels > self.max_pixels:
            raise BadSubmission(
                f"{name}: {pixels:,} pixels, more than the limit of {self.max_pixels:,} "
                "(serve.max_pixels)"
            )
        if self.shared is not None:
            store = self._same_store()
            return review_queue.submit(store, data, name, label, source, client, self.quota)
        args = (self.pending, self.inbox, data, name, label, source, client, self.quota)
        return pending.submit(*args)

    def _same_store(self) -> SharedInbox:
        """The shared inbox, if it is still the store this server (or this host's last sync)
        knew: StoreUnavailable (503) when its identity is gone or another (a share unmounted
        under a running server, its mount point empty; a store wiped), where a claim written
        would be hidden, and lost, once the share is back."""
        store = self.store
        now = store.identity(fresh=True)  # one small read a claim: claims are few
        first = self.first_store.setdefault("id", now) if now else self.first_store.get("id")
        if first is not None and now != first:
            raise StoreUnavailable(
                f"shared inbox {store.location}: its {IDENTITY} is gone or another since this "
                "server first used it (wiped, or a share not mounted?): nothing submitted; "
                "restart the server if the store was made afresh on purpose"
            )
        check_not_lost(store, self.inbox, "submitted")
        return store

    def mount(self, app: FastAPI, labelled: Callable[[str, int], None] | None = None) -> None:
        """Add the POST /feedback route to `app`; `labelled` hears each stored claim's image
        SHA-256 and label (the challenger's live accuracy)."""
        submissions = CapacityLimiter(SUBMISSION_THREADS)

        @app.post(
            "/feedback",
            status_code=201,
            responses=api_schema.FEEDBACK_RESPONSES,
            openapi_extra={"requestBody": api_schema.FEEDBACK_BODY},
        )
        async def feedback(request: Request, _: object = BEARER) -> JSONResponse:
            source = await to_thread.run_sync(self.authorize, request)  # reads the tokens file
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "multipart/form-data":
                raise ClientError(415, "send multipart/form-data with fields 'file' and 'label'")
            takes = "/feedback takes one 'file' and one 'label'"
            form = await read_form(request, 2, 4, takes)
            try:
                upload, label = _fields(form)
                data, name = await upload.read(), upload.filename or "file"
            finally:  # an upload over 1 MB is a temporary file: closed now, not by the gc
                await form.close()
            client = request.client.host if request.client else None
            try:  # the lock and the files would block the event loop (and /predict)
                args = (data, name, label, source, client)
                done = await to_thread.run_sync(self.submit, *args, limiter=submissions)
            except pending.QuotaExceeded as exc:
                raise ClientError(
                    429, str(exc), {"Retry-After": str(QUOTA_RETRY_AFTER_S)}
                ) from None
            except BadSubmission as exc:  # the image or label sent
                raise ClientError(422, str(exc)) from None
            except DataError as exc:  # the server's (a bad record, a store that is down)
                logger.error("/feedback refused: %s", exc)
                raise ClientError(503, UNAVAILABLE) from None
            except Timeout:
                logger.warning("/feedback refused: the inbox's lock stayed busy")
                raise ClientError(
                    503,
                    "feedback storage is busy (a review or an ingest); retry later",
                    {"Retry-After": str(BUSY_RETRY_AFTER_S)},
                ) from None
            except OSError as exc:
                logger.error("/feedback refused: %s", describe_os_error(exc))
                raise ClientError(503, UNAVAILABLE) from None
            note_feedback(request, done.status, done.claim.label)
            if labelled is not None:
                labelled(done.sha256, done.claim.label)
            body = {"status": done.status, "sha256": done.sha256, **asdict(done.claim)}
            return JSONResponse(body, status_code=201 if done.status == "pending" else 200)

    def authorize(self, request: Request) -> str:
        """The request's source (`token:<name>`), within its rate; ClientError otherwise."""
        try:
            credential = self.credentials.check(request.headers.get("authorization"))
        except Unauthorized as exc:
            challenge = 'Bearer realm="feedback"'
            if request.headers.get("authorization"):
                challenge += ', error="invalid_token"'
            raise ClientError(401, str(exc), {"WWW-Authenticate": challenge}) from None
        except (DataError, OSError) as exc:  # the tokens file went bad: say why in the log only
            logger.error("/feedback refused: %s", exc)
            raise ClientError(503, "feedback credentials are unavailable") from None
        wait = self.limiter.take(credential.name)
        if wait is not None:
            raise ClientError(
                429,
                f"{credential.name!r} is over serve.feedback_rate_per_minute; retry in {wait} s",
                {"Retry-After": str(wait)},
            )
        return f"token:{credential.name}"


def _fields(form: FormData) -> tuple[UploadFile, str]:
    """The form's one image and one label; ClientError (422) for anything else."""
    for name in ("file", "label"):  # never one of two images, or one of two labels
        if len(form.getlist(name)) > 1:
            raise ClientError(422, f"multipart field {name!r} given more than once")
    upload, label = form.get("file"), form.get("label")
    if not isinstance(upload, UploadFile) or not isinstance(label, str):
        raise ClientError(422, "multipart fields 'file' (an image) and 'label' are needed")
    if label not in CLASS_LABELS:  # exactly one digit, as the OpenAPI document says
        raise ClientError(422, f"label must be one digit 0-9, got {label[:20]!r}")
    return upload, label
