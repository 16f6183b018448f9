"""`Registry`: the versions and aliases of one named model, on any storage backend.

Reads need no lock: a version's card is created once and its files are content-addressed, so
what a reader sees never changes; the alias document is replaced whole. Every read of a file
re-hashes its bytes against the card, and callers get bytes or a verified local copy, never a
path inside the store. Writing is in commit.py (versions) and moves.py (aliases).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.registry import aliases as alias_doc
from mnist_pipeline.registry import commit, garbage, inputs, keys, lookup, moves, replay
from mnist_pipeline.registry.aliases import PRODUCTION, AliasState
from mnist_pipeline.registry.audit import audit, refuse_forged
from mnist_pipeline.registry.backends import open_storage
from mnist_pipeline.registry.card import file_problem, parse_card
from mnist_pipeline.registry.copies import default_cache, verified_copy
from mnist_pipeline.registry.garbage import GRACE_S
from mnist_pipeline.registry.registration import (
    Registration,
    Submission,
)
from mnist_pipeline.registry.signing import Signing, stored_signature
from mnist_pipeline.registry.storage import Storage


class Registry:
    """The versions of the model `name` in `root` (a folder, a file:// URL, or a Storage)."""

    def __init__(
        self, root: Path | str | Storage, name: str, signing: Signing | None = None
    ) -> None:
        self.name = keys.check_name(name, "model name")
        self.storage = root if isinstance(root, Storage) else open_storage(root)
        self.root = root
        self.signing = signing or Signing()
        self._trusted_revision: str | None = None  # the alias document last found consistent
        self._card_bytes: dict[int, bytes] = {}  # read or created in one registration (_cards)

    @property
    def location(self) -> str:
        """Where the model's versions are, for people."""
        return f"{self.storage.location.rstrip('/')}/{self.name}"

    # ---- reading

    def version_numbers(self) -> list[int]:
        """Committed versions (those with a card), ascending."""
        return keys.committed_versions(self.name, self.storage.list(f"{self.name}/v"))

    def versions(self) -> list[dict[str, Any]]:
        """The card of every version, oldest first (RegistryError on a damaged card)."""
        return [self._card(v) for v in self.version_numbers()]

    def catalogue(
        self, strict: bool = False, reuse: bool = False
    ) -> list[tuple[int, dict[str, Any] | None, str | None]]:
        """(version, card, None) for every version, or (version, None, problem) for one whose
        card cannot be trusted (lookup.catalogue)."""
        return lookup.catalogue(self, strict, reuse)

    def aliases(self) -> dict[str, int]:
        """Current alias -> version map."""
        return dict(self.state().aliases)

    def alias_log(self, checked: bool = True) -> dict[str, Any]:
        """Aliases, their history and the event log; `checked=False`: as stored, past the
        trusted-key checks that refuse to follow it (to show what they refuse)."""
        return (self.state() if checked else self._stored_aliases()[0]).to_dict()

    def card(self, ref: str | int) -> dict[str, Any]:
        """The card of a version number ("3", "v3") or alias."""
        return self.card_with_bytes(ref)[0]

    def card_with_bytes(self, ref: str | int) -> tuple[dict[str, Any], bytes]:
        """The card of `ref`, checked as `card` checks it, and the stored bytes it was read from
        (to hand on unchanged: they are what its seal and signature were made over). A version
        number is read without listing the versions first (one request, not two); only a card
        that is not there lists them, to say which exist."""
        named = keys.parse_ref(ref)
        if not isinstance(named, int):
            return self._read_card(self.version_of(named))
        data = self.storage.read(keys.card_key(self.name, named))
        if data is None:  # unknown: the error lists the versions there are; or just committed
            self.version_of(ref)
            data = self.storage.read(keys.card_key(self.name, named))
        return self._checked_card(named, data)

    def signature(self, card: dict[str, Any]) -> dict[str, str] | None:
        """A card's signature, {"key_id", "ed25519"} (None: unsigned), wherever it is stored;
        RegistryError for one of another shape (well_formed)."""
        return self._signature(card, f"{self.name} v{card.get('version')}")

    def version_with_fingerprint(self, sha256: str) -> int | None:
        """The newest intact-card version whose submission carried the inputs hash `sha256`,
        or whose files a later submission with it found identical (inputs.py)."""
        return inputs.version_with(self, sha256)

    def read_file(self, ref: str | int, relpath: str) -> bytes:
        """A version's file, after checking its SHA-256 against the card."""
        return self.read_file_of(self.card(ref), relpath)

    def read_file_of(self, card: dict[str, Any], relpath: str) -> bytes:
        """A file of the version `card` describes (as `card_with_bytes` gave it), after checking
        its SHA-256 against that very card."""
        version = int(card["version"])
        data, problem = self._file(version, card, relpath)
        if problem or data is None:
            raise RegistryError(f"refusing to load {self.name} v{version}: {problem}")
        return data

    def fetch(self, ref: str | int, relpath: str, cache: Path | None = None) -> Path:
        """A verified local copy of a version's file, in a cache keyed by its SHA-256 (the copy
        is re-hashed on every call; a damaged one is replaced)."""
        card = self.card(ref)
        version, expected = int(card["version"]), card["files"].get(relpath)
        if expected is None:
            raise RegistryError(f"{self.name} v{version} has no file {relpath!r}")
        return verified_copy(
            cache or default_cache(), str(expected), lambda: self.read_file(version, relpath)
        )

    def verify(self) -> list[str]:
        """Re-hash every file of every version, check every card's seal and signature, the
        alias document and what else the store holds; [] means intact (audit.py)."""
        return audit(self)

    def state(self, versions: list[int] | None = None) -> AliasState:
        """The alias document, plus the decisions of versions committed after it was written
        (by writers that died before updating it, or are updating it now)."""
        return self._state_and_revision(versions)[0]

    def version_of(self, ref: str | int, state: AliasState | None = None) -> int:
        """The version number a reference names; unknown ones list what exists."""
        return lookup.version_of(self, ref, state)

    # ---- writing (commit.py: versions; moves.py: aliases)

    def register(
        self, submission: Submission, *, skip_same_inputs: bool = False, actor: str | None = None
    ) -> Registration:
        """Store `submission` as the next version (see commit.register)."""
        return commit.register(self, submission, skip_same_inputs=skip_same_inputs, actor=actor)

    def restore_lost(self, files: Mapping[str, bytes], identity: tuple[str, ...]) -> int | None:
        """The version with these identity files, what the store lost of it stored again."""
        return commit.restore_lost(self, files, identity)

    def promote(
        self,
        version: int | str,
        alias: str,
        actor: str | None = None,
        comment: str | None = None,
        expected: int | None | object = moves.UNCHECKED,
        accept: moves.Accept | None = None,
    ) -> int | None:
        """Point `alias` at an intact version; returns the version it pointed at before.
        The audit trail records `actor` (default: the local user) and `comment`. With
        `expected`, only if the alias still points there (else AliasMoved, nothing moved);
        `accept(version)`, the caller's own rule, may refuse the version by raising."""
        return moves.promote(self, version, alias, actor, comment, expected, accept)

    def note(
        self,
        version: int | str,
        alias: str,
        action: str,
        reason: str,
        actor: str | None = None,
        comment: str | None = None,
    ) -> int:
        """Record a decision about `version` and `alias` that moves nothing (moves.note)."""
        return moves.note(self, version, alias, action, reason, actor, comment)

    def rollback(
        self,
        alias: str = PRODUCTION,
        actor: str | None = None,
        comment: str | None = None,
        expected: int | None | object = moves.UNCHECKED,
        accept: moves.Accept | None = None,
    ) -> int:
        """Move `alias` (production) back to its previous version; returns that version. With
        `expected`, only if the alias still points there (else AliasMoved, nothing moved);
        `accept` as for promote."""
        return moves.rollback(self, alias, actor, comment, expected, accept)

    def acknowledge(self, number: int, comment: str, actor: str | None = None) -> dict[str, Any]:
        """Vouch for alias event `number`, a move from an alias set by hand (moves.acknowledge)."""
        return moves.acknowledge(self, number, comment, actor)

    def restart_aliases(
        self, actor: str | None = None, comment: str | None = None
    ) -> moves.Restarted:
        """Start afresh an alias document that lost events (moves.restart): no alias points
        anywhere after it; the newest version (its decision not replayed), and where an
        unreadable document's bytes were kept."""
        return moves.restart(self, actor, comment)

    def garbage(self) -> list[str]:
        """Storage keys no card refers to (left by registrations that did not commit)."""
        return garbage.find(self)

    def collect_garbage(self, min_age_s: float = GRACE_S) -> garbage.Collected:
        """Delete `garbage()` but what is younger than `min_age_s`: removed and kept keys."""
        return garbage.collect(self, min_age_s)

    # ---- internals shared with commit.py, moves.py and audit.py

    def _state_and_revision(
        self,
        versions: list[int] | None = None,
        actor: str | None = None,
        own: int | None = None,
        writing: bool = False,
        recent: bool = False,
    ) -> tuple[AliasState, str | None]:
        """`state()` and the alias document's revision it was read at (None: no document);
        replayed decisions are recorded as `actor`'s. Versions are listed before the read: a
        card committed after it may name an event the read missed, which is not a lost one.
        `recent`: the document as last read, where the storage keeps it (for a swap)."""
        versions = self.version_numbers() if versions is None else versions
        state, revision = self._stored_aliases(recent)
        if revision is not None and revision != self._trusted_revision:
            self._trusted_revision = refuse_forged(self, state, revision)
        state.sign = self.signing.sign
        return replay.replayed(self, state, versions, actor, own, writing), revision

    def _stored_aliases(self, recent: bool = False) -> tuple[AliasState, str | None]:
        """The alias document as stored (`recent`: as last read, where the storage keeps it),
        unchecked and not replayed, and its revision (None: no document)."""
        key = keys.aliases_key(self.name)
        found = (recent and self.storage.last_read(key)) or self.storage.read_document(key)
        state = alias_doc.parse(found and found[0], self._aliases_where())
        state.model = self.name
        return state, None if found is None else found[1]

    def _aliases_where(self) -> str:
        return f"{self.location}/{keys.ALIASES_FILE}"

    def _cards(self, versions: list[int], reuse: bool = False) -> list[bytes | None]:
        """The stored card of each version (None: not there), read at once. A card is created
        once and never rewritten, so with `reuse` one read or created earlier in the same
        registration (from `restore_lost` to the end of `register`) is not read again (each is
        still checked where it is used); everything else, `verify` too, reads them afresh."""
        known = self._card_bytes if reuse else {}
        unread = [v for v in versions if v not in known]
        found = self.storage.read_many([keys.card_key(self.name, v) for v in unread])
        for version, data in zip(unread, found, strict=True):
            if data is not None:
                known[version] = data
        return [known.get(version) for version in versions]

    def _card(self, version: int) -> dict[str, Any]:
        return self._read_card(version)[0]

    def _read_card(self, version: int) -> tuple[dict[str, Any], bytes]:
        return self._checked_card(version, self.storage.read(keys.card_key(self.name, version)))

    def _checked_card(self, version: int, data: bytes | None) -> tuple[dict[str, Any], bytes]:
        """The card stored as `data` after checking its seal, name, version and signature."""
        label = f"{self.name} v{version}"
        if data is None:
            raise RegistryError(f"{label}: card.json not found in {self.location}")
        card = parse_card(data, self.name, version)
        self.signing.check(card, self._signature(card, label), label)
        return card, data

    def _signature(self, card: dict[str, Any], label: str) -> dict[str, str] | None:
        return stored_signature(self.storage, self.name, card, label)

    def _file_key(self, card: dict[str, Any], relpath: str) -> str:
        if card.get("schema", 1) < 2:
            return keys.legacy_file(self.name, card["version"], relpath)
        return keys.blob_key(self.name, card["files"][relpath])

    def _file(
        self, version: int, card: dict[str, Any], relpath: str
    ) -> tuple[bytes | None, str | None]:
        """(bytes, None) of an intact recorded file, else (None, the problem)."""
        if relpath not in card["files"]:
            return None, f"{relpath} is not in its card"
        data = self.storage.read(self._file_key(card, relpath))
        problem = file_problem(relpath, card["files"][relpath], data)
        return (None, problem) if problem else (data, None)

    def _problems(self, version: int, card: dict[str, Any]) -> list[str]:
        """Every recorded file of a version that is missing or modified (read all at once)."""
        files = sorted(card["files"])
        stored = self.storage.read_many([self._file_key(card, rel) for rel in files])
        checked = zip(files, stored, strict=True)
        return [p for rel, data in checked if (p := file_problem(rel, card["files"][rel], data))]
