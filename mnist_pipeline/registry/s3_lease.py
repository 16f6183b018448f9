"""A writers' lease on an S3 bucket: the `exclusive` of s3.py.

The lease is a small object created with `If-None-Match: *`. Its holder renews it every third of
its time to live (a PUT with `If-Match` on its own ETag, of a body with a new renewal count: S3's
ETag is the body's MD5, so rewriting the same bytes would not change it), so a live holder's
lease keeps changing. A waiter that sees the same lease (by ETag) unchanged for longer than the
time to live, measured on its own clock so hosts need not agree on the time, takes it over with
`If-Match` on that ETag: its holder stopped renewing (it crashed, or lost the store). A lease
whose holder is a process of this host (host name, boot and PID namespace) that no longer exists,
or a lease this process abandoned, is taken over at once. Leaving deletes it if it is still this
holder's: a DELETE with `If-Match` on the ETag it read (the one `check_held` read last, if no
renewal came after it), so a lease taken over between that read and the delete stays with its new
holder.
Registrations use it to keep identical models from becoming two versions and `models gc` to
keep off blobs a registration is storing.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from mnist_pipeline.core import json_text
from mnist_pipeline.core.errors import RegistryError

if TYPE_CHECKING:
    from mnist_pipeline.registry.s3 import S3Bucket

LEASE_TTL_S = 60.0
WAIT_S = 120.0
HELD: set[str] = set()  # owners of the leases this process holds now
logger = logging.getLogger(__name__)


class Lease:
    """`with Lease(store, key):` holds the lease object `key` of `store`."""

    def __init__(
        self, store: S3Bucket, key: str, ttl_s: float = LEASE_TTL_S, wait_s: float = WAIT_S
    ) -> None:
        self.store, self.key, self.ttl_s, self.wait_s = store, key, ttl_s, wait_s
        self.owner = uuid.uuid4().hex
        self.holder = {"owner": self.owner, "host": this_host(), "pid": os.getpid()}
        self.body = json.dumps(self.holder).encode()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._seen: str | None = None  # the ETag check_held last read it at, until a renewal

    def __enter__(self) -> Lease:
        # held from before the write lands: a thread of this process reading the lease in
        # between must not take it as one that a failed release left behind (holder_died)
        HELD.add(self.owner)
        try:
            return self._take()
        except BaseException:
            HELD.discard(self.owner)
            raise

    def _take(self) -> Lease:
        deadline = time.monotonic() + self.wait_s
        seen: tuple[str, float] | None = None  # (ETag, when first seen) of the lease held
        while True:
            if self.store._put(self.key, self.body, IfNoneMatch="*"):
                return self._held()
            found = self.store._get(self.key)
            now = time.monotonic()
            if found is not None:
                if seen is None or seen[0] != found[1]:
                    seen = (found[1], now)
                stale = now - seen[1] > self.ttl_s or holder_died(found[0])
                if stale and self.store._put(self.key, self.body, IfMatch=found[1]):
                    logger.warning("took over a stale lease %s: %s", self.key, found[0][:200])
                    return self._held()
            if now > deadline:
                holder = found[0].decode(errors="replace")[:200] if found else "?"
                raise RegistryError(
                    f"{self.store.role} {self.store.location} is busy: lease {self.key} held "
                    f"for over {self.wait_s:.0f} s by {holder}"
                )
            time.sleep(random.uniform(0.05, 0.2))

    def check_held(self) -> None:
        """RegistryError unless the lease object still names this holder (read now): one that
        stalled past the time to live may have been taken over, and must stop."""
        found = self.store._get(self.key)
        if found is None or _owner(found[0]) != self.owner:
            raise RegistryError(
                f"lease {self.key} in {self.store.location} was taken over while held (this "
                "process stalled past its time to live): stopped; run the command again"
            )
        self._seen = found[1]

    def _held(self) -> Lease:
        self._renewer = threading.Thread(target=self._renew, name="s3-lease", daemon=True)
        self._renewer.start()
        return self

    def _renew(self) -> None:
        """Rewrite the lease every ttl/3 while held (new bytes, so a new ETag, each time)."""
        renewals = 0
        while not self._stop.wait(self.ttl_s / 3):
            try:
                found = self.store._get(self.key)
                if found is None or _owner(found[0]) != self.owner:
                    logger.error("lease %s was taken over while held", self.key)
                    return
                renewals += 1
                body = json.dumps({**self.holder, "renewal": renewals}).encode()
                self._seen = None  # rewritten: its ETag is no longer the one check_held saw
                self.store._put(self.key, body, IfMatch=found[1])
            except (RegistryError, ValueError) as failure:  # retried at the next tick
                logger.warning("could not renew lease %s: %s", self.key, failure)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            # as check_held last saw it, unchanged since: deleted without reading it again
            # (only where If-Match on DELETE holds: elsewhere it must be read to be spared)
            seen = self._seen if self.store.deletes_conditionally else None
            if seen is not None and self.store._delete(self.key, IfMatch=seen):
                return
            found = self.store._get(self.key)
            mine = found is not None and _owner(found[0]) == self.owner
            if mine and not self.store._delete(self.key, IfMatch=found[1]):  # type: ignore[index]
                logger.warning("lease %s was taken over while it was released", self.key)
        except (RegistryError, ValueError) as failure:  # it goes stale on its own
            logger.warning("could not release lease %s: %s", self.key, failure)
        finally:
            # Held until the delete: a thread of this process waiting meanwhile would take a
            # lease naming this process but no holder in HELD as abandoned. If the delete
            # failed, this process's waiters now take it at once.
            HELD.discard(self.owner)


def this_host() -> str:
    """The host name, boot id and PID namespace, where Linux has them: a process id means
    something only in the namespace, on the machine and in the boot that gave it."""
    parts = [socket.gethostname()]
    for source in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            path = Path(source)
            parts.append(os.readlink(path) if path.is_symlink() else path.read_text().strip())
        except OSError:
            continue
    return "/".join(parts)


def _owner(body: bytes) -> str | None:
    """The owner a lease object names; None when it is not a lease this program writes."""
    try:
        holder = json_text.loads(body)
    except ValueError:
        return None
    owner = holder.get("owner") if isinstance(holder, dict) else None
    return owner if isinstance(owner, str) else None


def holder_died(body: bytes) -> bool:
    """True when the lease names a process of this host that no longer exists, or a lease of
    this process that nobody in it holds (abandoned when its release failed)."""
    try:
        holder = json_text.loads(body)
        if holder.get("host") != this_host():
            return False
        if int(holder["pid"]) == os.getpid():
            return holder.get("owner") not in HELD
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (ValueError, KeyError, TypeError, PermissionError, AttributeError, OverflowError):
        return False
    return False
