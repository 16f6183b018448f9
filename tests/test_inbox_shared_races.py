"""The shared inbox when hosts (and syncs on one host) run at once: retractions racing
publications, leftover bytes, syncs that read the store without the inbox's lock, downloads cut
short, and the retraining trigger's count. On a folder store and on moto's S3 server."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mnist_pipeline.core.errors import RegistryError
from mnist_pipeline.inbox import incoming, orphans, shared_edits, store, sync
from mnist_pipeline.inbox.shared import SharedInbox, StoreUnavailable
from tests.inbox_shared_helpers import digit, labels, nothing_changed


def test_a_retraction_racing_a_publication_leaves_no_record_without_its_image(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Host B publishes the image again just before host A, retracting it, deletes its bytes
    (A has deleted the record and found none): B's record names bytes of its own."""
    a, b = SharedInbox(location), SharedInbox(location)
    png = digit(tmp_path, 6)
    a.publish(png, 6, "png", "a")
    delete = a.storage.delete

    def publish_then_delete(key: str) -> None:
        if key.startswith("images/"):
            assert b.publish(png, 6, "png", "b") is True  # the record A deleted, made again
        delete(key)

    monkeypatch.setattr(a.storage, "delete", publish_then_delete)
    a.retract(hashlib.sha256(png).hexdigest())
    monkeypatch.undo()
    (record,) = b.records()[0].values()
    assert record.label == 6 and b.image(hashlib.sha256(png).hexdigest(), record) == png
    got = sync.sync(b, tmp_path / "c" / "extra", "test")
    assert len(got.downloaded) == 1 and not got.problems
    b.retract(hashlib.sha256(png).hexdigest())
    assert b.records() == ({}, {}) and b.storage.list("images/") == []


def test_a_retraction_leaves_a_record_published_again_since_it_read_one(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Host A reads the record to retract it; meanwhile C retracts it and B publishes the image
    again: A's retraction deletes nothing of B's."""
    a, b, c = (SharedInbox(location) for _ in "abc")
    png = digit(tmp_path, 5)
    sha = hashlib.sha256(png).hexdigest()
    a.publish(png, 5, "png", "a")
    read_document, raced = a.storage.read_document, []

    def read_then_republished(key: str) -> tuple[bytes, str] | None:
        found = read_document(key)
        if not raced:  # retract's read (a folder backend reads again under its lock)
            raced.append(key)
            c.retract(sha)
            assert b.publish(png, 5, "png", "b") is True
        return found

    monkeypatch.setattr(a.storage, "read_document", read_then_republished)
    a.retract(sha)
    (record,) = b.records()[0].values()
    assert b.image(sha, record) == png and len(b.storage.list("images/")) == 1


def test_bytes_no_record_names_are_collected_after_a_grace_period(
    location: str, tmp_path: Path
) -> None:
    """A publisher died between its two writes: its bytes go once this host has seen them
    unnamed for the grace period; named bytes and those of an unreadable record stay."""
    shared, inbox = SharedInbox(location), tmp_path / "extra"
    kept, png, bad = digit(tmp_path, 1), digit(tmp_path, 2), digit(tmp_path, 3)
    shared.publish(kept, 1, "png", "test")
    dead = f"images/{hashlib.sha256(png).hexdigest()}.{'0' * 32}"
    shared.storage.create(dead, png)  # no record will name it
    bad_sha = hashlib.sha256(bad).hexdigest()
    shared.storage.create(f"images/{bad_sha}.{'1' * 32}", bad)
    shared.storage.create(f"labels/{bad_sha}.json", b"{not json")
    synced_from = time.time()
    sync.sync(shared, inbox, "test")
    synced_to = time.time()
    assert dead in shared.image_keys()  # seen unnamed once: not yet
    records, problems = shared.records()
    noted = json.loads(orphans.file(inbox).read_text())
    assert noted["store"] == shared.location and list(noted["first_seen"]) == [dead]
    assert synced_from <= noted["first_seen"][dead] <= synced_to  # seen then, by this host
    assert orphans.collect(shared, inbox, records, set(problems), synced_from) == []
    later = noted["first_seen"][dead] + orphans.GRACE_S
    assert orphans.collect(shared, inbox, records, set(problems), later - 1) == []
    assert orphans.collect(shared, inbox, records, set(problems), later) == [dead]
    assert sorted(shared.image_keys()) == sorted(
        [next(iter(records.values())).image, f"images/{bad_sha}.{'1' * 32}"]
    )
    assert json.loads(orphans.file(inbox).read_text())["first_seen"] == {}


def test_bytes_named_by_a_record_the_sync_did_not_see_are_kept(
    location: str, tmp_path: Path
) -> None:
    """The records were read before a slow publication's record landed: the bytes are unnamed
    in that reading but named when read again before the delete, so they stay."""
    shared, inbox = SharedInbox(location), tmp_path / "extra"
    png = digit(tmp_path, 6)
    shared.publish(png, 6, "png", "test")
    (record,) = shared.records()[0].values()
    noted = {"store": shared.location, "first_seen": {record.image: 0.0}}
    orphans.file(inbox).parent.mkdir(parents=True, exist_ok=True)
    orphans.file(inbox).write_text(json.dumps(noted))
    assert orphans.collect(shared, inbox, {}, set(), orphans.GRACE_S + 1) == []  # stale: none
    assert shared.image(hashlib.sha256(png).hexdigest(), record) == png


def test_a_publication_whose_bytes_were_collected_writes_them_again(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It stalled past the grace period between its writes: its record still finds its image."""
    shared = SharedInbox(location)
    png = digit(tmp_path, 4)
    create, collected = shared.storage.create, []

    def create_after_collection(key: str, data: bytes) -> bool:
        if key.startswith("labels/"):
            for image in shared.image_keys():
                assert shared.delete_unnamed(image)  # another host's sync collected them
                collected.append(image)
        return create(key, data)

    monkeypatch.setattr(shared.storage, "create", create_after_collection)
    assert shared.publish(png, 4, "png", "test") is True
    (record,) = shared.records()[0].values()
    assert collected == [record.image]  # its bytes were gone when its record was written
    assert shared.image(hashlib.sha256(png).hexdigest(), record) == png


@contextmanager
def sync_paused_at(
    shared: SharedInbox,
    inbox: Path,
    monkeypatch: pytest.MonkeyPatch,
    pause_at: Callable[[str], bool],
) -> Iterator[list[sync.SyncResult]]:
    """A sync of `inbox` on another thread, paused at its first read of a key `pause_at`
    accepts while the block runs; the list holds its result after the block."""
    paused, go = threading.Event(), threading.Event()
    read = shared.storage.read

    def read_or_pause(key: str) -> bytes | None:
        if pause_at(key) and not go.is_set():
            paused.set()
            assert go.wait(30)
        return read(key)

    monkeypatch.setattr(shared.storage, "read", read_or_pause)
    done: list[sync.SyncResult] = []
    syncing = threading.Thread(target=lambda: done.append(sync.sync(shared, inbox, "paused")))
    syncing.start()
    assert paused.wait(30)
    try:
        yield done
    finally:
        go.set()
        syncing.join(120)


def test_a_sync_reads_the_store_without_holding_the_inbox(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a sync waits on a slow store, `data add` here goes ahead; an image removed here
    meanwhile is not brought back by what the sync read before (it reads the store again)."""
    shared, inbox = SharedInbox(location), tmp_path / "extra"
    first = shared_edits.add(shared, inbox, digit(tmp_path, 1), "1.png", 1, "test").entry
    other = SharedInbox(location)  # another host's digit, for this one to download
    other.publish(digit(tmp_path, 2), 2, "png", "other host")
    with sync_paused_at(shared, inbox, monkeypatch, lambda key: key.startswith("images/")) as done:
        added = store.add(inbox, digit(tmp_path, 3), "3.png", 3).entry  # not blocked
        shared_edits.remove(other, inbox, [first.sha256])  # retracted and deleted here mid-sync
    (result,) = done
    assert len(result.downloaded) == 1 and result.published == [added.sha256]
    assert first.sha256 not in result.downloaded and not result.problems
    assert sorted(label for label, _ in labels(inbox)) == [2, 3]
    assert nothing_changed(sync.sync(shared, inbox, "test"))


def test_a_sync_finishing_while_another_reads_the_store_is_not_undone(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sync A reads the store, sync B publishes a file dropped in by hand (the folder does not
    change, what this host has seen does), then A goes on: A reads the store again rather than
    take the file for one removed elsewhere."""
    shared, inbox = SharedInbox(location), tmp_path / "extra"
    shared_edits.add(shared, inbox, digit(tmp_path, 1), "1.png", 1, "test")
    dropped = store.add(inbox, digit(tmp_path, 2), "2.png", 2).entry  # by hand: not shared
    with sync_paused_at(shared, inbox, monkeypatch, lambda key: key == "inbox.json") as done:
        # the identity is read after the records: sync A has read them
        assert sync.sync(SharedInbox(location), inbox, "b").published == [dropped.sha256]
    assert done == [sync.SyncResult()]  # nothing deleted here, nothing to do
    assert dropped.path.is_file() and len(labels(inbox)) == 2


def test_a_download_cut_short_keeps_what_it_staged(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store goes down after some images were downloaded: nothing changes in the inbox,
    and the next sync downloads only the others."""
    shared, inbox = SharedInbox(location), tmp_path / "extra"
    for seed in range(4):
        shared.publish(digit(tmp_path, seed), seed, "png", "other host")
    fetched: list[str] = []
    read = shared.storage.read

    def failing_read(key: str) -> bytes | None:
        if key.startswith("images/"):
            if len(fetched) == 2:
                raise RegistryError(f"{key}: the store went away")
            fetched.append(key)
        return read(key)

    monkeypatch.setattr(shared.storage, "read", failing_read)
    monkeypatch.setattr(incoming, "READERS", 1)  # one at a time: the third one fails
    with pytest.raises(StoreUnavailable, match="the store went away"):
        sync.sync(shared, inbox, "test")
    assert labels(inbox) == [] and len(list(incoming.folder(inbox).iterdir())) == 2
    monkeypatch.setattr(shared.storage, "read", read)
    later = SharedInbox(location)
    reads: list[str] = []
    monkeypatch.setattr(later.storage, "read", lambda key: reads.append(key) or read(key))
    assert len(sync.sync(later, inbox, "test").downloaded) == 4
    assert sorted(key for key in reads if key.startswith("images/")) == sorted(
        r.image for r in later.records()[0].values() if r.image not in fetched
    )
    assert not incoming.folder(inbox).exists() and len(labels(inbox)) == 4


def test_an_unreadable_record_leaves_the_copies_here(location: str, tmp_path: Path) -> None:
    """A record that cannot be read is a problem to report, not a removal elsewhere; `data
    remove` of the image takes the record with it."""
    shared, b = SharedInbox(location), tmp_path / "b" / "extra"
    sha = shared_edits.add(
        shared, tmp_path / "a" / "extra", digit(tmp_path, 3), "3.png", 3, "t"
    ).entry
    assert sync.sync(shared, b, "test").downloaded == [sha.sha256]
    shared.storage.delete(f"labels/{sha.sha256}.json")
    shared.storage.create(f"labels/{sha.sha256}.json", b'{"label": "three"}')
    got = sync.sync(shared, b, "test")
    assert "not a label record" in got.problems[sha.sha256] and got.deleted_here == []
    assert labels(b) == [(3, sha.sha256)]
    shared_edits.remove(shared, b, [sha.sha256])  # removing it here removes the bad record too
    assert labels(b) == [] and shared.records() == ({}, {})


def test_digits_added_on_several_hosts_count_toward_one_trigger(
    location: str, tmp_path: Path
) -> None:
    """With a shared inbox the retraining trigger's count is the store's: 2 added on host A and
    1 on host B reach a minimum of 3 (the event then fails to send: the count is given back)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from mnist_pipeline.inbox import events
    from tests.process_helpers import free_port

    on_a, on_b = SharedInbox(location), SharedInbox(location)
    a, b = tmp_path / "a" / "extra", tmp_path / "b" / "extra"
    nobody = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: nobody}):
        assert events.note_added(a, 2, {}, 3, "m", on_a.count_pending) is None
        assert on_b.count_pending(0) == (2, False)  # host B sees host A's count
        told = events.note_added(b, 1, {}, 3, "m", on_b.count_pending)
    assert told is not None and told.startswith("warning: could not tell the Prefect server")
    assert told.endswith("3 pending") and on_a.count_pending(0) == (3, False)  # given back
    assert events.read_pending(a) == events.read_pending(b) == 0  # no host's own count
    assert on_a.count_pending(1, claim_at=4) == (4, True) and on_b.count_pending(0) == (0, False)
    png = digit(tmp_path, 7)
    assert shared_edits.add(on_a, a, png, "7.png", 7, "a").new is True
    assert (
        shared_edits.add(on_b, b, png, "7.png", 7, "b").new is False
    )  # the store had it: not counted


def test_a_count_whose_answer_was_lost_is_not_counted_again(
    location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store applies host A's swap but A never hears so, and host B counts before A's
    retry reads the document again (A's own retry of the PUT then finds B's bytes there):
    A finds its write among the recent ones and stops, so the count is 5 + 1 + 2, not + 1 more."""
    on_a, on_b = SharedInbox(location), SharedInbox(location)
    assert on_a.count_pending(5) == (5, False)
    applied = on_a.storage.swap

    def lost_answer(key: str, data: bytes, revision: str | None) -> bool:
        assert applied(key, data, revision)  # the store took it ...
        assert on_b.count_pending(2) == (8, False)  # ... then another host counted ...
        monkeypatch.setattr(on_a.storage, "swap", applied)
        return False  # ... and this host heard only a refusal

    monkeypatch.setattr(on_a.storage, "swap", lost_answer)
    assert on_a.count_pending(1, claim_at=100) == (6, False)  # what its write counted
    assert on_b.count_pending(0) == (8, False)


def test_concurrent_counts_are_all_kept(location: str) -> None:
    """Compare-and-swap: 8 hosts adding at once lose none of each other's images."""
    hosts = [SharedInbox(location) for _ in range(8)]
    go = threading.Barrier(len(hosts))

    def add(host: SharedInbox) -> None:
        go.wait()
        host.count_pending(1)

    threads = [threading.Thread(target=add, args=(host,)) for host in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "a count still retrying"
    assert hosts[0].count_pending(0) == (8, False)
