"""GET /model.onnx and /model/card: the verified bytes served, their headers, 304; in-process,
and from a real server while the alias moves."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from fastapi.testclient import TestClient

from mnist_pipeline.core.service_params import ServeParams
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registry
from mnist_pipeline.registry.card import canonical, unsigned
from mnist_pipeline.registry.signing import Signing, generate
from mnist_pipeline.serving.http_api import create_app
from mnist_pipeline.serving.model_files import matches
from mnist_pipeline.serving.served_model import ServedModel
from tests.process_helpers import mnist_server
from tests.registry_helpers import MODEL, PARAMS, candidate_in, exported_candidate, stored


@pytest.fixture(scope="module")
def _models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("files")
    return exported_candidate(root / "a", 1), exported_candidate(root / "b", 2)


def serve(registry: Registry, **limits) -> tuple[TestClient, ServedModel]:
    served = ServedModel(registry, "production")
    served.refresh()
    return TestClient(create_app(served, ServeParams(**limits))), served


def registered(root: Path, models: tuple[Path, Path], signing: Signing | None = None) -> Registry:
    """v1 production, v2 staging."""
    registry = Registry(root, MODEL, signing)
    for folder in (models[1], models[0]):
        register_candidate(registry, candidate_in(folder), PARAMS)
    return registry


@pytest.fixture
def registry(tmp_path: Path, _models: tuple[Path, Path]) -> Registry:
    return registered(tmp_path / "registry", _models)


def test_the_served_bytes_with_their_hash_version_and_etag(registry: Registry) -> None:
    api, _ = serve(registry)
    onnx = api.get("/model.onnx")
    expected = stored(registry, 1, "model.onnx").read_bytes()
    sha = hashlib.sha256(expected).hexdigest()
    assert onnx.status_code == 200 and onnx.content == expected
    assert onnx.headers["content-type"] == "application/octet-stream"
    assert onnx.headers["etag"] == f'"{sha}"' and onnx.headers["x-model-sha256"] == sha
    assert onnx.headers["x-model-version"] == "1" and onnx.headers["cache-control"] == "no-cache"
    assert "x-model-signature" not in onnx.headers  # unsigned registry
    card = api.get("/model/card")
    card_bytes = stored(registry, 1, "card.json").read_bytes()
    assert card.content == card_bytes and card.headers["content-type"] == "application/json"
    assert card.headers["etag"] == f'"{hashlib.sha256(card_bytes).hexdigest()}"'
    assert card.headers["x-model-sha256"] == sha == card.json()["files"]["model.onnx"]
    for path, response in (("/model.onnx", onnx), ("/model/card", card)):
        etag = response.headers["etag"]
        for held in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            again = api.get(path, headers={"If-None-Match": held})
            assert (again.status_code, again.content) == (304, b""), held
            assert again.headers["etag"] == etag and again.headers["x-model-version"] == "1"
        assert api.get(path, headers={"If-None-Match": '"other"'}).content == response.content
        lines = [("If-None-Match", '"other"'), ("If-None-Match", etag)]  # one list (RFC 9110)
        assert api.get(path, headers=lines).status_code == 304
        head = api.head(path)  # `curl -I`: the same status and headers
        assert head.status_code == 200 and head.headers["etag"] == response.headers["etag"]
        assert api.head(path, headers={"If-None-Match": etag}).status_code == 304
        refused = api.put(path, content=b"x")  # read-only: Allow names both methods served
        assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD"), path
        assert "Method Not Allowed" in refused.json()["error"]


def test_the_bytes_come_from_memory_and_follow_the_alias(registry: Registry) -> None:
    api, served = serve(registry)
    first = api.get("/model.onnx")
    stored(registry, 1, "model.onnx").unlink()  # not read again per request
    assert api.get("/model.onnx").content == first.content
    registry.promote(2, "production")
    assert served.refresh() is True
    moved = api.get("/model.onnx", headers={"If-None-Match": first.headers["etag"]})
    assert moved.status_code == 200 and moved.headers["x-model-version"] == "2"
    assert moved.content == stored(registry, 2, "model.onnx").read_bytes()
    assert api.get("/model/card").json()["version"] == 2


def test_a_signed_version_carries_its_signature(tmp_path: Path, _models: tuple[Path, Path]) -> None:
    key = tmp_path / "keys" / "mnist"
    public, key_id = generate(key)
    registry = registered(tmp_path / "registry", _models, Signing.load(key, [public], True))
    api, _ = serve(registry)
    onnx, card = api.get("/model.onnx"), api.get("/model/card")
    for response in (onnx, card):
        assert response.headers["x-model-signature-key"] == key_id
    # What a client does: the signature covers the card, whose file table names the ONNX bytes.
    document = json.loads(card.content)
    signature = base64.b64decode(onnx.headers["x-model-signature"])
    load_pem_public_key(public.read_bytes()).verify(signature, canonical(unsigned(document)))
    assert document["files"]["model.onnx"] == hashlib.sha256(onnx.content).hexdigest()


@pytest.mark.parametrize(
    "signature", ["not-a-signature", {"key_id": "k"}, {"key_id": 7, "ed25519": "AA=="}, []]
)
def test_a_malformed_signature_refuses_the_version_instead_of_failing_requests(
    registry: Registry, signature: object
) -> None:
    """The signature lies outside the card's seal: on a host that trusts no key nothing else
    reads it, and a malformed one answered GET /model.onnx and /model/card with 500."""
    from tests.registry_helpers import writable

    path = stored(registry, 1, "card.json")
    card = json.loads(path.read_text())
    writable(path).write_text(json.dumps(card | {"signature": signature}))
    api, served = serve(registry)
    assert served.current is None and "signature" in served.problem, served.problem
    for route in ("/model.onnx", "/model/card", "/readyz"):
        assert api.get(route).status_code == 503


def test_nothing_loaded_is_503_json_and_cors_exposes_the_headers(
    tmp_path: Path, registry: Registry
) -> None:
    empty, _ = serve(Registry(tmp_path / "empty", MODEL))
    for path in ("/model.onnx", "/model/card"):
        refused = empty.get(path)
        assert refused.status_code == 503 and "no model loaded yet" in refused.json()["error"]
    origin = "http://127.0.0.1:8000"
    api, _ = serve(registry, cors_origins=[origin])
    answer = api.get("/model.onnx", headers={"Origin": origin})
    exposed = answer.headers["access-control-expose-headers"].lower().replace(" ", "").split(",")
    sent = {"etag", "x-model-version", "x-model-sha256", "x-model-signature"}
    assert sent | {"x-model-signature-key"} <= set(exposed)  # every header a client may check


def test_if_none_match_parsing() -> None:
    assert matches('"a"', '"a"') and matches('W/"a"', '"a"') and matches(' "b" , "a"', '"a"')
    assert not matches(None, '"a"') and not matches('"ab"', '"a"') and not matches("", '"a"')


@pytest.mark.slow
def test_a_real_server_sends_whole_versions_while_the_alias_moves(registry: Registry) -> None:
    """Clients download /model.onnx from a real `serve` while production is promoted and rolled
    back: each body is one version's bytes, matching its own headers, and both versions come."""
    project = registry.root.parent
    sha = {v: registry.card(v)["files"]["model.onnx"] for v in (1, 2)}
    answers: list[tuple[str, str, str, str]] = []  # (version, X-Model-SHA256, ETag, body hash)
    stop = threading.Event()

    def client(url: str) -> None:
        with httpx.Client(timeout=30) as session:
            while not stop.is_set() and len(answers) < 100_000:  # bounds memory
                got = session.get(f"{url}/model.onnx")
                h = got.headers
                body = hashlib.sha256(got.content).hexdigest()
                answers.append((h["x-model-version"], h["x-model-sha256"], h["etag"], body))

    def seen(version: str, after: int) -> None:
        deadline = time.monotonic() + 60
        while not any(a[0] == version for a in answers[after:]):
            assert time.monotonic() < deadline, f"v{version} was never served"
            time.sleep(0.05)

    with mnist_server(project, project / "serve.log") as url:
        clients = [threading.Thread(target=client, args=(url,)) for _ in range(3)]
        for thread in clients:
            thread.start()
        try:
            seen("1", 0)
            registry.promote(2, "production")
            seen("2", len(answers))
            registry.rollback()
            seen("1", len(answers))
        finally:
            stop.set()
            for thread in clients:
                thread.join()
        head = httpx.head(f"{url}/model.onnx", timeout=30)  # headers only, from the real server
        assert head.status_code == 200 and head.content == b""
        assert head.headers["x-model-sha256"] == sha[1]
        assert int(head.headers["content-length"]) == len(
            stored(registry, 1, "model.onnx").read_bytes()
        )
    assert {a[0] for a in answers} == {"1", "2"}
    for version, header, etag, body in answers:
        assert body == header == sha[int(version)] and etag == f'"{body}"'
