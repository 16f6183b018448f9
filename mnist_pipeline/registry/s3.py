"""The registry's storage in an S3 bucket (any S3-compatible endpoint), via boto3.

Keys live under `s3://bucket/prefix/`. create-if-absent is a PUT with `If-None-Match: *`;
compare-and-swap is a PUT with `If-Match: <ETag>` (or `If-None-Match: *` for a first
document): the store, not a lock, decides which of two writers wins. Before its first write a
backend checks once that the endpoint honours both conditions (some S3-compatible servers ignore
them, which would turn every race into a silent overwrite) and refuses the bucket if not.
Documents are re-read with `If-None-Match` on the ETag last seen, so a replica polling an alias
that has not moved costs one 304. `exclusive` is a renewed lease object (s3_lease.py): it keeps
identical models from becoming two versions and `models gc` off a registration's blobs; the
commit itself never relies on it.

Endpoint and credentials come from boto3's usual sources: `AWS_ENDPOINT_URL` (or
`AWS_ENDPOINT_URL_S3`), `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, ~/.aws.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

from mnist_pipeline.core.errors import RegistryError, StoreError
from mnist_pipeline.registry.s3_conditions import (
    UNCONDITIONAL_DELETE,
    UnsupportedCondition,
    abandoned_probes,
    check_conditions,
    remove_probe,
)
from mnist_pipeline.registry.s3_names import (
    NOT_FOUND,
    PRECONDITION_FAILED,
    UNSUPPORTED,
    checked_key,
    error_code,
    failure,
    parse_url,
    server_time,
)
from mnist_pipeline.registry.s3_retry import conditional
from mnist_pipeline.registry.storage import Storage, check_key, hidden

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # the optional extra: pip install 'mnist-pipeline[s3]'
    boto3 = None

WRITE_ID = "mnist-pipeline-write"  # user metadata: the id of the PUT that stored an object
PARALLEL = 16  # requests in flight at once in read_many, create_many (the connection pool)
logger = logging.getLogger(__name__)
T, R = TypeVar("T"), TypeVar("R")


class S3Bucket(Storage):
    """Objects under `s3://bucket/prefix/` on the endpoint boto3 is configured for."""

    def __init__(self, url: str, client: Any = None, role: str = "registry") -> None:
        self.role = role  # what the store holds, in messages: "registry", "shared inbox"
        if boto3 is None:
            raise RegistryError(
                f"{role} location {url!r} needs boto3: pip install 'mnist-pipeline[s3]'"
            )
        self.bucket, prefix = parse_url(url, role)
        self.root = f"{prefix}/" if prefix else ""
        self.location = f"s3://{self.bucket}/{prefix}".rstrip("/")
        config = Config(
            connect_timeout=5,
            read_timeout=30,
            retries={"mode": "standard"},
            # CRC checksums only where S3 requires them: not every S3-compatible store takes them
            request_checksum_calculation="when_required",
            max_pool_connections=PARALLEL,
        )
        # a session per backend: boto3's default session is not safe to share across threads
        try:
            self.client = client or boto3.session.Session().client("s3", config=config)
        except (BotoCoreError, ValueError) as exc:  # an unknown AWS_PROFILE, a bad endpoint URL
            raise RegistryError(f"{role} location {url!r}: {exc}") from None
        self.endpoint = self.client.meta.endpoint_url
        self._documents: dict[str, tuple[bytes, str]] = {}  # key -> (bytes, ETag) last read

    # ---- the interface

    def read(self, key: str) -> bytes | None:
        found = self._get(key)
        return None if found is None else found[0]

    def read_many(self, keys: list[str]) -> list[bytes | None]:
        """Up to PARALLEL requests in flight (boto3 clients are thread-safe): listing a
        registry's versions or verifying it costs a few round trips, not one per object."""
        return _at_once(self.read, keys)

    def create_many(self, items: list[tuple[str, bytes]]) -> list[bool]:
        """The creates at once (each conditional on its own: the store decides each)."""
        if items:
            self._check_conditions()
        return _at_once(lambda item: self.create(*item), items)

    def read_document(self, key: str) -> tuple[bytes, str] | None:
        cached = self._documents.get(key)
        found = self._get(key, cached)
        if found is None:
            self._documents.pop(key, None)
        elif found is not cached:
            self._documents[key] = found
        return found

    def last_read(self, key: str) -> tuple[bytes, str] | None:
        return self._documents.get(key)

    def create(self, key: str, data: bytes) -> bool:
        self._check_conditions()
        return self._put(key, data, IfNoneMatch="*")

    def swap(self, key: str, data: bytes, revision: str | None) -> bool:
        self._check_conditions()
        condition = {"IfNoneMatch": "*"} if revision is None else {"IfMatch": revision}
        swapped = self._put(key, data, **condition)
        if swapped:
            self._documents.pop(key, None)  # what was read is not what is there now
        return swapped

    def delete_document(self, key: str, revision: str) -> bool:
        self._check_conditions()  # also finds out whether DELETE honours If-Match (logged)
        return self._delete(key, IfMatch=revision)

    def list(self, prefix: str) -> list[str]:
        return sorted(self.ages(prefix))

    def ages(self, prefix: str) -> dict[str, float]:
        ages = self._listed(prefix)
        # leases and probes live under dot-names, which no key has (as the local folder hides them)
        return {key: age for key, age in ages.items() if not hidden(key)}

    def abandoned(self, prefix: str, older_than_s: float) -> list[str]:
        return abandoned_probes(self, older_than_s)  # whatever the model's prefix: at the root

    def remove_abandoned(self, name: str) -> None:
        remove_probe(self, name)

    def _listed(self, prefix: str) -> dict[str, float]:
        """Every key under `prefix` (dot-names too), with its age by the store's clock."""
        paginator = self.client.get_paginator("list_objects_v2")
        ages: dict[str, float] = {}
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.root + prefix):
                now = server_time(page) or time.time()
                for item in page.get("Contents", ()):
                    age = max(0.0, now - item["LastModified"].timestamp())
                    ages[item["Key"][len(self.root) :]] = age
        except (ClientError, BotoCoreError, TypeError, ValueError) as exc:
            raise self._failure("list", prefix, exc) from None
        return ages

    def renew(self, key: str) -> bool:
        """A copy of the object onto itself (new LastModified, the same bytes and ETag)."""
        source = {"Bucket": self.bucket, "Key": self._key(key)}
        copy = partial(
            self.client.copy_object, **source, CopySource=source, MetadataDirective="REPLACE"
        )
        return self._unless_missing("renew", key, copy) is not None

    def renew_many(self, keys: list[str]) -> list[bytes | None]:
        """The renewals and the reads at once: a read sent beside its renewal sees the same
        bytes (a copy onto itself changes none), and a key whose renewal found it gone is None."""
        calls = [partial(self.renew, key) for key in keys] + [partial(self.read, k) for k in keys]
        done = _at_once(lambda call: call(), calls)
        renewed, read = done[: len(keys)], done[len(keys) :]
        return [data if kept else None for kept, data in zip(renewed, read, strict=True)]

    def delete(self, key: str) -> None:
        self._call(self.client.delete_object, Key=self._key(key))

    @contextmanager
    def exclusive(self, key: str) -> Iterator[Callable[[], None]]:
        from mnist_pipeline.registry.s3_lease import Lease

        self._check_conditions()  # the lease's own writes and its release rely on them
        with Lease(self, f".leases/{check_key(key)}") as lease:
            yield lease.check_held

    @property
    def deletes_conditionally(self) -> bool:
        """Whether a DELETE with If-Match is honoured here (found when conditions are checked)."""
        self._check_conditions()
        return (self.endpoint, self.bucket) not in UNCONDITIONAL_DELETE

    # ---- raw object operations (also used by s3_lease.py)

    def _key(self, key: str) -> str:
        return self.root + checked_key(key)

    def _get(self, key: str, cached: tuple[bytes, str] | None = None) -> tuple[bytes, str] | None:
        """(bytes, ETag), None when absent; `cached` itself when its ETag is unchanged (304)."""
        condition = {"IfNoneMatch": cached[1]} if cached else {}
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **condition)
            return answer["Body"].read(), answer["ETag"]
        except ClientError as exc:
            code = error_code(exc)
            if code in NOT_FOUND:
                return None
            if cached and code in ("304", "NotModified"):
                return cached
            raise self._failure("read", key, exc) from None
        except BotoCoreError as exc:
            raise self._failure("read", key, exc) from None

    def _put(self, key: str, data: bytes, **condition: str) -> bool:
        """PUT under a condition: True when stored, False when the condition did not hold.
        Each PUT carries an id of its own (user metadata): a retried PUT whose first attempt
        was stored (its answer lost) fails its condition on that write, which its id shows to
        be this one, while the same bytes written by another writer are not."""
        write = uuid.uuid4().hex

        def refused(code: str, retried: bool) -> bool | None:
            if code in PRECONDITION_FAILED or (code in NOT_FOUND and "IfMatch" in condition):
                # only a request sent more than once can have been stored before it was refused
                return retried and self._written_by(key, write)
            if code in UNSUPPORTED and condition:
                where = f"{self.role} {self.location} at {self.endpoint}"
                header = "If-None-Match" if "IfNoneMatch" in condition else "If-Match"
                raise UnsupportedCondition(where, header)
            return None

        put = self.client.put_object
        metadata = {"Metadata": {WRITE_ID: write}}
        request = partial(
            put, Bucket=self.bucket, Key=self._key(key), Body=data, **metadata, **condition
        )
        return self._conditional("write", key, request, refused)

    def _written_by(self, key: str, write: str) -> bool:
        """Whether the object at `key` now is the one the PUT with id `write` stored."""
        head = partial(self.client.head_object, Bucket=self.bucket, Key=self._key(key))
        answer = self._unless_missing("read", key, head)
        return answer is not None and answer.get("Metadata", {}).get(WRITE_ID) == write

    def _unless_missing(self, action: str, key: str, request: Callable[[], Any]) -> Any:
        """`request()`'s answer; None when the object is not there; StoreError otherwise."""
        try:
            return request()
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND:
                return None
            raise self._failure(action, key, exc) from None
        except BotoCoreError as exc:
            raise self._failure(action, key, exc) from None

    def _delete(self, key: str, **condition: str) -> bool:
        """DELETE under a condition: True when deleted (or already gone), False when the
        condition did not hold. Where the store does not implement the condition (found by
        `_check_conditions`), it is not sent: the delete is unconditional, as where ignored."""
        if not self.deletes_conditionally:
            condition = {}

        def refused(code: str, retried: bool) -> bool | None:
            return False if code in PRECONDITION_FAILED else True if code in NOT_FOUND else None

        delete = self.client.delete_object
        request = partial(delete, Bucket=self.bucket, Key=self._key(key), **condition)
        return self._conditional("delete", key, request, refused)

    def _conditional(
        self,
        action: str,
        key: str,
        request: Callable[[], object],
        refused: Callable[[str, bool], bool | None],
    ) -> bool:
        """`request`, a conditional write or delete, retried while another conditional request
        on the key is under way (s3_retry.conditional)."""
        failed = partial(self._failure, action, key)
        kept_conflicting = f"{self.location}/{key}: {action}s kept conflicting at {self.endpoint}"
        return conditional(request, refused, failed, kept_conflicting)

    def _call(self, method: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return method(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._failure(method.__name__, kwargs.get("Key", ""), exc) from None

    def _failure(self, action: str, key: str, exc: Exception) -> StoreError:
        where = f"{self.role} {self.location} at {self.endpoint}"
        return failure(where, self.bucket, action, key, exc)

    def _check_conditions(self) -> None:
        check_conditions(self)


def _at_once(call: Callable[[T], R], items: list[T]) -> list[R]:
    """`call` of each item on up to PARALLEL threads, results in order (the first error raised)."""
    if len(items) < 2:
        return [call(item) for item in items]
    with ThreadPoolExecutor(min(PARALLEL, len(items))) as pool:
        return list(pool.map(call, items))
