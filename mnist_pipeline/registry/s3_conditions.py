"""The first-use check that an S3 endpoint honours conditional writes (s3.py).

Before its first write a backend writes a probe object under `.probe/` with `If-None-Match: *`
twice and with a wrong `If-Match`: an endpoint that ignores either condition, or answers that it
does not implement it (501 NotImplemented), is refused (every race there would be a silent
overwrite). A DELETE with a wrong `If-Match` tells whether deletes
are conditional too; where they are not (ignored, or 501 NotImplemented) they are sent without
the condition, with a warning. A probe a process left by dying between its put and its delete
is garbage that `models gc` removes once it is old enough.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import suppress
from typing import TYPE_CHECKING

from mnist_pipeline.core.errors import RegistryError, StoreError
from mnist_pipeline.registry.s3_names import PRECONDITION_FAILED, UNSUPPORTED, error_code

if TYPE_CHECKING:
    from mnist_pipeline.registry.s3 import S3Bucket

PROBES = ".probe/"
# A probe lives for a few requests; one older than this was left by a process that died between
# writing and deleting it (`models gc` removes it).
PROBE_GRACE_S = 300.0
HONOURED: set[tuple[str, str]] = set()  # (endpoint, bucket) whose conditional writes were checked
UNCONDITIONAL_DELETE: set[tuple[str, str]] = set()  # of those, the ones ignoring If-Match on DELETE
logger = logging.getLogger("mnist_pipeline.registry.s3")


class UnsupportedCondition(StoreError):
    """The endpoint answered a conditional PUT with 501 NotImplemented."""

    def __init__(self, where: str, header: str) -> None:
        super().__init__(f"{where}: the endpoint does not implement {header} on PUT")
        self.header = header


def check_conditions(bucket: S3Bucket) -> None:
    """Refuse the endpoint of `bucket` when it ignores If-None-Match or If-Match (checked once per
    process and bucket); note one that does not honour If-Match on DELETE."""
    from botocore.exceptions import BotoCoreError, ClientError  # the optional extra

    if (bucket.endpoint, bucket.bucket) in HONOURED:
        return
    probe = f"{PROBES}{uuid.uuid4().hex}"
    wrong = '"00000000000000000000000000000000"'
    where = f"{bucket.role} {bucket.location} at {bucket.endpoint}"
    try:
        first = bucket._put(probe, b"1", IfNoneMatch="*")
        again = bucket._put(probe, b"2", IfNoneMatch="*")
        swapped = bucket._put(probe, b"3", IfMatch=wrong)
        if not _deletes_conditionally(bucket, probe, wrong):
            UNCONDITIONAL_DELETE.add((bucket.endpoint, bucket.bucket))
            logger.warning(
                "%s ignores or does not implement If-Match on DELETE: removals of "
                "shared-inbox records and lease releases are not conditional there",
                bucket.endpoint,
            )
    except UnsupportedCondition as exc:
        raise _refused(where, "does not implement", exc.header) from None
    finally:
        with suppress(ClientError, BotoCoreError):  # a probe left is under a dot-name: unlisted
            bucket.client.delete_object(Bucket=bucket.bucket, Key=bucket._key(probe))
    if not first or again or swapped:
        raise _refused(where, "ignores", "If-None-Match" if again or not first else "If-Match")
    HONOURED.add((bucket.endpoint, bucket.bucket))


def _refused(where: str, how: str, header: str) -> RegistryError:
    return RegistryError(
        f"{where}: the endpoint {how} conditional writes ({header}), so concurrent writers "
        "could overwrite each other; use a store that honours If-None-Match and If-Match "
        "(AWS S3, moto, MinIO)"
    )


def _deletes_conditionally(bucket: S3Bucket, probe: str, wrong: str) -> bool:
    """Whether a DELETE of `probe` with the `wrong` If-Match is refused (412). False where
    the store deletes anyway (ignores the condition) or says it does not implement it."""
    from botocore.exceptions import BotoCoreError, ClientError  # the optional extra

    delete = bucket.client.delete_object
    try:
        delete(Bucket=bucket.bucket, Key=bucket._key(probe), IfMatch=wrong)
    except ClientError as exc:
        if error_code(exc) in PRECONDITION_FAILED:
            return True
        if error_code(exc) in UNSUPPORTED:
            return False
        raise bucket._failure("delete", probe, exc) from None
    except BotoCoreError as exc:
        raise bucket._failure("delete", probe, exc) from None
    return False


def abandoned_probes(bucket: S3Bucket, older_than_s: float) -> list[str]:
    """Probes left behind, written `older_than_s` ago or more (PROBE_GRACE_S at least: a probe
    younger may still be in use)."""
    ages = bucket._listed(PROBES)
    return sorted(k for k, age in ages.items() if age >= max(older_than_s, PROBE_GRACE_S))


def remove_probe(bucket: S3Bucket, name: str) -> None:
    """Delete a probe `abandoned_probes` named; RegistryError for any other name."""
    if not name.startswith(PROBES) or "/" in name[len(PROBES) :]:
        raise RegistryError(f"{name!r} is not a probe's name")
    bucket.delete(name)
