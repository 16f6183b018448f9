"""`models verify`: every card's seal and signature checked, every file re-hashed, the alias
document (its audit trail's hash chain and signatures, the alias map against the trail's
moves: trail.py, and every event a card was registered after: lost.py) and the rest of the
store accounted for. With trusted keys, reads refuse an alias document whose trail is broken or
does not lead to its aliases (`refuse_forged`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mnist_pipeline.core.errors import RegistryError, StoreError
from mnist_pipeline.registry import aliases as alias_doc
from mnist_pipeline.registry import inputs, keys, lost, trail

if TYPE_CHECKING:
    from mnist_pipeline.registry.aliases import AliasState
    from mnist_pipeline.registry.api import Registry


def audit(registry: Registry) -> list[str]:
    """Every problem of the registry's versions and alias document; [] means intact.
    Unreferenced blobs (a registration that did not commit) are not problems: see garbage()."""
    versions = registry.version_numbers()
    problems = [
        f"v{v} is missing (versions must be consecutive)"
        for v in sorted(set(range(1, max(versions, default=0) + 1)) - set(versions))
    ]
    known = {keys.aliases_key(registry.name)}
    for version, card, damaged in registry.catalogue():
        known.add(keys.card_key(registry.name, version))
        if card is None:
            problems.append(str(damaged))
            continue
        try:
            problems += [f"v{version}: {p}" for p in registry._problems(version, card)]
        except RegistryError as exc:  # a folder or device where a file belongs: the next go on
            if isinstance(exc, StoreError) and exc.whole_store:  # so would every other read
                raise
            problems.append(f"v{version}: {exc}")
        if card.get("schema", 1) < 2:
            known.add(keys.legacy_file(registry.name, version, keys.SIGNATURE_FILE))
        known |= {registry._file_key(card, rel) for rel in card["files"]}
    try:
        found = registry.storage.read_document(keys.aliases_key(registry.name))
        state: AliasState | None = alias_doc.parse(found and found[0], registry._aliases_where())
    except RegistryError as exc:  # the rest of the store is still checked
        if isinstance(exc, StoreError) and exc.whole_store:
            raise
        problems.append(str(exc))
        state = None
    if state is not None:
        problems += _trail_problems(registry, state) + trail.unexplained_starts(state.events)
        # every sealed card, as reads check them: one this host cannot verify names an event
        problems += [
            str(lost.refusal(registry, v, head))
            for v, head in lost.lost(registry, state.events, versions)
        ]
    # versions committed since the listing (the alias document, read after it, may name them):
    # checked by the next verify, and not missing
    listing = registry.storage.list(f"{registry.name}/")
    late = set(keys.committed_versions(registry.name, listing)) - set(versions)
    every = set(versions) | late
    if state is not None:
        problems += _pointing_nowhere(state, every)
    garbage = f"{registry.name}/{keys.BLOBS}/"
    kept = f"{registry.name}/{keys.LOST_ALIASES}/"  # what a restart could not read
    pointers = f"{registry.name}/{keys.INPUTS}/"  # inputs.py: checked on their own
    problems += inputs.problems(registry, listing, every)
    for key in listing:
        if key in known or key.startswith((garbage, kept, pointers)):
            continue
        folder, _, rest = key.removeprefix(f"{registry.name}/").partition("/")
        if (match := keys.VERSION_DIR_RE.fullmatch(folder)) and rest:
            if int(match[1]) in every:
                if int(match[1]) not in late:
                    problems.append(f"{folder}: {rest} is not listed in the card")
            else:  # no card: nothing was committed there (a copy left by hand, say)
                problems.append(f"{folder}/ holds {rest} but no card.json: not a version")
        else:
            problems.append(f"unexpected entry in {registry.location}: {key}")
    return problems


def _pointing_nowhere(state: AliasState, every: set[int]) -> list[str]:
    """The aliases, and the last version the alias document records, naming no version."""
    problems = [
        f"alias {alias!r} points at v{version}, which does not exist"
        for alias, version in sorted(state.aliases.items())
        if version not in every
    ]
    if state.last_version > max(every, default=0):
        problems.append(f"the alias document records v{state.last_version}, which does not exist")
    return problems


class UntrustedAliases(RegistryError):
    """With trusted keys, an alias document whose trail does not verify or lead to its map."""


def refuse_forged(registry: Registry, state: AliasState, revision: str) -> str:
    """`revision` if the alias document `state` is safe to follow, else UntrustedAliases. With
    trusted keys its trail must verify (under `require_signature`, a legacy prefix too: a log
    rewritten as legacy events would otherwise pass) and lead to its aliases; without them
    nothing is checked here."""
    if not registry.signing.trusted:
        return revision
    problems = _trail_problems(registry, state)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UntrustedAliases(
            f"refusing the aliases of {registry._aliases_where()}: {problems[0]}{more}; "
            "see `mnist-pipeline models verify`"
        )
    return revision


def _trail_problems(registry: Registry, state: AliasState) -> list[str]:
    """The alias document's trail checked: its chain and signatures, its moves against the
    aliases and history it sits beside, and `last_version` against the versions it registered."""
    return (
        trail.check(state.events, registry.signing, registry.name)
        + trail.mismatches(state.events, state.aliases, state.history)
        + trail.unrecorded(state.events, state.last_version)
    )
