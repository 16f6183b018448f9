"""Replaying registrations whose writers died before recording them in the alias document.

A version is committed by its card alone; its writer then records the card's alias decision in
aliases.json. Every reader and writer applies the decisions of committed versions the document
does not record yet, so a writer that died in between loses nothing, and the next writer
stores them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mnist_pipeline.core.errors import RegistryError, StoreError
from mnist_pipeline.registry import lost
from mnist_pipeline.registry.aliases import AliasState
from mnist_pipeline.registry.registration import DECISION_FIELDS, applicable
from mnist_pipeline.registry.signing import NotSigned, UntrustedKey

if TYPE_CHECKING:
    from mnist_pipeline.registry.api import Registry


def replayed(
    registry: Registry,
    state: AliasState,
    versions: list[int] | None = None,
    actor: str | None = None,
    own: int | None = None,
    writing: bool = False,
) -> AliasState:
    """`state` with the decisions of `versions` (all committed ones when None) that it does not
    record yet: as registered by `actor` (default: the local user) for version `own`, the one
    its writer is recording; any other is marked replayed by `actor`. A card that cannot be
    read or checked gets no alias (`verify` reports it); one signed by a key this host does not
    trust, or unsigned where it requires signatures, is not passed over, since another host
    may accept it: a reading stops short of it, and a writer (`writing`) is refused (recorded
    as handled, its decision would be lost for every host). A sealed card registered after an
    event the document no longer holds, signed or not, stops readers and writers alike
    (lost.LostAliases: replayed, its decision could undo a lost rollback)."""
    wanted = registry.version_numbers() if versions is None else versions
    pending = [version for version in wanted if version > state.last_version]
    # The store failing, for a card or a schema-1 card.sig, propagates (the swap fails; the
    # next change replays it).
    # A writer recording its own version has just created that card (and read the others).
    cards = registry._cards(pending, reuse=own is not None)
    _refuse_lost(registry, state, pending, cards)
    for version, data in zip(pending, cards, strict=True):
        try:
            decision = registry._checked_card(version, data)[0]["decision"]
            alias, reason = applicable(decision, state)
            evidence = {k: v for k, v in decision.items() if k not in DECISION_FIELDS}
            if version != own:
                evidence["replayed"] = True  # its writer died before recording it
            state.assign(alias, version, "register", reason, actor, evidence)
        except StoreError:
            raise
        except (UntrustedKey, NotSigned):
            if writing:
                raise
            return state
        except (RegistryError, KeyError, TypeError):
            pass  # an unreadable card: `verify` reports it; it gets no alias
        state.last_version = version
    return state


def _refuse_lost(
    registry: Registry, state: AliasState, versions: list[int], cards: list[bytes | None]
) -> None:
    """LostAliases when a sealed card among `cards`, signed or not, was registered after an
    event `state`'s stored events lack: checked for all of them before any is replayed, so a
    card that stops the replay (unsigned, untrusted) cannot hide the loss behind it."""
    gone = lost.lost_among(registry, state.events[: state.stored], versions, cards)
    if gone:
        raise lost.refusal(registry, *gone[0])
