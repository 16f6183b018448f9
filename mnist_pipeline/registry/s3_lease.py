"""A writers' lease on an S3 bucket: the `exclusive` of s3.py.

The lease is a small object created with `If-None-Match: *`. A writer that finds it taken waits;
one that sees the same lease (by ETag) unchanged for longer than its time to live, measured on
its own clock so hosts need not agree on the time, takes it over with `If-Match` on that ETag
(a holder that crashed leaves it behind); a lease whose holder was a process on this host that
no longer exists is taken over at once. Leaving deletes it if it is still this holder's.
Registrations use it only to keep identical models from becoming two versions: a slow holder
whose lease was taken over can at worst register a duplicate, never break a version.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from mnist_pipeline.core.errors import RegistryError

if TYPE_CHECKING:
    from mnist_pipeline.registry.s3 import S3Bucket

LEASE_TTL_S = 60.0
WAIT_S = 120.0
logger = logging.getLogger(__name__)


class Lease:
    """`with Lease(store, key):` holds the lease object `key` of `store`."""

    def __init__(
        self, store: S3Bucket, key: str, ttl_s: float = LEASE_TTL_S, wait_s: float = WAIT_S
    ) -> None:
        self.store, self.key, self.ttl_s, self.wait_s = store, key, ttl_s, wait_s
        self.owner = uuid.uuid4().hex
        holder = {"owner": self.owner, "host": this_host(), "pid": os.getpid()}
        self.body = json.dumps(holder).encode()

    def __enter__(self) -> Lease:
        deadline = time.monotonic() + self.wait_s
        seen: tuple[str, float] | None = None  # (ETag, when first seen) of the lease held
        while True:
            if self.store._put(self.key, self.body, IfNoneMatch="*"):
                return self
            found = self.store._get(self.key)
            now = time.monotonic()
            if found is not None:
                if seen is None or seen[0] != found[1]:
                    seen = (found[1], now)
                stale = now - seen[1] > self.ttl_s or holder_died(found[0])
                if stale and self.store._put(self.key, self.body, IfMatch=found[1]):
                    logger.warning("took over a stale lease %s: %s", self.key, found[0][:200])
                    return self
            if now > deadline:
                holder = found[0].decode(errors="replace")[:200] if found else "?"
                raise RegistryError(
                    f"registry {self.store.location} is busy: lease {self.key} held for over "
                    f"{self.wait_s:.0f} s by {holder}"
                )
            time.sleep(random.uniform(0.05, 0.2))

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        try:
            found = self.store._get(self.key)
            if found is not None and json.loads(found[0]).get("owner") == self.owner:
                self.store.delete(self.key)
        except (RegistryError, ValueError) as failure:  # it expires on its own
            logger.warning("could not release lease %s: %s", self.key, failure)


def this_host() -> str:
    """The host name and, where Linux has one, the boot id: a process id means something only
    on the machine, and in the boot, that gave it."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}" if boot else socket.gethostname()


def holder_died(body: bytes) -> bool:
    """True when the lease names a process of this host that no longer exists."""
    try:
        holder = json.loads(body)
        if holder.get("host") != this_host():
            return False
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (ValueError, KeyError, TypeError, PermissionError, AttributeError):
        return False
    return False
