"""The Prefect API health check an event's sender makes first (serving/alias_events.api_problem),
against a real HTTP server on 127.0.0.1: sent as Prefect's client would send it, and any reason
it cannot be made comes back as the problem, never raised."""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mnist_pipeline.serving.alias_events import _tls_verify, api_problem


class _Health(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).seen.append({"path": self.path, **dict(self.headers)})
        status = 200 if self.path == "/api/health" else 503
        self.send_response(status)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def health() -> Iterator[tuple[str, list[dict[str, str]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    _Health.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Health.seen
    finally:
        server.shutdown()
        server.server_close()


def test_an_answering_api_is_asked_with_the_clients_auth_and_custom_headers(health) -> None:
    base, seen = health
    environ = {
        "PREFECT_API_URL": f"{base}/api/",
        "PREFECT_API_AUTH_STRING": "admin:pass",
        "PREFECT_CLIENT_CUSTOM_HEADERS": json.dumps({"X-Team": "ml", "X-Trace": 7}),
    }
    assert api_problem(environ) is None
    (request,) = seen
    assert request["path"] == "/api/health"
    assert request["Authorization"] == "Basic " + base64.b64encode(b"admin:pass").decode()
    assert (request["X-Team"], request["X-Trace"]) == ("ml", "7")
    assert api_problem({"PREFECT_API_URL": f"{base}/api", "PREFECT_API_KEY": "k1"}) is None
    assert seen[-1]["Authorization"] == "Bearer k1"
    custom = {"PREFECT_CLIENT_CUSTOM_HEADERS": json.dumps({"Authorization": "Token t"})}
    keyed = {"PREFECT_API_URL": f"{base}/api", "PREFECT_API_KEY": "k1"}
    assert api_problem(keyed | custom) is None
    assert seen[-1]["Authorization"] == "Token t"  # custom headers win, as in Prefect's client


def test_every_reason_the_check_cannot_be_made_is_returned_not_raised(health) -> None:
    base, seen = health
    failing = api_problem({"PREFECT_API_URL": f"{base}/down"})
    assert "503" in str(failing) and seen[-1]["path"] == "/down/health"
    asked = len(seen)
    bad_label = api_problem({"PREFECT_API_URL": "http://a..b/api"})  # not even resolvable
    assert bad_label is not None
    bad_headers = api_problem({"PREFECT_API_URL": base, "PREFECT_CLIENT_CUSTOM_HEADERS": "{x"})
    assert "PREFECT_CLIENT_CUSTOM_HEADERS is not JSON" in str(bad_headers)
    listed = api_problem({"PREFECT_API_URL": base, "PREFECT_CLIENT_CUSTOM_HEADERS": "[1]"})
    assert "is not a JSON object" in str(listed)
    no_ca = api_problem({"PREFECT_API_URL": base, "PREFECT_API_SSL_CERT_FILE": "/nonexistent"})
    assert isinstance(no_ca, FileNotFoundError)
    assert len(seen) == asked  # none of these reached the server
    assert api_problem({}) is None and api_problem({"PREFECT_API_URL": "  "}) is None


def test_tls_is_verified_as_prefects_client_verifies_it(tmp_path) -> None:
    assert _tls_verify({}) is True
    for word in ("1", "true", "True", "yes", "on"):
        assert _tls_verify({"PREFECT_API_TLS_INSECURE_SKIP_VERIFY": word}) is False
    assert _tls_verify({"PREFECT_API_TLS_INSECURE_SKIP_VERIFY": "false"}) is True
    ca = tmp_path / "ca.pem"
    ca.write_text(_a_certificate())
    context = _tls_verify({"PREFECT_API_SSL_CERT_FILE": str(ca)})
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509_ca"] == 1  # the named CA, not the default store


def _a_certificate() -> str:
    """A self-signed CA certificate in PEM (cryptography, as the signing keys use)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()
