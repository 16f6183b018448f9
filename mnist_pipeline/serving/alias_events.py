"""A replica hears at once that its alias moved: Prefect's event stream as a hint (no torch).

Moving an alias emits `mnist.alias.moved` on the resource `mnist.model.<model name>`
(pipeline/announce.py). `AliasEvents` subscribes to those events of one model in a daemon thread
with its own asyncio loop and calls `refresh` when one names the alias it follows. The event is
only a hint: `refresh` asks the registry which version the alias names and verifies it, as the
regular poll does; the version in the payload is never used. When the stream cannot be reached
or closes, one warning is logged and it reconnects with backoff (1 s doubling to 60 s) while the
poll keeps the server correct. Prefect is imported in that thread only, so a server without
`PREFECT_API_URL` in its environment never imports it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx

from mnist_pipeline.pipeline.announce import MOVED, resource_id

logger = logging.getLogger("mnist_pipeline.serve")

# A subscriber factory: given the model's resource id, an async context manager yielding an
# async iterator of events (Prefect's `get_events_subscriber`; tests pass a fake one).
Subscribe = Callable[[str], AbstractAsyncContextManager[AsyncIterator[Any]]]
BACKOFF_S = (1.0, 60.0)  # first and longest wait before reconnecting
HEALTH_TIMEOUT_S = 5.0  # how long an event's sender waits for the API's health check
TRUE_WORDS = {"1", "true", "t", "yes", "y", "on"}  # Prefect's (pydantic's) true booleans


def api_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process's environment names a Prefect API (checked without Prefect)."""
    return bool(environ.get("PREFECT_API_URL", "").strip())


def preload_prefect() -> None:
    """Import the Prefect modules the server's threads use (the alias's event stream, the
    canary's and drift's events), in the calling thread. Imported first by two threads at once,
    Prefect's modules can deadlock on Python's import locks, which then fail one of the imports
    (an event lost with "deadlock detected by _ModuleLock('prefect.events')")."""
    import prefect.events  # noqa: F401
    import prefect.events.clients  # noqa: F401
    import prefect.events.filters  # noqa: F401
    import prefect.settings  # noqa: F401


STREAM_DOWN = "the Prefect event stream cannot be followed now (the server's log says why)"


def api_problem(environ: Mapping[str, str] = os.environ) -> Exception | None:
    """Why the Prefect API this process's environment names does not answer its health check
    (None: it does, or none is named). One request, no retries: Prefect's own client retries
    a silent server for a minute and more. It is sent as Prefect's client would send it, from
    the settings in the environment (a Prefect profile is not read): the auth string or API
    key, `PREFECT_CLIENT_CUSTOM_HEADERS`, and the TLS settings
    (`PREFECT_API_TLS_INSECURE_SKIP_VERIFY`, `PREFECT_API_SSL_CERT_FILE`)."""
    url = environ.get("PREFECT_API_URL", "").strip().rstrip("/")
    if not url:
        return None
    try:
        httpx.get(
            f"{url}/health",
            headers=_headers(environ),
            verify=_tls_verify(environ),
            timeout=HEALTH_TIMEOUT_S,
        ).raise_for_status()
    except Exception as exc:  # noqa: BLE001 - any reason it cannot be asked is an answer
        return exc
    return None


def _headers(environ: Mapping[str, str]) -> dict[str, str]:
    """The auth header, then the custom headers over it (as Prefect's client applies them)."""
    headers = {}
    if auth := environ.get("PREFECT_API_AUTH_STRING", ""):
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    elif key := environ.get("PREFECT_API_KEY", ""):
        headers["Authorization"] = f"Bearer {key}"
    if custom := environ.get("PREFECT_CLIENT_CUSTOM_HEADERS", "").strip():
        try:
            parsed = json.loads(custom)
        except ValueError as exc:
            raise ValueError(f"PREFECT_CLIENT_CUSTOM_HEADERS is not JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise ValueError("PREFECT_CLIENT_CUSTOM_HEADERS is not a JSON object")
        headers.update({str(name): str(value) for name, value in parsed.items()})
    return headers


def _tls_verify(environ: Mapping[str, str]) -> bool | ssl.SSLContext:
    """httpx's `verify` as Prefect's client chooses it: off when told to skip verification,
    else the named CA file, else the default trust store."""
    if environ.get("PREFECT_API_TLS_INSECURE_SKIP_VERIFY", "").strip().lower() in TRUE_WORDS:
        return False
    if cafile := environ.get("PREFECT_API_SSL_CERT_FILE", "").strip():
        return ssl.create_default_context(cafile=cafile)  # a missing file: the check fails
    return True


def emit_if_configured(event: str, model_name: str, payload: dict[str, Any]) -> bool:
    """announce.emit when this process's environment names a Prefect API (Prefect is not
    imported otherwise, nor a Prefect profile read) and the API answers its health check; False
    without one, or (logged) when it does not answer. Prefect's emitter only queues an event,
    so a server that is down would otherwise count as one that took it."""
    if not api_configured():
        return False
    problem = api_problem()
    if problem is not None:
        where = os.environ.get("PREFECT_API_URL", "").strip()
        logger.warning(
            "%s not sent: the Prefect API at %s does not answer (%s)", event, where, problem
        )
        return False
    from mnist_pipeline.pipeline.announce import emit

    return emit(event, model_name, payload)


def names_alias(event: Any, model_name: str, alias: str) -> bool:
    """Whether `event` (a Prefect Event) says that `alias` of `model_name` moved."""
    payload = getattr(event, "payload", None) or {}
    return (
        getattr(event, "event", None) == MOVED
        and getattr(getattr(event, "resource", None), "id", None) == resource_id(model_name)
        and payload.get("alias") == alias
    )


def prefect_subscriber(resource: str) -> AbstractAsyncContextManager[AsyncIterator[Any]]:
    """Prefect's subscriber to `mnist.alias.moved` on `resource` (reconnecting on its own,
    also after a clean close)."""
    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    wanted = EventFilter(
        event=EventNameFilter(name=[MOVED]), resource=EventResourceFilter(id=[resource])
    )
    return get_events_subscriber(filter=wanted, reconnect_on_clean_close=True)


class AliasEvents:
    """Calls `refresh()` whenever the event stream says `alias` of `model_name` moved."""

    def __init__(
        self,
        model_name: str,
        alias: str,
        refresh: Callable[[], object],
        subscribe: Subscribe = prefect_subscriber,
        backoff_s: tuple[float, float] = BACKOFF_S,
    ) -> None:
        self.model_name, self.alias, self.refresh = model_name, alias, refresh
        self.subscribe, self.backoff_s = subscribe, backoff_s
        self.connected = False  # subscribed now
        self.problem: str | None = None  # why the stream is not followed now (public)
        self.heard = 0  # events that named the alias
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> threading.Thread:
        """Follow the stream in a daemon thread until `stop()`."""
        thread = threading.Thread(target=self._thread, name="alias-events", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile: the thread is done
                loop.call_soon_threadsafe(task.cancel)

    def status(self) -> dict[str, Any]:
        """For GET /model: whether the stream is followed now, and why not."""
        return {"connected": self.connected, "heard": self.heard, "problem": self.problem}

    def _thread(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._task = loop.create_task(self.run())
            if self._stop.is_set():  # stopped before the task existed
                self._task.cancel()
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    async def run(self) -> None:
        """Subscribe, refresh on each event for the alias, and resubscribe on any failure."""
        first, longest = self.backoff_s
        wait, attempts, warned = first, 0, None
        while not self._stop.is_set():
            attempts += 1
            since = None  # when this subscription was taken
            try:
                async with self.subscribe(resource_id(self.model_name)) as events:
                    self.connected, self.problem, since = True, None, time.monotonic()
                    logger.info("following %s events of %s", MOVED, self.model_name)
                    if attempts > 1:  # a move may have been missed meanwhile
                        await asyncio.to_thread(self.refresh)
                    async for event in events:
                        if names_alias(event, self.model_name, self.alias):
                            self.heard += 1
                            await asyncio.to_thread(self.refresh)
                    if self._stop.is_set():
                        self.connected = False
                        return
                    raise ConnectionError("the event stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - polling serves on; retried below
                message = str(exc) or type(exc).__name__
                # a stream that stayed up a while starts the backoff afresh; one that keeps
                # dropping right after it subscribes backs off as a refusal does, warned once
                if since is not None and time.monotonic() - since >= longest:
                    wait, warned = first, None
                if warned is None:  # once an outage
                    logger.warning(
                        "not following %s events (%s); polling the registry meanwhile",
                        MOVED,
                        message,
                    )
                    warned = message
                # GET /model shows this to anyone: the API's address stays in the log
                self.connected, self.problem = False, STREAM_DOWN
            await asyncio.sleep(wait)
            wait = min(wait * 2, longest)
