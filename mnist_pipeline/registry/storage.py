"""Where a registry's bytes live: one small interface, a backend per URL scheme.

A backend stores immutable objects under keys ("mnist-cnn/v3/card.json") and offers only what
an object store can honour: read, create-if-absent, compare-and-swap of a small document (and
its removal only if unchanged), list, and delete (for garbage). There is no rename: a registry
commits a version by creating its card once, and moves aliases by compare-and-swap (api.py).
`exclusive` serialises writers where the backend can (a local folder: flock); commits never rely
on it, only the check that stops two identical models from becoming two versions does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager

from mnist_pipeline.core.errors import RegistryError


class Storage(ABC):
    """Objects by key; keys are '/'-separated, relative, without '..' or dot-names."""

    location: str  # for messages: the folder or URL

    @abstractmethod
    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none."""

    def read_many(self, keys: list[str]) -> list[bytes | None]:
        """`read` of each key, in order; a backend one round trip away reads them at once."""
        return [self.read(key) for key in keys]

    @abstractmethod
    def read_document(self, key: str) -> tuple[bytes, str] | None:
        """(bytes, revision) of a small document, or None; the revision is what `swap`
        compares against."""

    def last_read(self, key: str) -> tuple[bytes, str] | None:
        """The document at `key` as this object last read it, without asking the store (None:
        none kept; a backend whose reads cost little keeps none). For a compare-and-swap only,
        whose revision refuses a document changed since."""
        return None

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Store `data` under `key` only if nothing is there; False when something was."""

    def create_many(self, items: list[tuple[str, bytes]]) -> list[bool]:
        """`create` of each (key, data), in order; a backend one round trip away writes them at
        once."""
        return [self.create(key, data) for key, data in items]

    @abstractmethod
    def swap(self, key: str, data: bytes, revision: str | None) -> bool:
        """Replace the document at `key` with `data` only if its revision is still `revision`
        (None: only if absent); False when another writer changed it first."""

    @abstractmethod
    def delete_document(self, key: str, revision: str) -> bool:
        """Remove the document at `key` only if its revision is still `revision`; False when
        another writer changed it first (True when it is already gone)."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Every key that starts with `prefix` (any string, as S3 lists), sorted."""

    @abstractmethod
    def ages(self, prefix: str) -> dict[str, float]:
        """`list`'s keys, each with the seconds since it was written by the store's own clock
        (S3: its Date header against LastModified), so hosts need not agree on the time."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object (garbage only: never a committed version's)."""

    @abstractmethod
    def renew(self, key: str) -> bool:
        """Restart an object's age (`ages`) without changing its bytes; False when it is gone."""

    def renew_many(self, keys: list[str]) -> list[bytes | None]:
        """`renew` each key and read it: its bytes, or None when it is gone; a backend one
        round trip away sends the renewals and the reads at once."""
        return [self.read(key) if self.renew(key) else None for key in keys]

    def abandoned(self, prefix: str, older_than_s: float) -> list[str]:
        """Partial writes under `prefix` that a killed writer left, written `older_than_s` ago
        or more; a backend whose writes are atomic (object storage) has none."""
        return []

    def remove_abandoned(self, name: str) -> None:
        """Delete one of the names `abandoned` returned."""
        raise RegistryError(f"{self.location} keeps no partial writes, so not {name!r}")

    @abstractmethod
    def exclusive(self, key: str) -> AbstractContextManager[Callable[[], None]]:
        """Hold a writers' lock named `key` where the backend has one (else a no-op). It gives
        a check to call before an irreversible step: RegistryError if the lock was lost (a
        lease taken over while its holder stalled); nothing where it cannot be lost."""


def check_key(key: str) -> str:
    """RegistryError unless `key` is a relative '/'-path of plain names."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") or p[0] == "." for p in parts):
        raise RegistryError(f"invalid storage key {key!r}")
    return key


def hidden(name: str) -> bool:
    """Whether a part of `name` starts with '.', as no key's does (check_key): a backend's own
    leases, probes and partial writes."""
    return any(part.startswith(".") for part in name.split("/"))
