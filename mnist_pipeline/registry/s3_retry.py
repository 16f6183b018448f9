"""Conditional S3 requests retried while another conditional request on the same key is under
way (409 ConditionalRequestConflict), and the outcome told apart: done, refused, failed."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from mnist_pipeline.core.errors import StoreError
from mnist_pipeline.registry.s3_names import error_code

try:
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:  # the optional extra: pip install 'mnist-pipeline[s3]'; nothing raises these

    class BotoCoreError(Exception):  # type: ignore[no-redef]
        """Stands in for botocore's, which is not installed."""

    class ClientError(Exception):  # type: ignore[no-redef]
        """Stands in for botocore's, which is not installed."""


# 409 ConditionalRequestConflict (another conditional write on the key in flight): retried with
# capped exponential backoff and full jitter, so that racing writers spread out rather than retry
# in step; at most about 16 s of waiting in all (8 s on average)
CONFLICT_RETRIES = 20
CONFLICT_BACKOFF_S = (0.05, 1.0)  # the first retry's longest wait, and the cap


def conditional(
    request: Callable[[], object],
    refused: Callable[[str, bool], bool | None],
    failure: Callable[[Exception], StoreError],
    kept_conflicting: str,
) -> bool:
    """`request`, a conditional write or delete, retried with backoff while the store answers
    409: True when done; for any other error code, `refused(code, retried)` answers (None: a
    failure, raised as `failure(exc)`); `retried` is whether the request was sent more than
    once, by boto3 or by this loop (an earlier try may have landed: one that timed out, then a
    409 from its own write still under way). StoreError `kept_conflicting` after the last try."""
    first, cap = CONFLICT_BACKOFF_S
    retried = False
    for attempt in range(CONFLICT_RETRIES):
        try:
            request()
            return True
        except ClientError as exc:
            code = error_code(exc)
            sent = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 1)
            retried = retried or attempt > 0 or sent != 0
            if code not in ("ConditionalRequestConflict", "409"):
                answer = refused(code, retried)
                if answer is None:
                    raise failure(exc) from None
                return answer
        except BotoCoreError as exc:  # no answer: the store may have done it first
            unknown = "; the store may have done it before it stopped answering: look "
            unknown += "(`models history`, `models list`) before you run it again"
            failed = failure(exc)
            raise StoreError(f"{failed}{unknown}", failed.whole_store) from None
        if attempt + 1 < CONFLICT_RETRIES:
            time.sleep(random.uniform(0, min(cap, first * 2**attempt)))
    raise StoreError(kept_conflicting)
