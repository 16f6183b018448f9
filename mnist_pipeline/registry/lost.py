"""An alias document that lost events: found by the cards, and started afresh.

Each card names the audit trail's last stored event when its version was committed (the card's
`alias_trail`). The trail only grows (each change appends by compare-and-swap), so every later
alias document holds that event. One that does not was deleted, emptied or replaced by an older
copy: replaying the cards' decisions onto it could bring back a move its lost events undid (a
rollback), so readers and writers refuse it (`LostAliases`) until it is restored from a copy,
or restarted (moves.restart): a signed event names what was lost, points no alias anywhere and
replays no decision up to the newest version; then a person promotes what should serve.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.registry import keys, trail
from mnist_pipeline.registry.card import ALIAS_TRAIL_KEY, parse_card

if TYPE_CHECKING:
    from mnist_pipeline.registry.api import Registry

LOST_KEY = "lost"  # a restart event's evidence: the events the document had lost


class LostAliases(RegistryError):
    """The alias document lacks an event a version was registered after."""


def heads(events: list[Any]) -> set[str]:
    """Every event hash the log has ended at (a legacy prefix: the hash of it, as `trail.link`
    gives it), and the lost ones its restart events name."""
    found: set[str] = set()
    for count, event in enumerate(events, 1):
        if isinstance(event, dict) and isinstance(event.get(trail.HASH_KEY), str):
            found.add(event[trail.HASH_KEY])
            evidence = event.get("evidence")
            if event.get("action") == trail.RESTART and isinstance(evidence, dict):
                named = evidence.get(LOST_KEY)
                found |= {str(head) for head in named} if isinstance(named, list) else set()
        else:
            found.add(str(trail.link(events[:count])))
    return found


def missing_head(card: dict[str, Any], known: set[str]) -> str | None:
    """The event `card` was registered after, when `known` (`heads`) lacks it."""
    head = card.get(ALIAS_TRAIL_KEY)
    return None if head is None or str(head) in known else str(head)


def refusal(registry: Registry, version: int, head: str) -> LostAliases:
    """The error of an alias document that lost `head`, which v`version` was registered after."""
    return LostAliases(
        f"{registry._aliases_where()} no longer holds alias event {head[:12]}..., the last one "
        f"when {registry.name} v{version} was registered: it was deleted, emptied or replaced "
        "by an older copy. Replaying the versions' decisions onto it could bring back a move "
        "its lost events undid (a rollback), so its aliases are not followed: restore it from "
        "a copy (object versioning, a backup), or start it afresh with `mnist-pipeline models "
        "restart-aliases` and promote the version production should serve"
    )


def sealed_card(registry: Registry, version: int, data: bytes | None) -> dict[str, Any] | None:
    """The card stored as `data` if its seal holds, whatever its signature (None if not): a
    card this host cannot check still tells which event its version was registered after."""
    try:
        return None if data is None else parse_card(data, registry.name, version)
    except RegistryError:
        return None


def lost(registry: Registry, events: list[Any], versions: list[int]) -> list[tuple[int, str]]:
    """(version, event) of every sealed card among `versions` registered after an event
    `events` lacks (list the versions before reading the document that holds `events`)."""
    stored = registry.storage.read_many([keys.card_key(registry.name, v) for v in versions])
    return lost_among(registry, events, versions, stored)


def lost_among(
    registry: Registry, events: list[Any], versions: list[int], cards: list[bytes | None]
) -> list[tuple[int, str]]:
    """`lost` for the stored `cards` of `versions` (their bytes, as read)."""
    known: set[str] | None = None  # computed once a card names an event
    found = []
    for version, data in zip(versions, cards, strict=True):
        card = sealed_card(registry, version, data)
        if card is None or card.get(ALIAS_TRAIL_KEY) is None:
            continue
        known = heads(events) if known is None else known
        head = missing_head(card, known)
        if head is not None:
            found.append((version, head))
    return found
