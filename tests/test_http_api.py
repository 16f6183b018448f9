"""The HTTP API in-process (FastAPI TestClient): every endpoint, every refusal, alias following."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mnist_pipeline.core.errors import ParamsError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.service_params import ServeParams
from mnist_pipeline.data.preprocess import preprocess_file
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registry
from mnist_pipeline.serving import served_model
from mnist_pipeline.serving.challenger import Challenger
from mnist_pipeline.serving.http_api import create_app
from mnist_pipeline.serving.predict import predict_files
from mnist_pipeline.serving.served_model import ServedModel
from mnist_pipeline.serving.server import feedback_of
from mnist_pipeline.serving.tokens import ENV_TOKENS, token_sha256
from tests import challenger_helpers
from tests.example_helpers import draw_digit, png_header_only
from tests.registry_helpers import (
    MODEL,
    PARAMS,
    candidate_in,
    model_dir,
    stored,
    writable,
)

# fixtures: two exported models; a registry with v1 production and v2 staging (lower accuracy)
_models, registry = challenger_helpers._models, challenger_helpers.registry


def client(registry: Registry, **limits) -> tuple[TestClient, ServedModel]:
    served = ServedModel(registry, "production")
    served.refresh()
    return TestClient(create_app(served, ServeParams(**limits))), served


def png(path: Path) -> bytes:
    return path.read_bytes()


def test_health_ready_and_model(registry: Registry) -> None:
    api, _ = client(registry)
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"ready": True, "version": 1, "problem": None}
    for path in ("/healthz", "/readyz", "/model", "/metrics"):  # HEAD (checks, curl -I)
        head = api.head(path)
        assert (head.status_code, head.content) == (200, b""), path
        assert head.headers["content-type"] == api.get(path).headers["content-type"], path
        assert api.delete(path).headers["allow"] == "GET, HEAD", path
    assert api.get("/predict").headers["allow"] == "POST"
    status = api.get("/model").json()
    card = registry.card("production")
    assert status["following"] == "production" and status["problem"] is None
    assert status["model"] == {
        "name": MODEL,
        "alias": "production",
        "version": 1,
        "accuracy": card["metrics"]["accuracy"],
        "created": card["created"],
        "fingerprint": card["fingerprint"]["sha256"],
        "onnx_sha256": card["files"]["model.onnx"],
    }
    assert "/predict" in api.get("/openapi.json").json()["paths"]


def same_answers(got: list[dict], want: list) -> None:
    """The server's predictions carry the CLI's digits and top probabilities (to 1e-6)."""
    assert len(got) == len(want)
    for answer, reference in zip(got, want, strict=True):
        assert answer["digit"] == reference.digit
        ranked = [(t["digit"], t["probability"]) for t in answer["top"]]
        top = reference.top[: len(ranked)]
        assert [d for d, _ in ranked] == [d for d, _ in top]
        assert np.allclose([p for _, p in ranked], [p for _, p in top], atol=1e-6)


def test_predict_answers_like_the_cli_in_every_form(registry: Registry, tmp_path: Path) -> None:
    api, _ = client(registry)
    files = [draw_digit(tmp_path / f"{d}.png", d) for d in (1, 7)]
    expected = predict_files(registry.fetch("production", "model.onnx"), files, top=3).predictions
    multipart = api.post("/predict", files=[("files", (f.name, png(f))) for f in files])
    assert multipart.status_code == 200
    body = multipart.json()
    assert body["model"] == {"name": MODEL, "version": 1}
    same_answers(body["predictions"], expected)
    assert [p["name"] for p in body["predictions"]] == [Path(p.file).name for p in expected]
    raw = api.post("/predict?top=1", content=png(files[1]), headers={"content-type": "image/png"})
    assert len(raw.json()["predictions"][0]["top"]) == 1
    same_answers(raw.json()["predictions"], expected[1:])
    arrays = [preprocess_file(f).tolist() for f in files]
    batch = api.post("/predict?top=3", json={"images": arrays}).json()
    same_answers(batch["predictions"], expected)
    assert [p["name"] for p in batch["predictions"]] == ["image 0", "image 1"]


def test_bad_requests_are_4xx_json_naming_the_problem(registry: Registry, tmp_path: Path) -> None:
    api, _ = client(registry, max_upload_bytes=200_000, max_batch=3, max_pixels=35_000)
    digit = png(draw_digit(tmp_path / "3.png", 3))
    big = io.BytesIO()
    Image.new("L", (200, 200), 255).save(big, format="PNG")  # 40,000 pixels, a small file
    half = io.BytesIO()
    Image.new("L", (150, 150), 255).save(half, format="PNG")  # 22,500: two are over 35,000
    cases = [
        (dict(content=b"hi", headers={"content-type": "text/plain"}), 415, "unsupported content"),
        (dict(files=[("files", ("x.png", b"not an image"))]), 422, "x.png: not a recognised"),
        (dict(files=[("files", ("t.png", digit[:200]))]), 422, "t.png: cannot read or decode"),
        (
            dict(files=[("files", ("big.png", big.getvalue()))]),
            422,
            "big.png: 200x200 is 40,000 pixels, more than the limit of 35,000 (serve.max_pixels)",
        ),
        (  # a header past twice Pillow's own limit: the server's limit named, not Pillow's
            dict(files=[("files", ("huge.png", png_header_only(100_000, 100_000)))]),
            422,
            "huge.png: 10,000,000,000 pixels, more than the limit of 35,000 (serve.max_pixels)",
        ),
        (
            dict(files=[("files", (n, png_header_only(100_000, 100_000))) for n in "ab"]),
            422,
            "a: the request's images have 10,000,000,000+ pixels together, more than serve.max",
        ),
        (
            dict(files=[("files", (f"h{i}.png", half.getvalue())) for i in range(2)]),
            422,
            "h1.png: the request's images have 45,000+ pixels together, more than serve.max_p",
        ),
        (dict(files=[("files", (f"{i}.png", digit)) for i in range(4)]), 422, "over serve.max_b"),
        (  # Starlette stops counting at serve.max_batch + 1 parts
            dict(files=[("files", (f"{i}.png", digit)) for i in range(5)]),
            422,
            "more than 4 files; a request takes at most serve.max_batch (3) images",
        ),
        (
            dict(data={f"f{i}": "x" for i in range(5)}, files=[("files", ("0.png", digit))]),
            422,
            "more than 4 form fields; a request takes at most serve.max_batch (3) images",
        ),
        (dict(files=[("other", ("a.png", digit))]), 422, "no image: send multipart field"),
        (  # curl -F files=<digit.png sends the file's contents as a text field
            dict(data={"files": "digit.png"}, files=[("other", ("a.png", digit))]),
            422,
            "'files' came as text, not as a file",
        ),
        (dict(content=b"{", headers={"content-type": "application/json"}), 422, "not valid JSON"),
        (dict(json={"images": [[[0.5] * 28] * 27]}), 422, "must be 28x28 each"),
        (dict(json={"images": [[[2.0] * 28] * 28]}), 422, "image 0: values must be finite"),
        (dict(json={"images": [[["a"] * 28] * 28]}), 422, "arrays of numbers"),
        (dict(json={"images": [[["0.5"] * 28] * 28]}), 422, "arrays of numbers"),
        (dict(json={"images": [[[True] * 28] * 28]}), 422, "arrays of numbers"),
        (dict(json={"images": [[[10**400] + [0] * 27] * 28]}), 422, "arrays of numbers"),
        (dict(json={"images": [[[0.5] * 28] * 27, [[0.5] * 28] * 28]}), 422, "arrays of numbers"),
        (dict(json={"pictures": []}), 422, 'expected a JSON object {"images"'),
        (dict(json={"pictures": []}), 422, "(no 'images' key)"),
        (dict(json={"images": 5}), 422, "('images' is a number)"),
        (dict(json={"images": []}), 422, "('images' is empty)"),
        (dict(json=[[0.5] * 28] * 28), 422, "(got an array)"),
        (dict(content=b"\0" * 300_000, headers={"content-type": "image/png"}), 413, "over serve"),
    ]
    for request, status, message in cases:
        response = api.post("/predict", **request)
        assert response.status_code == status, (request, response.text)
        assert message in response.json()["error"], response.json()
    too_many = api.post("/predict?top=11", content=digit)  # FastAPI's check, our JSON shape
    assert too_many.status_code == 422
    assert too_many.json() == {"error": "query top: Input should be less than or equal to 10"}
    torn = api.post(
        "/predict", content=b"--x\r\n", headers={"content-type": "multipart/form-data"}
    )  # Starlette's 400 for a malformed form
    assert torn.status_code == 422 and "malformed multipart body: " in torn.json()["error"]
    whole = (
        b'--B\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + digit + b"\r\n--B--\r\n"
    )
    form = {"content-type": "multipart/form-data; boundary=B"}
    assert api.post("/predict", content=whole, headers=form).status_code == 200
    for cut in (len(whole) - 4, len(whole) - 30):  # cut short: its part would vanish silently
        short = api.post("/predict", content=whole[:cut], headers=form)
        assert short.status_code == 422, short.text
        assert short.json()["error"] == (
            "malformed multipart body: it ends before its closing boundary"
        )
    # a second part cut short, "--B--" right after its bytes (no CRLF before it, so no
    # delimiter): the parser drops that part, so the request is refused, not answered for one
    second = whole[: whole.index(b"\r\n\r\n") + 4].replace(b"a.png", b"b.png") + digit[:50]
    torn = whole[: -len(b"--B--\r\n")] + second + b"--B--"
    short = api.post("/predict", content=torn, headers=form)
    assert short.status_code == 422, short.text
    assert "ends before its closing boundary" in short.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(40):
            yield b"\0" * 10_000

    streamed = api.post("/predict", content=chunks(), headers={"content-type": "image/png"})
    assert streamed.status_code == 413 and "max_upload_bytes" in streamed.json()["error"]
    # the limit itself is allowed, declared or streamed: read whole, then judged as an image
    raw = {"content-type": "image/png"}
    for body in (b"\0" * 200_000, (b"\0" * 10_000 for _ in range(20))):
        exact = api.post("/predict", content=body, headers=raw)
        assert exact.status_code == 422 and "not a recognised image" in exact.text, exact.text
    assert api.post("/predict", content=b"\0" * 200_001, headers=raw).status_code == 413


def test_a_trailing_slash_is_a_json_404_not_a_redirect(registry: Registry) -> None:
    """FastAPI's default 307 to the path without the slash had no JSON body, was not in the
    OpenAPI document, took its Location from the client's Host header, and had clients that
    follow it send the upload twice."""
    api, _ = client(registry)
    for method, path in (("POST", "/predict/"), ("GET", "/model/"), ("GET", "/healthz/")):
        answer = api.request(
            method, path, headers={"Host": "elsewhere.example"}, follow_redirects=False
        )
        assert answer.status_code == 404, (path, answer.headers)
        assert "location" not in answer.headers
        assert answer.json() == {"error": "Not Found"}


def test_random_bodies_never_cause_a_server_error(registry: Registry) -> None:
    api, _ = client(registry)
    rng = np.random.default_rng(0)
    kinds = ["image/png", "image/jpeg", "application/json", "multipart/form-data", ""]
    for i in range(60):
        body = rng.bytes(int(rng.integers(0, 3000)))
        response = api.post("/predict", content=body, headers={"content-type": kinds[i % 5]})
        assert 400 <= response.status_code < 500, response.text
        assert set(response.json()) == {"error"}, response.text


def test_the_server_follows_the_alias_and_refuses_a_damaged_version(registry: Registry) -> None:
    api, served = client(registry)
    assert api.get("/readyz").json()["version"] == 1
    registry.promote(2, "production")
    assert served.refresh() is True
    answer = api.post("/predict", json={"images": [[[0.0] * 28] * 28]}).json()
    assert answer["model"]["version"] == 2
    registry.rollback()
    assert served.refresh() is True and served.current.version == 1
    # A tampered version promoted behind the registry's back: refused, v1 keeps serving.
    onnx = stored(registry, 2, "model.onnx")
    writable(onnx).write_bytes(onnx.read_bytes() + b"\0")
    aliases = json.loads((model_dir(registry) / "aliases.json").read_text())
    aliases["aliases"]["production"] = 2
    (model_dir(registry) / "aliases.json").write_text(json.dumps(aliases))
    assert served.refresh() is False
    status = api.get("/model").json()
    assert status["model"]["version"] == 1 and "model.onnx was modified" in (status["problem"])
    assert api.post("/predict", json={"images": [[[0.0] * 28] * 28]}).json()["model"] == {
        "name": MODEL,
        "version": 1,
    }


def test_a_refused_version_is_tried_again_after_a_growing_wait(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not downloaded and hashed on every poll: after 2 s, 4 s, 8 s ... (at most 300 s)."""
    now, loads = [1000.0], []
    monkeypatch.setattr(served_model, "clock", lambda: now[0])
    real = served_model.load_version
    monkeypatch.setattr(served_model, "load_version", lambda *a: loads.append(now[0]) or real(*a))
    api, served = client(registry)
    onnx = stored(registry, 2, "model.onnx")
    writable(onnx).write_bytes(onnx.read_bytes() + b"\0")
    registry_aliases = model_dir(registry) / "aliases.json"
    aliases = json.loads(registry_aliases.read_text())
    registry_aliases.write_text(json.dumps(aliases | {"aliases": {"production": 2}}))
    loads.clear()
    for _ in range(60):  # a poll every second for a minute
        assert served.refresh() is False and served.current.version == 1
        now[0] += 1.0
    assert [t - 1000 for t in loads] == [0, 2, 6, 14, 30]
    assert "model.onnx was modified" in api.get("/model").json()["problem"]
    events: list[str] = []
    served.listeners.append(lambda event, _version: events.append(event))
    real_version_of = registry.version_of
    monkeypatch.setattr(registry, "version_of", lambda ref: 1 / 0)  # the store blinks
    assert served.refresh() is False and events == ["unresolved"]
    monkeypatch.setattr(registry, "version_of", real_version_of)  # and is back, in the wait
    assert served.refresh() is False and len(loads) == 5
    assert "model.onnx was modified" in api.get("/model").json()["problem"]  # not the blink's
    now[0] = loads[-1] + 32.0  # the next try: the same refusal, not counted again
    assert served.refresh() is False and len(loads) == 6 and events == ["unresolved"]
    registry_aliases.write_text(json.dumps(aliases))  # production back on v1 ...
    assert served.refresh() is False and api.get("/model").json()["problem"] is None
    registry_aliases.write_text(json.dumps(aliases | {"aliases": {"production": 2}}))
    assert served.refresh() is False and len(loads) == 7  # ... and on v2 again: tried at once
    starting = ServedModel(registry, "production")  # nothing loaded yet: tried on every poll
    assert [starting.refresh() for _ in range(3)] == [False] * 3 and len(loads) == 10
    assert starting.current is None


def test_probes_name_no_path_of_the_registry(registry: Registry, caplog) -> None:
    """/readyz and /model answer anyone who reaches the port: a refusal's message says
    <registry> where the store's folder is; the server's log keeps the folder."""
    api, served = client(registry)
    (model_dir(registry) / "aliases.json").write_text("{not json")
    with caplog.at_level("ERROR", logger="mnist_pipeline.serve"):
        assert served.refresh() is False
    folder = str(registry.storage.location)
    problem = api.get("/model").json()["problem"]
    assert problem.startswith("<registry>/") and "aliases.json" in problem, problem
    assert folder not in problem and folder not in api.get("/readyz").text
    assert folder in caplog.text


@pytest.mark.parametrize(
    "message",
    [
        "registry s3://acme-models/prod at http://10.0.0.5:9000: bucket 'acme-models' is gone",
        'Could not connect to the endpoint URL: "http://10.0.0.5:9000/acme-models/prod/a.json"',
        'Connect timeout on endpoint URL: "https://acme-models.s3.eu-west-1.amazonaws.com/p/k"',
    ],
)
def test_an_s3_problem_names_no_bucket_endpoint_or_url(message: str) -> None:
    """What botocore and the S3 backend say of a store that fails: the endpoint, the bucket
    (in an s3:// URL, a path-style or a virtual-hosted request URL, or quoted) all hidden."""
    from types import SimpleNamespace

    from mnist_pipeline.serving.served_model import without_locations

    storage = SimpleNamespace(
        location="s3://acme-models/prod", endpoint="http://10.0.0.5:9000", bucket="acme-models"
    )
    public = without_locations(message, SimpleNamespace(storage=storage))
    assert "acme-models" not in public and "10.0.0.5" not in public and "://" not in public
    assert "<registry>" in public and public.split()[0] == message.split()[0]  # the rest kept


def test_not_ready_until_a_version_exists(tmp_path: Path, _models: tuple[Path, Path]) -> None:
    registry = Registry(tmp_path / "registry", MODEL)
    api, served = client(registry)
    ready = api.get("/readyz")
    assert ready.status_code == 503 and "unknown alias 'production'" in ready.json()["problem"]
    refused = api.post("/predict", json={"images": [[[0.0] * 28] * 28]})
    assert refused.status_code == 503 and "no model loaded yet" in refused.json()["error"]
    register_candidate(registry, candidate_in(_models[0]), PARAMS)
    assert served.refresh() is True and api.get("/readyz").status_code == 200


def test_the_serve_command_takes_its_options_from_params(tmp_path: Path, monkeypatch) -> None:
    from mnist_pipeline.serving import server

    called = {}

    class Server:  # uvicorn's, serving on the socket run() bound: records instead of serving
        def __init__(self, config) -> None:
            called["app"] = config.app

        def run(self, sockets) -> None:
            (listening,) = sockets
            called["address"] = listening.getsockname()

    monkeypatch.setattr(server.uvicorn, "Server", Server)
    follows = []
    monkeypatch.setattr(ServedModel, "follow", lambda self, every: follows.append(every))
    layout = Layout(tmp_path)
    taken = server.tcp_socket("127.0.0.2", 0)
    port = taken.getsockname()[1]
    taken.close()  # a port free a moment ago
    (tmp_path / "params.yaml").write_text(f"serve:\n  port: {port}\n  reload_interval_s: 60\n")
    server.run(tmp_path / "params.yaml", layout.root, {"serve.host": "127.0.0.2"})
    assert called["address"] == ("127.0.0.2", port)
    assert follows == [60]  # the alias checked every reload_interval_s
    assert TestClient(called["app"]).get("/readyz").status_code == 503  # empty registry


def test_worker_connections_get_tcp_nodelay() -> None:
    """With several workers the listening socket is ours: its connections must not wait on
    Nagle's algorithm (uvicorn's own socket, protocol 0, leaves them waiting ~40 ms)."""
    import asyncio
    import socket

    from mnist_pipeline.serving.server import tcp_socket

    async def nodelay_of(listener: socket.socket) -> int:
        seen: list[int] = []

        async def handle(reader, writer) -> None:
            sock = writer.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=listener)
        port = listener.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        while not seen:
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        return seen[0]

    assert asyncio.run(nodelay_of(tcp_socket("127.0.0.1", 0))) == 1
    plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # as uvicorn binds it
    plain.bind(("127.0.0.1", 0))
    assert asyncio.run(nodelay_of(plain)) == 0


def test_a_host_of_two_addresses_is_listened_on_at_both(monkeypatch) -> None:
    """`serve.host: localhost` where it names 127.0.0.1 and ::1: a TCP socket bound on each
    (as asyncio would listen), on the one port; one of them taken fails the whole, naming it."""
    import socket

    from mnist_pipeline.serving import server

    free = socket.socket(socket.AF_INET6)
    free.bind(("::1", 0))
    port = free.getsockname()[1]
    free.close()
    both = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),  # listed twice
    ]
    monkeypatch.setattr(server.socket, "getaddrinfo", lambda *a, **k: both)
    sockets = server.listening_sockets("localhost", port)
    try:
        assert [s.getsockname()[:2] for s in sockets] == [("127.0.0.1", port), ("::1", port)]
        assert {s.proto for s in sockets} == {socket.IPPROTO_TCP}  # TCP_NODELAY on each
        for sock in sockets:
            sock.listen()
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}: Address already"):
            server.listening_sockets("localhost", port)
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_names_an_address_in_use(tmp_path: Path, workers: str) -> None:
    """One line naming the address, exit 74 (not uvicorn's exit code 3 after the model loaded)."""
    from typer.testing import CliRunner

    from mnist_pipeline.cli.app import app
    from mnist_pipeline.serving.server import tcp_socket

    (tmp_path / "params.yaml").write_text("{}\n")
    taken = tcp_socket("127.0.0.1", 0)
    taken.listen()
    port = taken.getsockname()[1]
    args = ["--root", str(tmp_path), "serve", "--port", str(port), "--workers", workers]
    try:
        done = CliRunner().invoke(app, args)
    finally:
        taken.close()
    assert isinstance(done.exception, OSError)  # main() prints it as one line, exit 74
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in str(done.exception)


@pytest.mark.parametrize("model", ["a b", "Production", "v 2", "../x", "v-1", "0", "v0"])
def test_serve_refuses_a_model_that_no_alias_or_version_could_ever_be(
    tmp_path: Path, model: str
) -> None:
    """Before: the server started and waited, answering 503, for a name no alias can have."""
    from typer.testing import CliRunner

    from mnist_pipeline.cli.app import app

    (tmp_path / "params.yaml").write_text("{}\n")
    done = CliRunner().invoke(app, ["--root", str(tmp_path), "serve", "--model", model])
    assert isinstance(done.exception, ParamsError), done.exception
    assert f"{model!r} is neither a version (3, v3) nor an alias name" in str(done.exception)
    (tmp_path / "params.yaml").write_text(f"serve:\n  shadow: '{model}'\n")
    done = CliRunner().invoke(app, ["--root", str(tmp_path), "serve"])
    assert isinstance(done.exception, ParamsError) and "serve.shadow" in str(done.exception)


TOKEN = "alice-feedback-token-0001"


def feedback_api(
    registry: Registry, project: Path, rate: float = 600, quota: int = 100, **limits
) -> TestClient:
    """The API with /feedback for the credential `alice` (TOKEN) of a tokens file."""
    (project / "tokens").parent.mkdir(parents=True, exist_ok=True)
    (project / "tokens").write_text(f"alice {token_sha256(TOKEN)}\n")
    serve = ServeParams(
        feedback_tokens_file="tokens",
        feedback_rate_per_minute=rate,
        feedback_quota=quota,
        **limits,
    )
    feedback = feedback_of(serve, Layout(project))
    assert feedback is not None
    served = ServedModel(registry, "production")
    served.refresh()
    return TestClient(create_app(served, serve, feedback))


def test_feedback_needs_a_token_and_lands_in_pending_not_the_inbox(
    registry: Registry, tmp_path: Path
) -> None:
    from mnist_pipeline.inbox import pending
    from mnist_pipeline.inbox import store as inbox

    project = tmp_path / "project"
    layout = Layout(project)
    api = feedback_api(registry, project)
    digit = png(draw_digit(tmp_path / "4.png", 4))
    send = dict(files={"file": ("4.png", digit)}, data={"label": "4"})
    for headers, challenge in (
        ({}, 'Bearer realm="feedback"'),
        ({"Authorization": "Bearer wrong-token"}, 'Bearer realm="feedback", error="invalid_token"'),
        ({"Authorization": f"Basic {TOKEN}"}, 'Bearer realm="feedback", error="invalid_token"'),
    ):
        refused = api.post("/feedback", headers=headers, **send)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == challenge
        assert "token" in refused.json()["error"] or "Bearer" in refused.json()["error"]
    assert pending.items(layout.pending) == [] and not layout.pending.exists()

    alice = {"Authorization": f"Bearer {TOKEN}"}
    stored = api.post("/feedback", headers=alice, **send)
    assert stored.status_code == 201, stored.text
    body = stored.json()
    assert body["status"] == "pending" and body["label"] == 4
    assert body["source"] == "token:alice" and body["client"] == "testclient"
    assert body["time"].endswith("Z")
    (item,) = pending.items(layout.pending)
    assert item.sha256 == body["sha256"] and item.path.read_bytes() == digit
    assert item.claims == (pending.Claim(4, "token:alice", body["time"], "testclient"),)
    assert inbox.entries(layout.inbox) == []  # nothing reaches the inbox before review
    again = api.post("/feedback", headers=alice, **send)
    assert again.status_code == 200 and again.json()["status"] == "known"
    other = api.post("/feedback", headers=alice, files=send["files"], data={"label": "9"})
    assert other.status_code == 201  # a second claim: the reviewer sees the conflict
    (item,) = pending.items(layout.pending)
    assert item.labels == [4, 9] and item.conflict
    cases = [
        (dict(files={"file": ("x.png", b"nope")}, data={"label": "1"}), 422, "x.png: not a"),
        (dict(files={"file": ("4.png", digit)}, data={"label": "11"}), 422, "one digit 0-9"),
        (dict(files={"file": ("4.png", digit)}, data={"label": " 4"}), 422, "one digit 0-9"),
        (dict(files={"file": ("4.png", digit)}), 422, "'file' (an image) and 'label'"),
        (dict(files=[("file", ("a.png", digit))] * 2, data={"label": "4"}), 422, "'file' given mo"),
        (dict(files={"file": ("4.png", digit)}, data={"label": ["4", "9"]}), 422, "'label' given"),
        (dict(json={"label": 4}), 415, "multipart/form-data"),
    ]
    for request, status, message in cases:
        response = api.post("/feedback", headers=alice, **request)
        assert response.status_code == status and message in response.json()["error"], response.text
    (still,) = pending.items(layout.pending)  # read again: the refusals added no claim
    assert still.claims == item.claims and still.labels == [4, 9]
    new_claim = dict(files=send["files"], data={"label": "7"})  # one that would be stored
    too_big = feedback_api(registry, project, max_upload_bytes=len(digit) // 2)
    response = too_big.post("/feedback", headers=alice, **new_claim)
    assert response.status_code == 413
    few_pixels = feedback_api(registry, project, max_pixels=100)  # as for /predict
    response = few_pixels.post("/feedback", headers=alice, **new_claim)
    assert response.status_code == 422 and "more than the limit of 100" in response.json()["error"]
    (still,) = pending.items(layout.pending)
    assert still.claims == item.claims


def test_a_refused_feedback_closes_its_upload_at_once(registry: Registry, tmp_path: Path) -> None:
    """An upload over 1 MB is spooled to a temporary file: a refused /feedback closes it before
    answering (it stayed open until the cycle collector ran, one file a request)."""
    import gc

    api = feedback_api(registry, tmp_path / "project")
    alice = {"Authorization": f"Bearer {TOKEN}"}
    big = {"files": {"file": ("big.png", b"\0" * 2_000_000)}, "data": {"label": "4"}}  # no image
    assert api.post("/feedback", headers=alice, **big).status_code == 422  # warm: the portal
    gc.collect()
    gc.disable()
    try:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            assert api.post("/feedback", headers=alice, **big).status_code == 422
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        gc.enable()


def test_feedback_is_rate_limited_and_capped_per_credential(
    registry: Registry, tmp_path: Path
) -> None:
    from mnist_pipeline.inbox import pending

    project = tmp_path / "project"
    alice = {"Authorization": f"Bearer {TOKEN}"}
    digits = [png(draw_digit(tmp_path / f"{d}.png", d)) for d in (1, 2, 3)]
    limited = feedback_api(registry, project, rate=2)
    for d in (0, 1):
        sent = limited.post(
            "/feedback", headers=alice, files={"file": ("d.png", digits[d])}, data={"label": "7"}
        )
        assert sent.status_code == 201, sent.text
    over = limited.post(
        "/feedback", headers=alice, files={"file": ("d.png", digits[2])}, data={"label": "7"}
    )
    assert over.status_code == 429 and 1 <= int(over.headers["retry-after"]) <= 30
    assert "serve.feedback_rate_per_minute" in over.json()["error"]
    assert len(pending.items(Layout(project).pending)) == 2

    capped = feedback_api(registry, project, quota=2)  # alice already has 2 awaiting review
    full = capped.post(
        "/feedback", headers=alice, files={"file": ("d.png", digits[2])}, data={"label": "7"}
    )
    assert full.status_code == 429 and int(full.headers["retry-after"]) > 0
    assert "2 image(s) awaiting review" in full.json()["error"]
    same = capped.post(  # a new claim on an image alice already sent is within the quota
        "/feedback", headers=alice, files={"file": ("d.png", digits[0])}, data={"label": "8"}
    )
    assert same.status_code == 201
    assert len(pending.items(Layout(project).pending)) == 2


def test_server_side_feedback_problems_are_503_without_details(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    from filelock import FileLock

    from mnist_pipeline.inbox import pending
    from mnist_pipeline.inbox import store as inbox

    project = tmp_path / "project"
    layout = Layout(project)
    api = feedback_api(registry, project)
    alice = {"Authorization": f"Bearer {TOKEN}"}
    send = dict(
        files={"file": ("4.png", png(draw_digit(tmp_path / "4.png", 4)))}, data={"label": "4"}
    )

    (project / "tokens").write_text(f"alice {TOKEN}\n")  # the token pasted, not its hash
    refused = api.post("/feedback", headers=alice, **send)
    assert refused.status_code == 503
    assert refused.json() == {"error": "feedback credentials are unavailable"}
    assert "tokens:1: field 2 is not a SHA-256" in caplog.text and TOKEN not in caplog.text
    (project / "tokens").unlink()
    os.mkfifo(project / "tokens")  # opening it would wait for a writer
    piped = api.post("/feedback", headers=alice, **send)
    assert piped.status_code == 503
    assert piped.json() == {"error": "feedback credentials are unavailable"}
    assert "tokens is not a regular file (a device, pipe or socket)" in caplog.text
    (project / "tokens").unlink()
    (project / "tokens").write_text(f"alice {token_sha256(TOKEN)}\n")

    layout.pending.mkdir(parents=True)
    sidecar = layout.pending / f"{'0' * 64}.json"
    sidecar.write_text("{not json")
    broken = api.post("/feedback", headers=alice, **send)
    assert broken.status_code == 503 and str(project) not in broken.text
    assert f"{sidecar}: not a pending-image record" in caplog.text
    sidecar.unlink()
    layout.pending.rmdir()
    layout.pending.write_text("")  # a mount that failed: the server's problem, not the client's
    not_a_folder = api.post("/feedback", headers=alice, **send)
    assert not_a_folder.status_code == 503 and str(project) not in not_a_folder.text
    assert f"the pending area {layout.pending} is not a folder" in caplog.text
    layout.pending.unlink()
    layout.pending.mkdir()

    def full(*_: object) -> None:
        raise OSError(28, "No space left on device", str(layout.pending / "x.json"))

    with monkeypatch.context() as patch:
        patch.setattr(pending, "write_json", full)
        no_space = api.post("/feedback", headers=alice, **send)
    assert no_space.status_code == 503 and str(project) not in no_space.text
    assert "No space left on device" in caplog.text
    assert list(layout.pending.iterdir()) == []  # no image without its sidecar

    with inbox.lock(layout.inbox):  # a review or an ingest holds it
        monkeypatch.setattr(
            inbox,
            "lock",
            lambda folder: FileLock(tmp_path / "project" / "data" / ".extra.lock", timeout=0),
        )
        busy = api.post("/feedback", headers=alice, **send)
    assert busy.status_code == 503 and int(busy.headers["retry-after"]) > 0
    assert "busy" in busy.json()["error"] and pending.items(layout.pending) == []


def send_four(api: TestClient, digit: bytes) -> int:
    """POST /feedback of `digit` labelled 4 with alice's token; the status code."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return api.post(
        "/feedback", headers=headers, files={"file": ("4.png", digit)}, data={"label": "4"}
    ).status_code


def test_feedback_waiting_for_the_inbox_lock_does_not_stall_predict(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnist_pipeline.inbox import pending
    from mnist_pipeline.inbox import store as inbox

    project = tmp_path / "project"
    layout = Layout(project)
    digit = png(draw_digit(tmp_path / "4.png", 4))
    real, waiting, ended = inbox.lock, threading.Event(), threading.Event()

    class Watched:  # the inbox's lock, telling when /feedback starts and stops waiting for it
        def __init__(self, folder: Path) -> None:
            self.inner = real(folder)

        def __enter__(self) -> object:
            waiting.set()
            try:
                return self.inner.__enter__()
            finally:
                ended.set()

        def __exit__(self, *exc: object) -> None:
            self.inner.__exit__(*exc)

    answers: list[int] = []
    with TestClient(feedback_api(registry, project).app) as api:  # one event loop for both
        with real(layout.inbox):  # a review or an ingest holds it
            monkeypatch.setattr(inbox, "lock", Watched)
            sender = threading.Thread(target=lambda: answers.append(send_four(api, digit)))
            sender.start()
            assert waiting.wait(timeout=60)
            predicted = api.post("/predict", files=[("files", ("4.png", digit))])
            still_waiting = not ended.is_set()
        sender.join()
    assert predicted.status_code == 200 and still_waiting  # /predict did not wait for it
    assert answers == [201] and len(pending.items(layout.pending)) == 1


def test_model_and_metrics_answer_while_feedback_waits_for_the_inbox_lock(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/feedback's waits take threads of their own: with one thread in the pool the sync
    routes answer from, GET /model and /metrics still answer while a submission waits."""
    import anyio.to_thread

    from mnist_pipeline.inbox import store as inbox

    project = tmp_path / "project"
    digit = png(draw_digit(tmp_path / "4.png", 4))
    real, waiting = inbox.lock, threading.Event()

    def watched(folder: Path) -> object:
        waiting.set()
        return real(folder)

    def one_thread() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 1

    answers: dict[str, int] = {}
    with TestClient(feedback_api(registry, project).app) as api:
        api.portal.call(one_thread)
        with real(Layout(project).inbox):  # a review or an ingest holds it
            monkeypatch.setattr(inbox, "lock", watched)
            sender = threading.Thread(target=lambda: answers.update(feedback=send_four(api, digit)))
            sender.start()
            assert waiting.wait(timeout=60)
            reader = threading.Thread(
                target=lambda: answers.update(
                    model=api.get("/model").status_code, metrics=api.get("/metrics").status_code
                ),
                daemon=True,
            )
            reader.start()
            reader.join(timeout=30)
            while_waiting = dict(answers)
        sender.join()
        reader.join(timeout=30)
    assert while_waiting == {"model": 200, "metrics": 200}  # not after the lock was let go
    assert answers["feedback"] == 201


def test_the_probes_answer_while_every_worker_thread_is_taken(registry: Registry) -> None:
    """Slow requests in the worker threads (/feedback waiting on the inbox's lock) must not
    make the liveness and readiness probes time out."""
    import threading

    import anyio.to_thread

    served = ServedModel(registry, "production")
    served.refresh()
    holder = object()
    with TestClient(create_app(served, ServeParams())) as api:

        def take_every_thread() -> None:
            limiter = anyio.to_thread.current_default_thread_limiter()
            limiter.total_tokens = 1
            limiter.acquire_on_behalf_of_nowait(holder)

        def give_back() -> None:
            limiter = anyio.to_thread.current_default_thread_limiter()
            limiter.release_on_behalf_of(holder)
            limiter.total_tokens = 40

        api.portal.call(take_every_thread)
        answers: dict[str, int] = {}

        def probe() -> None:
            for path in ("/healthz", "/readyz"):
                answers[path] = api.get(path).status_code

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        prober.join(timeout=10)
        while_taken = dict(answers)
        api.portal.call(give_back)
        prober.join(timeout=10)
        assert while_taken == {"/healthz": 200, "/readyz": 200}
        assert api.get("/model").status_code == 200  # a worker thread's route, once one is free


def test_the_probes_answer_while_a_large_image_is_decoded(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An upload of many pixels is decoded off the event loop, which meanwhile answers the
    probes; a small one is decoded on the loop itself (a thread's hand-offs cost more). Large
    requests wait for the thread while their uploads fit the budget (a batch of small PNGs is
    many pixels but few bytes); one more is answered 503."""
    from mnist_pipeline.serving import request_body

    preprocess, threads = request_body.preprocess_bytes, {}
    decoding, finish = threading.Event(), threading.Event()

    def held_when_large(data: bytes, name: str, *limit: object) -> np.ndarray:
        threads[name] = threading.get_ident()
        if name == "large.png":
            decoding.set()
            assert finish.wait(timeout=60)
        return preprocess(data, name, *limit)

    monkeypatch.setattr(request_body, "preprocess_bytes", held_when_large)
    monkeypatch.setattr(request_body, "HEAVY_UPLOADS", 1)  # the budget: one upload's limit
    canvas = np.random.default_rng(0).integers(0, 256, (500, 600), dtype=np.uint8)
    canvas[100:400, 280:320] = 0  # 300,000 pixels of noise, a dark stroke in it
    large = io.BytesIO()
    Image.fromarray(canvas).save(large, format="PNG")
    small_digit = draw_digit(tmp_path / "digit.png").read_bytes()  # 200x170: on the loop
    limit = len(large.getvalue()) + 50_000
    served = ServedModel(registry, "production")
    served.refresh()
    answers: dict[str, int] = {}
    with TestClient(create_app(served, ServeParams(max_upload_bytes=limit))) as api:

        def post(name: str, files: list[tuple[str, bytes]]) -> None:
            names = [f"{name}-{i}" if len(files) > 1 else name for i in range(len(files))]
            sent = [("files", (n, data)) for n, (_, data) in zip(names, files, strict=True)]
            answers[name] = api.post("/predict", files=sent).status_code

        uploading = threading.Thread(
            target=post, args=("large.png", [("", large.getvalue())]), daemon=True
        )
        uploading.start()
        assert decoding.wait(timeout=60)
        probes = {path: api.get(path).status_code for path in ("/healthz", "/readyz")}
        post("small.png", [("", small_digit)])  # answered meanwhile, on the loop
        loop = api.portal.call(threading.get_ident)
        batch = [("", small_digit)] * 80  # 80 x 34,000 pixels, a few KB: waits, not refused
        batching = threading.Thread(target=post, args=("batch", batch), daemon=True)
        batching.start()
        offload = api.app.state.offload
        deadline = time.monotonic() + 60
        while api.portal.call(lambda: offload.limiter.statistics().tasks_waiting) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        busy = api.post("/predict", files=[("files", ("one-more.png", large.getvalue()))])
        finish.set()
        for thread in (uploading, batching):
            thread.join(timeout=60)
    assert probes == {"/healthz": 200, "/readyz": 200}
    assert answers == {"small.png": 200, "large.png": 200, "batch": 200}
    assert threads["small.png"] == loop and threads["large.png"] != loop
    assert threads["batch-0"] != loop
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert busy.json()["error"].startswith("busy: requests of large images waiting to be")


def test_a_png_is_sized_from_its_header_as_pillow_sizes_it() -> None:
    from mnist_pipeline.data.decode import header_pixels
    from mnist_pipeline.serving.request_body import png_pixels

    for mode, size in (("L", (123, 45)), ("RGBA", (1, 70_000)), ("P", (300, 2)), ("I;16", (9, 9))):
        image = io.BytesIO()
        Image.new(mode, size).save(image, format="PNG")
        data = image.getvalue()
        assert png_pixels(data) == header_pixels(data, "x") == size[0] * size[1]
    jpeg = io.BytesIO()
    Image.new("L", (20, 20)).save(jpeg, format="JPEG")
    assert png_pixels(jpeg.getvalue()) is None and png_pixels(b"\x89PNG\r\n") is None


def test_without_credentials_there_is_no_feedback_route(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_TOKENS, raising=False)
    assert feedback_of(ServeParams(), Layout(tmp_path)) is None
    api = TestClient(create_app(ServedModel(registry, "production"), ServeParams()))
    response = api.post("/feedback", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404
    assert "/feedback" not in api.get("/openapi.json").json()["paths"]
    monkeypatch.setenv(ENV_TOKENS, f"kiosk:{TOKEN}")
    feedback = feedback_of(ServeParams(), Layout(tmp_path))
    assert feedback is not None and feedback.pending == tmp_path / "data" / "pending"


def test_cors_only_for_the_configured_origins(registry: Registry) -> None:
    api, _ = client(registry, cors_origins=["http://127.0.0.1:5500"])
    allowed = api.options(
        "/predict",
        headers={"Origin": "http://127.0.0.1:5500", "Access-Control-Request-Method": "POST"},
    )
    assert allowed.headers["access-control-allow-origin"] == "http://127.0.0.1:5500"
    with_token = api.options(  # the web page's /feedback sends a bearer token
        "/feedback",
        headers={
            "Origin": "http://127.0.0.1:5500",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert with_token.status_code == 200
    assert "authorization" in with_token.headers["access-control-allow-headers"].lower()
    other = api.get("/healthz", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    refusals = (  # in the server's own error shape, as every other refusal
        ({"Origin": "http://evil.example"}, "Disallowed CORS origin"),
        (
            {"Origin": "http://127.0.0.1:5500", "Access-Control-Request-Headers": "x-secret"},
            "Disallowed CORS headers",
        ),
    )
    for headers, said in refusals:
        refused = api.options(
            "/predict", headers={**headers, "Access-Control-Request-Method": "POST"}
        )
        assert refused.status_code == 400, refused.text
        assert refused.json() == {"error": f"CORS preflight refused: {said} (serve.cors_origins)"}
    exposed = api.get("/healthz", headers={"Origin": "http://127.0.0.1:5500"}).headers
    readable = {h.strip().lower() for h in exposed["access-control-expose-headers"].split(",")}
    assert {"retry-after", "www-authenticate", "etag", "x-model-version"} <= readable


def test_the_threads_that_watch_for_an_app_end_when_it_shuts_down(registry: Registry) -> None:
    """The alias poll, the shadow and the drift monitor end with the server (uvicorn runs the
    app's lifespan at shutdown), instead of waking for as long as the process lives."""
    before = set(threading.enumerate())
    served = ServedModel(registry, "production")
    served.refresh()
    served.follow(3600)
    challenger = Challenger(registry, ServeParams(shadow="staging"), seed=7)
    challenger.start(3600, follow_events=False)
    with TestClient(create_app(served, ServeParams(shadow="staging"), None, challenger)) as api:
        assert api.get("/readyz").status_code == 200
        started = {t for t in threading.enumerate() if t not in before}
        assert {t.name for t in started} >= {"follow-alias", "shadow", "drift-monitor"}
    for thread in started:
        thread.join(5)
    assert [t.name for t in started if t.is_alive()] == []


def test_the_served_bytes_are_checked_against_the_card_the_server_keeps(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The served version's headers and /model come from the card it read once; its ONNX bytes
    are checked against that card, not against another read of it."""
    from mnist_pipeline.core.errors import RegistryError
    from mnist_pipeline.serving.served_model import load_version

    other, blob = registry.read_file(2, "model.onnx"), registry.card(1)["files"]["model.onnx"]
    read, asked = registry.storage.read, []
    with monkeypatch.context() as patch:  # every key the load asks the store for
        patch.setattr(registry.storage, "read", lambda key: asked.append(key) or read(key))
        loaded = load_version(registry, "1")
    assert loaded.onnx == registry.read_file(1, "model.onnx")
    assert [key for key in asked if key.endswith("card.json")] == ["mnist-cnn/v1/card.json"]
    monkeypatch.setattr(  # the store hands v2's bytes where v1's blob is asked for
        registry.storage, "read", lambda key: other if key.endswith(blob) else read(key)
    )
    with pytest.raises(RegistryError, match=r"refusing to load mnist-cnn v1: model.onnx was mod"):
        load_version(registry, "1")
