"""The alias map of one model (`aliases.json`): current aliases, their history, an event log.

    {
      "aliases": {"production": 3, "staging": 4},
      "history": {"production": [1, 3], "staging": [2, 4]},   # oldest first; rollback pops
      "events": [{"time": ..., "action": "register", "alias": ..., "version": ...,
                  "previous": ..., "reason": ..., "actor": ..., "evidence": {...},
                  "prev_sha256": ..., "sha256": ..., "signature": ...}, ...],   # trail.py
      "last_version": 4     # newest version whose alias decision is recorded here
    }

Each card names the trail's last event when its version was committed (`alias_trail`), so a
document that lost events a card was registered after is found (lost.py).

A version committed by a writer that died before updating this document has `version >
last_version`; its card's decision is replayed by the next reader or writer (api.py). Writers
replace the document by compare-and-swap and retry on conflict.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mnist_pipeline.core import json_text
from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.core.text import CONTROL, UNDECODED
from mnist_pipeline.registry import trail
from mnist_pipeline.registry.keys import REF_VERSION_RE, check_alias

PRODUCTION = "production"
STAGING = "staging"
MAX_ACTOR = 200  # characters of an audit event's actor
MAX_COMMENT = 2000  # and of its comment
# the actions of the events that point an alias at a version (the others record a decision)
MOVING_ACTIONS = (*trail.MOVES, "rollback")


def names_version(ref: str) -> bool:
    """Whether `ref` names a version by number ("3", "v3"), which never moves, not an alias."""
    return REF_VERSION_RE.fullmatch(str(ref).strip()) is not None


def utc_now() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_text(value: str, what: str, limit: int) -> str:
    """`value` if it is one line of at most `limit` printable characters (an audit trail's actor
    or comment: a newline would read as two events, an escape sequence reach a terminal)."""
    undecoded = UNDECODED.search(value)
    if undecoded:  # a byte the terminal's encoding could not decode (os.fsdecode's escape)
        raise RegistryError(
            f"the {what} holds a byte that is not UTF-8 ({undecoded.group()!r} at "
            f"{undecoded.start()}): give one line of printable text in UTF-8"
        )
    found = CONTROL.search(value)
    if found:
        raise RegistryError(
            f"the {what} holds a control character ({found.group()!r} at {found.start()}): "
            "give one line of printable text"
        )
    if len(value) > limit:
        raise RegistryError(f"the {what} is {len(value):,} characters long, more than {limit:,}")
    return value


def checked_actor(actor: str | None) -> str | None:
    """`actor` if the audit trail takes it (None: the default one); RegistryError if not."""
    if actor is not None and not actor.strip():  # an event naming nobody answers nothing
        raise RegistryError("the actor is blank: name who makes this move (or leave it out)")
    return None if actor is None else check_text(actor, "actor", MAX_ACTOR)


def commented(comment: str | None) -> dict[str, str]:
    """A manual move's evidence: the mover's comment (none: no evidence)."""
    return {} if comment is None else {"comment": check_text(comment, "comment", MAX_COMMENT)}


@dataclass
class AliasState:
    """Mutable in-memory alias map; every move is appended to `events` as the next link of the
    audit trail (trail.py), signed by `sign` when the registry has a signing key."""

    aliases: dict[str, int] = field(default_factory=dict)
    history: dict[str, list[int]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    last_version: int = 0
    sign: trail.Signer | None = field(default=None, repr=False, compare=False)
    model: str | None = field(default=None, repr=False, compare=False)  # its events name it
    stored: int = field(default=0, repr=False, compare=False)  # events read from the document

    def assign(
        self,
        alias: str,
        version: int,
        action: str,
        reason: str,
        actor: str | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> int | None:
        """Point `alias` at `version` (pushing it on the alias history); returns the previous.
        `actor` moved it (default: the local user) on `evidence`."""
        check_alias(alias)
        previous = self.aliases.get(alias)
        if previous != version:
            self.aliases[alias] = version
            self.history.setdefault(alias, []).append(version)
        self._log(action, alias, version, previous, reason, actor, evidence)
        return previous

    def rollback(
        self, alias: str, actor: str | None = None, evidence: Mapping[str, Any] | None = None
    ) -> tuple[int, int]:
        """Move `alias` back to the version it pointed at before; returns (from, to)."""
        stack = self.history.get(alias, [])
        if alias not in self.aliases:  # a typo, most likely: say which there are
            listed = ", ".join(f"{a} -> v{v}" for a, v in sorted(self.aliases.items())) or "none"
            raise RegistryError(f"no alias {alias!r} to roll back (aliases: {listed})")
        if len(stack) < 2:
            held = ", ".join(f"v{v}" for v in stack) or "none"
            raise RegistryError(
                f"alias {alias!r} has no previous version to roll back to (history: {held})"
            )
        current = stack.pop()
        target = stack[-1]
        self.aliases[alias] = target
        why = f"rolled back from v{current} to v{target}"
        self._log("rollback", alias, target, current, why, actor, evidence)
        return current, target

    def note(
        self,
        action: str,
        alias: str,
        version: int,
        reason: str,
        actor: str | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a decision about `alias` and `version` that moves nothing (e.g. a proposal
        rejected); the event's `previous` is where the alias stays."""
        check_alias(alias)
        current = self.aliases.get(alias)
        self._log(action, alias, version, current, reason, actor, evidence)

    def restart(
        self, newest: int, actor: str | None = None, evidence: Mapping[str, Any] | None = None
    ) -> None:
        """Point no alias anywhere, forget their histories and replay no decision up to
        v`newest`: the fresh start of a document that lost events (lost.py)."""
        previous = self.aliases.get(PRODUCTION)
        self.aliases, self.history = {}, {}
        self.last_version = max(self.last_version, newest)
        why = (
            "restarted: the alias document had lost events versions were registered after; no "
            f"alias points anywhere, and no decision up to v{newest} is replayed"
        )
        self._log(trail.RESTART, PRODUCTION, newest, previous, why, actor, evidence)

    def aliases_of(self, version: int) -> list[str]:
        return sorted(a for a, v in self.aliases.items() if v == version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "aliases": dict(sorted(self.aliases.items())),
            "history": dict(sorted(self.history.items())),
            "events": self.events,
            "last_version": self.last_version,
        }

    def _log(
        self,
        action: str,
        alias: str,
        version: int,
        previous: int | None,
        reason: str,
        actor: str | None,
        evidence: Mapping[str, Any] | None,
    ) -> None:
        event = {
            "time": utc_now(),
            "action": action,
            "alias": alias,
            "version": version,
            "previous": previous,
            "reason": reason,
            "actor": checked_actor(actor) or trail.default_actor(),
            "evidence": dict(evidence or {}),
        }
        if self.model is not None:  # hashed and signed with the rest: binds the event to it
            event[trail.MODEL_KEY] = self.model
        self.events.append(trail.chained(self.events, event, self.sign))


def _is_version(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _int_map(raw: Any, path: str, key: str, lists: bool) -> None:
    """`raw` maps alias names to a version number (`lists`: to a list of them)."""
    if not isinstance(raw, dict):
        raise RegistryError(f"{path}: {key!r} must be a mapping")
    for alias, value in raw.items():
        try:
            check_alias(alias)
        except RegistryError as exc:
            raise RegistryError(f"{path}: {exc}") from None
        if lists:
            valid = isinstance(value, list) and all(_is_version(v) for v in value)
        else:
            valid = _is_version(value)
        if not valid:
            what = "a list of version numbers" if lists else "a version number"
            raise RegistryError(f"{path}: {key}.{alias} must be {what}, got {value!r}")


def parse(data: bytes | None, where: str) -> AliasState:
    """Validate an alias document's bytes; None (no document yet) is an empty state."""
    if data is None:
        return AliasState()
    try:
        raw = json_text.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{where} is not readable JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: top level must be a JSON object")
    unknown = sorted(set(raw) - set(AliasState().to_dict()))
    if unknown:  # the next promote would write the document without them
        raise RegistryError(
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))} (it holds aliases, "
            "history, events and last_version): remove them, or upgrade to the release that "
            "wrote them"
        )
    aliases, history = raw.get("aliases", {}), raw.get("history", {})
    events, last = raw.get("events", []), raw.get("last_version", 0)
    _int_map(aliases, where, "aliases", lists=False)
    _int_map(history, where, "history", lists=True)
    if not isinstance(events, list) or not isinstance(last, int) or isinstance(last, bool):
        raise RegistryError(f"{where}: 'events' must be a list and 'last_version' an integer")
    for number, event in enumerate(events, 1):
        if not isinstance(event, dict) or not isinstance(event.get("evidence") or {}, dict):
            raise RegistryError(
                f"{where}: alias event {number} must be a JSON object (its evidence as well)"
            )
        for key, kind in (
            ("action", str), ("alias", str), ("version", int), ("previous", int), ("model", str)
        ):  # fmt: skip
            value = event.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise RegistryError(
                    f"{where}: alias event {number}'s {key!r} must be "
                    f"{'text' if kind is str else 'an integer'}, got {value!r}"
                )
    history = {k: list(v) for k, v in history.items()}
    return AliasState(dict(aliases), history, events, last, stored=len(events))


def dump(state: AliasState) -> bytes:
    """The alias document's bytes (indented JSON)."""
    return (json.dumps(state.to_dict(), indent=2) + "\n").encode("utf-8")
