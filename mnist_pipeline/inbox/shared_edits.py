"""`data add` and `data remove` with a shared inbox (shared.py): the store first, then this
host's inbox folder, so an image the store cannot take is neither stored nor removed here.
What this host has seen in the store is recorded as it goes (seen.py); `sync` (sync.py) brings
in what other hosts changed.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.inbox import lookup, removals, store
from mnist_pipeline.inbox.seen import check_not_lost, note_seen, read_seen
from mnist_pipeline.inbox.shared import SharedInbox


def add(
    shared: SharedInbox,
    inbox: Path,
    data: bytes,
    name: str,
    label: object,
    by: str,
    listed: store.Listing | None = None,
) -> store.Added:
    """`data add` with a shared inbox: the store first, then here (store.Added, `new` when the
    store did not have it). An image here
    with another label, or in the store with another, is a LabelConflict; a store that cannot
    be reached, StoreUnavailable: either way nothing is stored. `listed`: the inbox's Listing
    of a caller adding many (each file hashed once for all of them)."""
    digit, digest, fmt = store.validate(data, name, label)
    inbox.mkdir(parents=True, exist_ok=True)
    listed = store.Listing(inbox) if listed is None else listed
    with store.lock(inbox):
        here = store.find(inbox, digest, listed.entries())
        if here is not None and here.label != digit:
            raise store.LabelConflict(
                f"{name}: this image is already in the inbox labelled {here.label} "
                f"({here.path}); remove it first to label it {digit}"
            )
        check_not_lost(shared, inbox)
        read_seen(inbox, shared)  # a record here that cannot be read: refused before publishing
        published = shared.publish(data, digit, fmt, by)
        added = store.add(inbox, data, name, digit, locked=True, listed=listed)
        note_seen(inbox, shared, {digest: digit})
    return replace(added, new=published)  # new to the store: what every host counts


def remove(
    shared: SharedInbox,
    inbox: Path,
    refs: list[str],
    each: Callable[[list[store.Entry], bool], None] | None = None,
) -> tuple[list[store.Entry], list[str]]:
    """`data remove` with a shared inbox: each image whose every copy here goes is retracted
    from the store first (when the store has it with one of their labels, or a record that
    cannot be read), then deleted here before the next image (`each` hears its entries, and
    whether the store kept it), so a store that goes down partway leaves the images before it
    removed on both sides and the rest untouched. Removing one of two copies (a label conflict)
    leaves the store as it is, and is refused (DataError, nothing removed) when the copy going
    has the store's label: the next sync would bring it back. Returns the entries deleted here
    and the SHA-256 of those the store kept (relabelled or published again elsewhere meanwhile:
    the next sync brings them back). A store that lost its identity is refused, nothing
    removed."""
    with store.lock(inbox):
        chosen = lookup.resolve(inbox, refs)
        check_not_lost(shared, inbox, "removed")  # else the next sync brings them back
        going = {e.path for e in chosen}
        staying: dict[str, set[int]] = {}
        copies: dict[str, list[Path]] = {}
        for entry in store.entries(inbox):
            copies.setdefault(entry.sha256, []).append(entry.path)
            if entry.path not in going:
                staying.setdefault(entry.sha256, set()).add(entry.label)
        gone: dict[str, set[int]] = {}
        for entry in chosen:
            gone.setdefault(entry.sha256, set()).add(entry.label)
        for sha, labels in gone.items():
            if sha in staying:
                _check_resolvable(shared, sha, labels, staying[sha], copies[sha])
        stayed = []
        for sha, labels in gone.items():
            # a copy staying here keeps it in the store; else it is retracted if the store has
            # it with one of these labels, or a record that is not one
            if sha not in staying:  # first: no host may publish it back, once it is gone
                removals.remember(shared, sha, sorted(labels))
            kept = sha not in staying and all(
                shared.retract(sha, label) == "kept" for label in sorted(labels)
            )
            if kept:
                stayed.append(sha)
            mine = [e for e in chosen if e.sha256 == sha]
            lookup.delete(mine)
            if each is not None:
                each(mine, kept)
    return chosen, stayed


def _check_resolvable(
    shared: SharedInbox, sha: str, going: set[int], staying: set[int], copies: list[Path]
) -> None:
    """DataError when the copies of `sha` going here have the store's label and copies with
    other labels stay: the store would hand its label back at the next sync. The error names
    the command that removes every copy (`copies`, by path: no SHA-256 prefix can choose)."""
    # a store that is down raises (nothing is removed here either); a record that is not one
    # is retracted by `remove` whatever its label
    record = shared.readable_record(sha)
    if record is None or record.label not in going or record.label in staying:
        return
    kept = " or ".join(str(label) for label in sorted(staying))
    label = min(staying) if len(staying) == 1 else "N"  # two others: the user chooses
    ours = next((p for p in copies if p.parent.name in {str(k) for k in staying}), copies[0])
    saved = shlex.quote(f"/tmp/{sha[:12]}{ours.suffix}")
    raise DataError(
        f"{sha[:12]}: the shared inbox {shared.location} has it labelled {record.label}; "
        f"removing that copy here while the one labelled {kept} stays would bring it back at "
        f"the next sync. To label it {kept} everywhere, keep a copy out of the inbox first: "
        f"`cp {shlex.quote(str(ours))} {saved}`, then `data remove "
        f"{' '.join(shlex.quote(str(p)) for p in copies)}` (every copy), then `data add --label "
        f"{label} {saved}`"
    )
