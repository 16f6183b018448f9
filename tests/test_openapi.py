"""The OpenAPI document is the server: schemathesis (every check) against a real `serve`
process, and bodies the parser cannot follow (100,000-deep JSON) answered 4xx, never 500."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registry
from mnist_pipeline.serving.tokens import token_sha256
from tests.conftest import unavailable
from tests.process_helpers import mnist_server
from tests.registry_helpers import MODEL, PARAMS, candidate_in, exported_candidate

pytestmark = pytest.mark.slow
TOKEN = "openapi-fuzzing-token-0001"
CONFIG = Path(__file__).with_name("schemathesis.toml")
DEPTH = 100_000
EXPECTED = [  # the routes this test knows of (others may be added; schemathesis tests all)
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/model", "get"),
    ("/model.onnx", "get"),
    ("/model/card", "get"),
    ("/predict", "post"),
    ("/feedback", "post"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server with /feedback (a token, limits high enough that fuzzing reaches it)."""
    root = tmp_path_factory.mktemp("openapi")
    registry = Registry(root / "registry", MODEL)
    register_candidate(registry, candidate_in(exported_candidate(root / "m", 1)), PARAMS)
    (root / "tokens").write_text(f"fuzz {token_sha256(TOKEN)}\n")
    serve = {
        "feedback_tokens_file": "tokens",
        "feedback_rate_per_minute": 60_000,
        "feedback_quota": 100_000,
    }
    with mnist_server(root, root / "serve.log", **serve) as url:
        yield url


def test_deeply_nested_json_is_a_4xx_naming_the_problem(server: str) -> None:
    bodies = {
        "arrays": "[" * DEPTH + "]" * DEPTH,
        "objects": '{"a":' * DEPTH + "0" + "}" * DEPTH,
        "images": '{"images": ' + "[" * DEPTH + "0.5" + "]" * DEPTH + "}",
    }
    json_body = {"content-type": "application/json"}
    for kind, body in bodies.items():
        answer = httpx.post(f"{server}/predict", content=body, headers=json_body, timeout=30)
        assert answer.status_code == 422, (kind, answer.status_code, answer.text[:200])
        assert answer.json() == {"error": "the JSON body is nested too deeply to parse"}
    feedback = httpx.post(
        f"{server}/feedback",
        content=bodies["arrays"],
        headers=json_body | {"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert feedback.status_code == 415 and "multipart/form-data" in feedback.json()["error"]


def test_the_document_names_every_body_and_answer(server: str) -> None:
    spec = httpx.get(f"{server}/openapi.json", timeout=30).json()
    statuses = {
        (path, method): sorted(operation["responses"])
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }
    assert set(EXPECTED) <= set(statuses), sorted(statuses)
    assert {key: statuses[key] for key in EXPECTED} == {
        ("/healthz", "get"): ["200", "413"],
        ("/readyz", "get"): ["200", "413", "503"],
        ("/model", "get"): ["200", "413"],
        ("/model.onnx", "get"): ["200", "304", "413", "503"],
        ("/model/card", "get"): ["200", "304", "413", "503"],
        ("/predict", "post"): ["200", "413", "415", "422", "503"],
        ("/feedback", "post"): ["200", "201", "401", "413", "415", "422", "429", "503"],
    }
    assert all("413" in answers for answers in statuses.values())  # BodyLimit: every route
    host, port = server.removeprefix("http://").rsplit(":", 1)
    for path in ("/healthz", "/model"):  # a declared length over the limit: refused unread
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n".encode()
            )
            answer = b""
            while b'"}' not in answer and (chunk := sock.recv(65536)):  # headers, then body
                answer += chunk
        answer = answer.decode(errors="replace")
        assert answer.startswith("HTTP/1.1 413 ") and "max_upload_bytes" in answer, answer
    predict = spec["paths"]["/predict"]["post"]["requestBody"]
    assert predict["required"] is True
    assert set(predict["content"]) == {
        "multipart/form-data",
        "image/*",
        "application/octet-stream",
        "application/json",
    }
    form = predict["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["files"] and form["properties"]["files"]["minItems"] == 1
    # refused, as documented
    empty = httpx.post(f"{server}/predict", files={"other": ("x", b"")}, timeout=30)
    assert empty.status_code == 422 and "no image" in empty.json()["error"]
    feedback = spec["paths"]["/feedback"]["post"]
    assert feedback["security"] == [{"HTTPBearer": []}]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    body = feedback["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["file", "label"]
    assert feedback["responses"]["401"]["headers"]["WWW-Authenticate"]
    assert feedback["responses"]["429"]["headers"]["Retry-After"]
    assert feedback["responses"]["503"]["headers"]["Retry-After"]  # busy: a review holds it
    for answer in ("413", "415", "422", "429", "503"):
        schema = feedback["responses"][answer]["content"]["application/json"]["schema"]
        assert schema["required"] == ["error"]


def test_schemathesis_finds_no_difference_between_document_and_server(
    server: str, tmp_path: Path
) -> None:
    """Every check of schemathesis (status codes, content types, headers, response schemas,
    acceptance of valid and refusal of invalid data, auth), a bounded number of examples."""
    cli = Path(sys.executable).parent / "schemathesis"
    if not cli.exists():
        unavailable("schemathesis is not installed: pip install -e '.[dev]'")
    operations = len(
        [
            op
            for item in httpx.get(f"{server}/openapi.json", timeout=30).json()["paths"].values()
            for op in item
        ]
    )
    args = [cli, "--config-file", CONFIG, "run", f"{server}/openapi.json", "--checks", "all"]
    args += ["--max-examples", "25", "--seed", "1", "--workers", "1", "--request-timeout", "30"]
    args += ["--header", f"Authorization: Bearer {TOKEN}", "--no-color"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-8000:]
    tested = re.search(r"Tested: (\d+)", report)
    assert tested and int(tested.group(1)) == operations >= len(EXPECTED), report[-3000:]
    assert re.search(r"\d+ generated, \d+ passed", report), report[-3000:]
