"""Names on S3: a store's `s3://bucket/prefix` URL, the keys the backend may use, the store's
own clock (the Date header of its answers), and its errors, told in one line."""

from __future__ import annotations

from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlparse

from mnist_pipeline.core.bucket_names import RULE, valid_bucket
from mnist_pipeline.core.errors import RegistryError, StoreError
from mnist_pipeline.registry.storage import check_key

PRECONDITION_FAILED = {"PreconditionFailed", "412"}
NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
# What a store answers to a condition it does not implement (e.g. If-Match on DELETE).
UNSUPPORTED = {"NotImplemented", "501"}


def parse_url(url: str, role: str = "registry") -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix` (RegistryError naming what is wrong; `role`: what
    the store holds, for the message)."""
    parsed = urlparse(url)
    if parsed.query or parsed.fragment or url.endswith(("?", "#")):
        raise RegistryError(
            f"{role} location {url!r}: a storage location takes no ?query or #fragment"
        )
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    if not bucket:
        raise RegistryError(f"{role} location {url!r} names no bucket (s3://BUCKET/PREFIX)")
    if not valid_bucket(bucket):
        raise RegistryError(
            f"{role} location {url!r}: {bucket!r} is not a valid bucket name ({RULE})"
        )
    try:
        if "//" in parsed.path:  # 's3://b//x' is not 's3://b/x': a part is empty
            raise RegistryError(parsed.path)
        if prefix:
            check_key(prefix)
    except RegistryError:
        raise RegistryError(
            f"{role} location {url!r}: its prefix's parts may not start with '.' or be empty"
        ) from None
    return bucket, prefix


def server_time(answer: dict[str, Any]) -> float | None:
    """The store's clock: the Date header of an answer (UTC, whatever zone it is written in)."""
    date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if not date:
        return None
    when = parsedate_to_datetime(date)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def checked_key(key: str) -> str:
    """`key` checked as storage.check_key does, allowing one leading dot-name folder (the
    backend's own leases and probes, which no registry key can name)."""
    head, _, rest = key.partition("/")
    if head in (".leases", ".probe") and rest:
        return f"{head}/{check_key(rest)}"
    return check_key(key)


def error_code(exc: Any) -> str:
    """An S3 error's code (its HTTP status when the answer had no body, as for HEAD)."""
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code") or status)


def failure(where: str, bucket: str, action: str, key: str, exc: Exception) -> StoreError:
    """One line naming the store (`where`: its role, location and endpoint) and what went wrong
    in `action` on `key`, from boto3's exception."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        NoCredentialsError,
        ReadTimeoutError,
    )
    from botocore.exceptions import ConnectionError as NoConnection

    if isinstance(exc, NoCredentialsError):
        return StoreError(
            f"{where}: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or AWS_PROFILE)",
            whole_store=True,
        )
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "")
        if code == "NoSuchBucket":
            return StoreError(f"{where}: bucket {bucket!r} does not exist", whole_store=True)
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StoreError(f"{where}: credentials refused ({code}: {message})", True)
        if code in ("AccessDenied", "403"):  # known credentials, not allowed this
            return StoreError(
                f"{where}: access denied: cannot {action} {key!r} ({code}: {message})"
            )
        return StoreError(f"{where}: {action} {key!r} failed ({code}: {message})")
    # no connection, or no answer: every other request would fare the same (a body cut short
    # or failing its checksum is about that one object)
    unanswered = isinstance(exc, (NoConnection, ReadTimeoutError, ConnectionClosedError))
    return StoreError(f"{where}: cannot {action} {key!r}: {exc}", whole_store=unanswered)
