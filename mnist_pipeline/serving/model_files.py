"""GET /model.onnx and GET /model/card: the exact verified bytes being served, for other runtimes.

Both answer from the loaded version `/predict` uses (served_model.Loaded keeps the bytes it
built its session from; the registry is not read again), taken once per request, so an alias
that moves while a response is sent changes nothing in it. Headers:

    ETag: "<SHA-256 of the body>"          strong; If-None-Match with it answers 304
    X-Model-Version: 3
    X-Model-SHA256: <SHA-256 of model.onnx>  the card's files["model.onnx"], on both routes
    X-Model-Signature-Key, X-Model-Signature  the card's Ed25519 signature (key id, base64),
                                             when the version is signed

A client checks that the SHA-256 of the ONNX bytes it got equals X-Model-SHA256; with signing,
that the signature verifies over the card (signing.py) and the card's files["model.onnx"] is
that SHA-256. Nothing loaded: 503 {"error": ...}.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from mnist_pipeline.pipeline.versions import ONNX_FILE
from mnist_pipeline.serving.api_schema import BINARY, NOT_READY, Responses, header
from mnist_pipeline.serving.served_model import Loaded, ServedModel

SIGNATURE, SIGNATURE_KEY = "X-Model-Signature", "X-Model-Signature-Key"
EXPOSED_HEADERS = ["ETag", "X-Model-Version", "X-Model-SHA256", SIGNATURE, SIGNATURE_KEY]
CARD = {"type": "object", "required": ["version", "files"], "additionalProperties": True}
IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "description": "ETags this client holds: 304 if one of them is still the one served",
    "schema": {"type": "string"},
}


def headers_of(loaded: Loaded, name: str, sha256: str, filename: str) -> dict[str, str]:
    """The headers of one of `loaded`'s files whose body has the SHA-256 `sha256`."""
    out = {
        "ETag": f'"{sha256}"',
        "X-Model-Version": str(loaded.version),
        "X-Model-SHA256": loaded.onnx_sha256,
        "Cache-Control": "no-cache",  # the alias may move: revalidate (If-None-Match) each use
        "Content-Disposition": f'attachment; filename="{name}-v{loaded.version}-{filename}"',
    }
    if loaded.signature is not None:
        out[SIGNATURE_KEY] = loaded.signature["key_id"]
        out[SIGNATURE] = loaded.signature["ed25519"]
    return out


def matches(if_none_match: str | None, etag: str) -> bool:
    """True if an If-None-Match header names `etag` (weak comparison, as RFC 9110 says)."""
    if if_none_match is None:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def file_responses(media_type: str, schema: dict[str, Any], what: str) -> Responses:
    """The OpenAPI answers of a model file route."""
    signed_only = {SIGNATURE_KEY, SIGNATURE}
    headers = {
        "ETag": header("the SHA-256 of the body, quoted (strong)"),
        "X-Model-Version": header("the version served", "integer"),
        "X-Model-SHA256": header("the SHA-256 of the served model.onnx"),
        SIGNATURE_KEY: header("the id of the key that signed the card (signed versions only)"),
        SIGNATURE: header("the card's Ed25519 signature, base64 (signed versions only)"),
    }
    for name, value in headers.items():
        value["required"] = name not in signed_only
    return {
        200: {"description": what, "headers": headers, "content": {media_type: {"schema": schema}}},
        304: {"description": "If-None-Match named the ETag served: unchanged", "headers": headers},
        503: NOT_READY,
    }


def mount(app: FastAPI, served: ServedModel) -> None:
    """Add GET (and HEAD) /model.onnx and /model/card to `app`."""

    def send(request: Request, part: str, media_type: str) -> Response:
        loaded = served.current  # read once: this response is all of this version
        if loaded is None:
            message = f"no model loaded yet: {served.problem or 'starting'}"
            return JSONResponse({"error": message}, status_code=503)
        body, sha256 = (
            (loaded.onnx, loaded.onnx_sha256)
            if part == ONNX_FILE
            else (loaded.card_json, loaded.card_sha256)
        )
        filename = part if part == ONNX_FILE else f"{part}.json"  # the download's name
        headers = headers_of(loaded, served.registry.name, sha256, filename)
        held = ", ".join(request.headers.getlist("if-none-match"))  # one list, however sent
        if matches(held or None, headers["ETag"]):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=media_type, headers=headers)

    routes = (
        ("/model.onnx", ONNX_FILE, "application/octet-stream", BINARY, "the ONNX model served"),
        ("/model/card", "card", "application/json", CARD, "the served version's card, as stored"),
    )

    def endpoint(part: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:  # nothing blocks: no thread needed
            return send(request, part, media_type)

        return route

    for path, part, media_type, schema, what in routes:
        app.add_api_route(
            path,
            endpoint(part, media_type),
            methods=["GET"],
            name=part,
            response_class=Response,
            responses=file_responses(media_type, schema, what),
            openapi_extra={"parameters": [IF_NONE_MATCH]},
        )
        # HEAD (`curl -I`): GET's status and headers, no body (uvicorn sends none); implied by
        # GET in HTTP, so left out of the OpenAPI document as usual
        app.add_api_route(
            path, endpoint(part, media_type), methods=["HEAD"], include_in_schema=False
        )
