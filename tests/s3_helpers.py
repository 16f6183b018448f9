"""An S3-compatible server for tests: moto's standalone server (it honours If-None-Match and
If-Match on PUT), a fresh bucket per test, and a proxy that strips those headers (an endpoint
that ignores conditional writes)."""

from __future__ import annotations

import http.client
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server on a free 127.0.0.1 port; yields its endpoint URL."""
    from tests.conftest import unavailable

    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        unavailable("moto[server] is not installed (the dev extra)")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def use_endpoint(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Point boto3 (in this process and its children) at `endpoint` with test credentials."""
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


def new_bucket(endpoint: str) -> str:
    """A freshly created, empty bucket's name."""
    import boto3

    name = f"models-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=endpoint, **_lower(CREDENTIALS))
    client.create_bucket(Bucket=name)
    return name


def _lower(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


STRIPPED = {"if-none-match", "if-match"}


class Proxy:
    """An HTTP proxy in front of an S3 endpoint, for faults the endpoint itself cannot make:
    `strip` drops request headers (an endpoint ignoring conditional writes), `down` makes it
    drop every connection unanswered (a store that stopped), `down_after` is a predicate
    on (method, path) after whose request it goes down, and `lose_answer` one on (method, path)
    for the first request it passes on to the endpoint but never answers (a write stored, its
    answer lost)."""

    def __init__(self, endpoint: str, strip: set[str] = frozenset()) -> None:
        self.target = endpoint.removeprefix("http://")
        self.strip = strip
        self.down = threading.Event()
        self.down_after = None
        self.lose_answer = None
        self.url = ""

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        if self.down.is_set():
            handler.close_connection = True  # no answer at all, as from a stopped server
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in self.strip}
        upstream = http.client.HTTPConnection(self.target, timeout=30)
        upstream.request(handler.command, handler.path, body=body, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        upstream.close()
        if self.lose_answer is not None and self.lose_answer(handler.command, handler.path):
            self.lose_answer = None
            handler.close_connection = True  # done upstream, never told
            return
        handler.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
        if self.down_after is not None and self.down_after(handler.command, handler.path):
            self.down.set()


@contextmanager
def proxy(endpoint: str, strip: set[str] = frozenset()) -> Iterator[Proxy]:
    """A running Proxy to `endpoint` on a free 127.0.0.1 port (its URL in `.url`)."""
    state = Proxy(endpoint, strip)

    class Forward(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            state.forward(self)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """One moto S3 server for the test session."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_url(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """s3://<a new bucket>/registry, with boto3 pointed at the session's server."""
    use_endpoint(monkeypatch, s3_endpoint)
    return f"s3://{new_bucket(s3_endpoint)}/registry"


@pytest.fixture(params=["local", "s3"])
def registry_root(request: pytest.FixtureRequest, tmp_path) -> str:
    """A registry location on each backend: a folder, then an S3 bucket."""
    if request.param == "local":
        return str(tmp_path / "registry")
    return request.getfixturevalue("s3_url")
