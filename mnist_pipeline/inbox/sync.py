"""A host's inbox folder kept in step with the shared inbox (shared.py), which is the truth.

With `inbox.shared` set, `data add`, `data accept` and `data remove` change the store first
(shared_edits.py, review_shared.accept: an image the store cannot take is not stored or
removed here either) and this folder second. `sync` then brings the folder in line with the
store, using what this host has ever seen there (data/.extra.shared.json: image SHA-256 -> the
label it last saw):

    store and here, same label     nothing
    store and here, other label    here as last seen, the store's since changed: the store's
                                   label replaces this one (relabelled elsewhere); otherwise
                                   (never seen, or changed here by hand): both kept, so ingest
                                   refuses the image until one is removed with `data remove`
                                   (the one with the store's label only with every copy)
    store only                     downloaded (SHA-256 checked); a file missing here (an older
                                   snapshot restored) never removes anything from the store
    here only                      marked removed in the store (removals.py): removed
                                   elsewhere, so its copies with the label seen or removed are
                                   deleted here (one under another label, never in the store,
                                   stays, with a warning); seen before but not marked: lost by
                                   the store, kept here and reported; never seen (a file
                                   dropped in by hand): published

The store's identity (inbox.json, made with its first image) tells a store whose images were all
removed from one that lost everything: a store without it, where this host has synced before, is
refused (a wiped bucket or an unmounted share must not empty every inbox), and a store made
afresh is another store (nothing here was seen there). The store is read before the inbox's
lock is taken; the folder changes under it (`sync`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from mnist_pipeline.core.errors import DataError, describe_os_error
from mnist_pipeline.core.regular_file import read_regular
from mnist_pipeline.data.manifest import file_sha256
from mnist_pipeline.inbox import incoming, orphans, removals, store
from mnist_pipeline.inbox.seen import base_file, check_not_lost, note_seen, read_seen
from mnist_pipeline.inbox.shared import Record, SharedInbox, StoreUnavailable


@dataclass
class SyncResult:
    """What one sync changed, by image SHA-256."""

    downloaded: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    deleted_here: list[str] = field(default_factory=list)  # removed from the store elsewhere
    conflicts: list[str] = field(default_factory=list)  # two labels: ingest refuses the image
    problems: dict[str, str] = field(default_factory=dict)  # not synced, and why
    warnings: list[str] = field(default_factory=list)  # housekeeping that did not happen

    def summary(self) -> str:
        parts = [
            f"{len(self.downloaded)} downloaded",
            f"{len(self.published)} published",
            f"{len(self.deleted_here)} deleted here (removed from the store)",
            f"{len(self.conflicts)} label conflict(s)",
        ]
        return ", ".join(parts) + (f", {len(self.problems)} not synced" if self.problems else "")


def publish_entry(shared: SharedInbox, entry: store.Entry, by: str) -> None:
    """Publish one image of this inbox (checked as `data add` checks it). LabelConflict when the
    store has it with another label; StoreUnavailable when it cannot be reached."""
    data = read_regular(entry.path, store.MAX_FILE_BYTES)  # dropped in by hand: any size
    _, digest, fmt = store.validate(data, str(entry.path), entry.label)
    if digest != entry.sha256:  # never publish bytes other than those listed as this image
        raise DataError(f"{entry.path} changed while the inbox was synced: run `data sync` again")
    shared.publish(data, entry.label, fmt, by)


def sync(shared: SharedInbox, inbox: Path, by: str) -> SyncResult:
    """Bring the inbox folder in line with the store (see the module's table).

    The store is read (its records, then its identity, then the images this folder lacks,
    staged on disk by incoming.py) before the inbox's lock is taken, so a slow store holds up
    no `data add`, accept or `/feedback` here while it is read. Under the lock the folder and
    what this host has seen are compared with what they were before that reading; if either
    changed meanwhile (an add, a removal, another sync), the store's records are read again
    there, so a stale reading never undoes a change. A record that cannot be read leaves this
    host's copies of its image as they are."""
    result = SyncResult()
    inbox.mkdir(parents=True, exist_ok=True)
    before, started = _snapshot(inbox), time.time()  # the reading's age is counted from here
    remote, result.problems = _read_store(shared)
    here, unreadable = _entries_here(inbox)
    labelled = {(sha, e.label) for sha, entries in here.items() for e in entries}
    staged = incoming.prefetch(shared, inbox, remote, labelled)
    with store.lock(inbox):
        if _snapshot(inbox) != before:  # changed here while the store was read: read both again
            remote, result.problems = _read_store(shared)
            here, unreadable = _entries_here(inbox)
        result.problems |= unreadable
        check_not_lost(shared, inbox, "synced")
        seen = read_seen(inbox, shared)
        done: set[str] = set()
        try:
            for sha in sorted((remote.keys() | here.keys()) - result.problems.keys()):
                local = here.get(sha, [])
                _sync_one(shared, inbox, sha, remote.get(sha), local, seen, by, result, staged)
                done.add(sha)
        finally:  # also when the store goes away midway: what was synced counts as seen
            note_seen(inbox, shared, _seen_after(remote, here, result, done))
        incoming.clear(inbox)
    try:  # housekeeping: a store gone by now, or a full disk here, fails no sync
        orphans.collect(shared, inbox, remote, set(result.problems), started)
    except (StoreUnavailable, OSError) as exc:
        result.warnings.append(f"leftover bytes not collected: {exc}")
    return result


def _seen_after(
    remote: dict[str, Record],
    here: dict[str, list[store.Entry]],
    result: SyncResult,
    done: set[str],
) -> dict[str, int]:
    """What a sync that synced the images `done` adds to what this host has seen: each one's
    label in the store (or as published from here). An image left with a problem, or not
    reached, adds nothing: what was seen of it before stays, so a relabel made elsewhere that
    failed to arrive here is still followed by the next sync, not taken for a conflict."""
    synced = done - result.problems.keys()
    seen = {sha: remote[sha].label for sha in synced if sha in remote}
    return seen | {sha: here[sha][0].label for sha in result.published}


def _read_store(shared: SharedInbox) -> tuple[dict[str, Record], dict[str, str]]:
    """The store's records, then its identity read afresh: a store wiped after the identity
    was last read must not pass for an emptied one."""
    records = shared.records()
    shared.identity(fresh=True)
    return records


def _entries_here(inbox: Path) -> tuple[dict[str, list[store.Entry]], dict[str, str]]:
    """The image files here by SHA-256, and those that cannot be read, with why."""
    here: dict[str, list[store.Entry]] = defaultdict(list)
    unreadable = {}
    for label, path in store.listing(inbox)[0]:
        try:
            sha = file_sha256(path)
        except OSError as exc:
            unreadable[str(path)] = describe_os_error(exc)
            continue
        here[sha].append(store.Entry(label, path, sha))
    return here, unreadable


def _snapshot(inbox: Path) -> set[tuple[str, int, int]]:
    """Every file in the inbox folder, and the record of what this host has seen, with its
    size and modification time."""
    found = set()
    for path in [base_file(inbox), *inbox.rglob("*")]:
        try:
            info = path.stat()
        except OSError:
            continue  # absent, or removed while listed: the next snapshot differs
        found.add((str(path), info.st_size, info.st_mtime_ns))
    return found


def _sync_one(
    shared: SharedInbox,
    inbox: Path,
    sha: str,
    record: Record | None,
    local: list[store.Entry],
    seen: dict[str, int],
    by: str,
    result: SyncResult,
    staged: incoming.Staged,
) -> None:
    labels = {e.label for e in local}
    try:
        if record is not None and local:
            if labels == {record.label}:
                return
            taken = record.label not in labels
            if taken:
                incoming.take(shared, inbox, sha, record, staged)
            before = seen.get(sha)
            # relabelled elsewhere since seen: the store's label replaces the one seen (also
            # when a sync that took the new label was cut short before the old copy went)
            if before in labels and before != record.label and labels <= {before, record.label}:
                for entry in local:
                    if entry.label != record.label:
                        entry.path.unlink(missing_ok=True)
                result.downloaded.append(sha)
            else:
                result.conflicts.append(sha)
                if taken:  # the store's copy is here now too: a file this sync wrote
                    result.downloaded.append(sha)
        elif record is not None:
            incoming.take(shared, inbox, sha, record, staged)
            result.downloaded.append(sha)
        elif removals.was_removed(shared, sha):  # removed elsewhere
            deleted, warning = removals.delete_removed(shared, sha, local, seen.get(sha))
            if deleted:
                result.deleted_here.append(sha)
            if warning is not None:
                result.warnings.append(warning)
        elif sha in seen:  # gone from the store, and no removal marked it first: lost there
            result.problems[sha] = removals.lost_from_store(shared, sha, labels)
        elif len(labels) > 1:
            result.conflicts.append(sha)
        else:
            publish_entry(shared, local[0], by)
            result.published.append(sha)
    except StoreUnavailable:
        raise  # stop: what was done stays done, and the next sync goes on from here
    except DataError as exc:  # a label conflict, an altered image, a file here that is no image
        result.problems[sha] = str(exc)
    except OSError as exc:
        result.problems[sha] = describe_os_error(exc)
