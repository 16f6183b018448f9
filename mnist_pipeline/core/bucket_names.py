"""S3 bucket names as S3 allows them, one rule for params validation and the registry (pure)."""

from __future__ import annotations

import re

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
RULE = "3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit"


def valid_bucket(bucket: str) -> bool:
    """Whether `bucket` follows S3's general rule for bucket names (length, characters, no
    '..'); the few names AWS reserves (IP-address forms, `xn--...`) are left to the store."""
    return _BUCKET_RE.fullmatch(bucket) is not None and ".." not in bucket
