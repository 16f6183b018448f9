"""The alias document replaced by compare-and-swap: read it with its revision, apply a change,
write only if the revision is unchanged, else read again and re-apply (commit.py registers,
moves.py moves aliases)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.registry import aliases as alias_doc
from mnist_pipeline.registry import keys
from mnist_pipeline.registry.aliases import AliasState

if TYPE_CHECKING:
    from mnist_pipeline.registry.api import Registry

SWAP_ATTEMPTS = 100
T = TypeVar("T")


def swap_aliases(
    registry: Registry,
    change: Callable[[AliasState], T],
    actor: str | None = None,
    own: int | None = None,
    listed: list[int] | None = None,
) -> T:
    """Apply `change` to the current alias state (decisions replayed, `own` as registered by
    `actor`, others marked replayed by it) and store it by compare-and-swap, re-reading and
    re-applying on conflict: every event is chained to the log as it is stored. An attempt
    refused although it was stored (its answer lost, another writer's on top before the retry)
    is found in the re-read log by its events' hashes, and not applied again. `listed`: the
    committed versions, up to `own` without a gap, as the caller listed them before this call;
    the first attempt replays those on the alias document as last read (after that listing),
    without asking the store again (a version committed since is replayed by the next reader,
    as one committed just after a listing would be; a document changed since fails the swap's
    revision, and the next attempt reads both again)."""
    registry.signing.require_signer()  # an unsigned event would fail verify forever
    key = keys.aliases_key(registry.name)
    tried: tuple[set[str], T] | None = None  # the last refused attempt's events, and result
    versions = listed
    for _ in range(SWAP_ATTEMPTS):
        recent = versions is not None
        state, revision = registry._state_and_revision(versions, actor, own, True, recent)
        versions = None  # a retry lists them again
        if tried is not None and tried[0] & {event.get("sha256") for event in state.events}:
            return tried[1]
        before = len(state.events)
        result = change(state)
        if registry.storage.swap(key, alias_doc.dump(state), revision):
            return result
        tried = ({event["sha256"] for event in state.events[before:]}, result)
    raise RegistryError(
        f"{registry.location}: the alias document kept changing under {SWAP_ATTEMPTS} attempts"
    )
