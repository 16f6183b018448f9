"""Reading a registry's list of versions: what a reference (a number or an alias) names, and
every version's card, each trusted or not on its own (api.Registry's methods of those names)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mnist_pipeline.core.errors import RegistryError, StoreError
from mnist_pipeline.registry import keys
from mnist_pipeline.registry.aliases import AliasState

if TYPE_CHECKING:
    from mnist_pipeline.registry.api import Registry


def version_of(registry: Registry, ref: str | int, state: AliasState | None = None) -> int:
    """The version number a reference names; unknown ones list what exists."""
    versions = registry.version_numbers()
    listed = ", ".join(map(str, versions)) or "none registered"
    named = keys.parse_ref(ref)
    if isinstance(named, int):
        if named not in versions:
            raise RegistryError(f"unknown version {ref!r} of {registry.name}; versions: {listed}")
        return named
    alias = named
    state = state or registry.state(versions)
    if alias not in state.aliases:
        known = ", ".join(f"{a} -> v{v}" for a, v in sorted(state.aliases.items()))
        raise RegistryError(
            f"unknown alias {alias!r} of {registry.name}; aliases: {known or 'none'}; "
            f"versions: {listed}"
        )
    version = state.aliases[alias]
    if version not in versions and version not in registry.version_numbers():
        # listed again: the version may have been committed between the listing and the
        # alias document's read
        raise RegistryError(f"alias {alias!r} points at v{version}, which does not exist")
    return version


def catalogue(
    registry: Registry, strict: bool = False, reuse: bool = False
) -> list[tuple[int, dict[str, Any] | None, str | None]]:
    """(version, card, None) for every version, or (version, None, problem) when its card
    cannot be trusted: one damaged version does not hide the others. A store that does not
    answer at all (StoreError.whole_store) fails the whole, and with `strict` so does any
    StoreError, as deciding on part of it would. `reuse`: a card read earlier in the same
    registration is not read again (see `_cards`)."""
    versions = registry.version_numbers()
    try:
        stored: list[bytes | None] | None = registry._cards(versions, reuse)
    except StoreError as exc:
        if exc.whole_store:  # read one by one, each would wait for no answer again
            raise
        stored = None
    except RegistryError:  # one card could not be read: one by one, so it hides no other
        stored = None
    entries: list[tuple[int, dict[str, Any] | None, str | None]] = []
    for i, version in enumerate(versions):
        try:
            data = registry._cards([version], reuse)[0] if stored is None else stored[i]
            entries.append((version, registry._checked_card(version, data)[0], None))
        except RegistryError as exc:
            if isinstance(exc, StoreError) and (strict or exc.whole_store):
                raise
            entries.append((version, None, str(exc)))
    return entries
