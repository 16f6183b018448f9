"""A Prefect API that cannot be reached, told in one line by the flow scripts.

`python -m flows.serve`, `flows.retrain` and `flows.sweep` talk to the API that
`PREFECT_API_URL` names; when it is down, wrong or refuses the credentials, Prefect's client
raises httpx errors or a RuntimeError ("Failed to reach API at ..."), which would end the
script in a traceback. Inside `one_line_errors` this turns them into one `error:` line naming
the API (without credentials in its URL) and what it answered, if anything, and exit status 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import httpx

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.inbox.events import server_configured

UNREACHABLE = "Failed to reach API at"  # how Prefect's client says it found no API


@contextmanager
def api_errors() -> Iterator[None]:
    """Re-raise a failure to reach the configured Prefect API as a PipelineError."""
    try:
        yield
    except httpx.HTTPError as exc:  # PrefectHTTPStatusError too (a 401 for wrong credentials)
        if not _to_api(exc):
            raise  # another server's (a notification's webhook): not the API's
        raise PipelineError(_told(exc)) from None
    except RuntimeError as exc:
        if not str(exc).startswith(UNREACHABLE):
            raise
        raise PipelineError(_told(exc.__cause__ or exc)) from None


def _to_api(exc: httpx.HTTPError) -> bool:
    """Whether `exc` came from a request to the configured API."""
    api = server_configured()
    try:
        url = str(exc.request.url)
    except RuntimeError:  # raised without a request
        return False
    return api is not None and url.startswith(api.rstrip("/"))


def _told(exc: BaseException) -> str:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    api = f"the Prefect API at {_without_credentials(server_configured() or '')}"
    if isinstance(exc, httpx.HTTPStatusError):  # it answered: with an error
        return f"{api} (PREFECT_API_URL) answered {exc.response.status_code}: {reason}"
    return f"cannot reach {api} (PREFECT_API_URL): {reason}"


def _without_credentials(url: str) -> str:
    """`url` without a user:password part (an error line is no place for them)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
