"""What the OpenAPI document (`/openapi.json`) says about each route's bodies and answers.

The routes read their bodies themselves (several content types on one route, limits from the
serve params), so FastAPI cannot infer these: they are written here, once, and checked against
the running server by tests/test_openapi.py (schemathesis, every check). Every refusal is JSON
{"error": "..."} (`ERROR`).
"""

from __future__ import annotations

from typing import Any

from mnist_pipeline.core.contract import CLASS_LABELS, IMAGE_SIZE, NUM_CLASSES

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "the problem, in one line"}},
}
BINARY = {"type": "string", "format": "binary"}
DIGIT = {"type": "integer", "minimum": 0, "maximum": NUM_CLASSES - 1}
PROBABILITY = {"type": "number", "minimum": 0, "maximum": 1}
Responses = dict[int | str, dict[str, Any]]


def header(description: str, kind: str = "string") -> dict[str, Any]:
    return {"description": description, "schema": {"type": kind}}


RETRY_AFTER = {"Retry-After": header("seconds to wait", "integer")}


def error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A refusal: `description` says when, the body is `ERROR`."""
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ERROR}},
    }
    return answer | ({"headers": headers} if headers else {})


def json_answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


TOO_LARGE = error("the body is over serve.max_upload_bytes")
NOT_READY = error("no verified model is loaded yet (or none could be)")


def predict_body(max_batch: int) -> dict[str, Any]:
    """/predict's three body kinds; an empty form, an empty batch or no body is refused."""
    row = {"type": "array", "minItems": IMAGE_SIZE, "maxItems": IMAGE_SIZE, "items": PROBABILITY}
    image = {"type": "array", "minItems": IMAGE_SIZE, "maxItems": IMAGE_SIZE, "items": row}
    files = {"type": "array", "minItems": 1, "maxItems": max_batch, "items": BINARY}
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {"files": files | {"description": "PNG, JPEG, ... images"}},
                }
            },
            "image/*": {"schema": BINARY | {"description": "one image file"}},
            "application/octet-stream": {"schema": BINARY | {"description": "one image file"}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": max_batch,
                            "items": image,
                            "description": "28x28 digits already preprocessed, floats in [0, 1]",
                        }
                    },
                }
            },
        },
    }


PREDICTION = {
    "type": "object",
    "required": ["name", "digit", "top"],
    "properties": {
        "name": {"type": "string", "description": "the file name, 'body' or 'image <i>'"},
        "digit": DIGIT,
        "top": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["digit", "probability"],
                "properties": {"digit": DIGIT, "probability": PROBABILITY},
            },
        },
    },
}
PREDICT_RESPONSES: Responses = {
    200: json_answer(
        "the digits, in the order the images came, and the version that answered",
        {
            "type": "object",
            "required": ["model", "predictions"],
            "properties": {
                "model": {
                    "type": "object",
                    "required": ["name", "version"],
                    "properties": {"name": {"type": "string"}, "version": {"type": "integer"}},
                },
                "predictions": {"type": "array", "items": PREDICTION},
            },
        },
    ),
    413: TOO_LARGE,
    415: error("not multipart/form-data, image/*, application/octet-stream or application/json"),
    422: error(
        "no image, an image that cannot be decoded or is over serve.max_pixels, more than "
        "serve.max_batch images, a JSON batch that is not 28x28 floats in [0, 1], a malformed "
        "body, or a bad query parameter"
    ),
    503: error(
        "no verified model is loaded yet (or none could be), or, with Retry-After, the uploads "
        "of large images waiting to be decoded fill the server's budget",
        RETRY_AFTER,
    ),
}

READY = {
    "type": "object",
    "required": ["ready", "version", "problem"],
    "properties": {
        "ready": {"type": "boolean"},
        "version": {"type": ["integer", "null"]},
        "problem": {"type": ["string", "null"], "description": "why the alias's target failed"},
    },
}
READYZ_RESPONSES: Responses = {
    200: json_answer("a verified model is loaded", READY),
    503: json_answer("no model is loaded yet", READY),
}

FEEDBACK_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file", "label"],
                "properties": {
                    "file": BINARY | {"description": "one image of a digit"},
                    "label": {"type": "string", "enum": list(CLASS_LABELS)},
                },
            }
        }
    },
}
CLAIM = {
    "type": "object",
    "required": ["status", "sha256", "label", "source", "time", "client"],
    "properties": {
        "status": {"type": "string", "enum": ["pending", "known"]},
        "sha256": {"type": "string"},
        "label": DIGIT,
        "source": {"type": "string"},
        "time": {"type": "string"},
        "client": {"type": ["string", "null"]},
    },
}
FEEDBACK_RESPONSES: Responses = {
    200: json_answer("this credential already claimed this label for this image", CLAIM),
    201: json_answer(
        "a new claim awaits review (in data/pending/, or the shared inbox's queue)", CLAIM
    ),
    401: error(
        "no bearer token, or an unknown, revoked or expired one",
        {"WWW-Authenticate": header('Bearer realm="feedback"')},
    ),
    413: TOO_LARGE,
    415: error("not multipart/form-data"),
    422: error("a missing field, an unreadable or blank image, a label that is not one digit"),
    429: error(
        "over serve.feedback_rate_per_minute, or serve.feedback_quota images await review",
        RETRY_AFTER,
    ),
    503: error(
        "a problem on the server's side (logged there); Retry-After when it is busy",
        {"Retry-After": header("seconds to wait; sent when the inbox is busy", "integer")},
    ),
}
