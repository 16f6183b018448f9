"""The inbox shared through object storage: hosts (here: folders) that share only the store see
each other's digits, removals and relabellings follow and are never undone by another host,
two labels for one image never both train, and a store that is down or emptied loses nothing.
On a folder store and on moto's S3 server."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core.errors import DataError, RegistryError
from mnist_pipeline.inbox import incoming, orphans, pending, store, sync
from mnist_pipeline.inbox.ingest import collect
from mnist_pipeline.inbox.shared import SharedInbox, StoreUnavailable
from tests.example_helpers import draw_digit
from tests.s3_helpers import new_bucket, proxy, use_endpoint


@pytest.fixture(params=["folder", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A shared inbox on each backend."""
    if request.param == "folder":
        (tmp_path / "store").mkdir()
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_url").replace("/registry", "/inbox")


def digit(tmp_path: Path, seed: int) -> bytes:
    return draw_digit(tmp_path / f"digit-{seed}.png", seed).read_bytes()


def labels(inbox: Path) -> list[tuple[int, str]]:
    return [(e.label, e.sha256) for e in store.entries(inbox)]


def nothing_changed(result: sync.SyncResult) -> bool:
    return result == sync.SyncResult()


def test_digits_added_on_one_host_reach_the_other_and_removals_follow(
    location: str, tmp_path: Path
) -> None:
    shared = SharedInbox(location)
    a, b = tmp_path / "a" / "extra", tmp_path / "b" / "extra"
    three = sync.add(shared, a, digit(tmp_path, 1), "one.png", 3, "test").entry
    assert shared.record(three.sha256).label == 3  # in the store as soon as it is added
    got = sync.sync(shared, b, "test")
    assert got.downloaded == [three.sha256] and not got.problems
    (copy,) = store.entries(b)
    assert (copy.label, copy.path.name) == (3, f"{three.sha256}.png")
    assert copy.path.read_bytes() == three.path.read_bytes()
    assert nothing_changed(sync.sync(shared, b, "test"))

    five = store.add(b, digit(tmp_path, 2), "two.png", 5).entry  # dropped in by hand on b
    assert sync.sync(shared, b, "test").published == [five.sha256]
    assert sync.sync(shared, a, "test").downloaded == [five.sha256]
    assert labels(a) == labels(b) == sorted([(3, three.sha256), (5, five.sha256)])

    five_on_b = store.entries(b)[1].path
    five_on_b.unlink()  # gone here without `data remove` (an older snapshot restored)
    assert sync.sync(shared, b, "test").downloaded == [five.sha256]  # the store keeps it

    assert sync.remove(shared, a, [three.sha256]) == [three]  # `data remove` on host a
    assert shared.record(three.sha256) is None
    assert sync.sync(shared, b, "test").deleted_here == [three.sha256]
    sync.remove(shared, b, [five.sha256])
    assert sync.sync(shared, a, "test").deleted_here == [five.sha256]
    assert labels(a) == labels(b) == []
    assert shared.records() == ({}, {})


def test_a_removal_is_never_undone_by_the_host_that_published_it(
    location: str, tmp_path: Path
) -> None:
    shared = SharedInbox(location)
    review, worker = tmp_path / "review" / "extra", tmp_path / "worker" / "extra"
    queue = tmp_path / "review" / "pending"
    png = digit(tmp_path, 6)
    sha = pending.submit(queue, review, png, "upload.png", 6, "token:alice").sha256
    accepted = pending.accept(queue, review, [sha], "bob", publish=sync.publish_all(shared, "t"))
    sync.remember(shared, review, [a.entry for a in accepted])
    assert sync.sync(shared, worker, "test").downloaded == [sha]
    sync.remove(shared, worker, [sha])  # the worker's operator removes it
    assert sync.sync(shared, review, "test").deleted_here == [sha]  # not published again
    assert shared.record(sha) is None and labels(review) == labels(worker) == []


def test_one_image_with_two_labels_never_trains(location: str, tmp_path: Path) -> None:
    shared = SharedInbox(location)
    png = digit(tmp_path, 3)
    assert shared.publish(png, 3, "png", "test") is True
    assert shared.publish(png, 3, "png", "test") is False  # the same label: already there
    with pytest.raises(store.LabelConflict, match=r"labelled 3 in the shared inbox .*not 5"):
        shared.publish(png, 5, "png", "test")
    a = tmp_path / "a" / "extra"
    with pytest.raises(store.LabelConflict, match="not 5"):
        sync.add(shared, a, png, "x.png", 5, "test")
    assert labels(a) == []  # refused by the store: nothing stored here either

    b = tmp_path / "b" / "extra"
    mine = store.add(b, png, "mine.png", 5).entry  # labelled 5 by hand here, 3 in the store
    got = sync.sync(shared, b, "test")
    assert got.conflicts == [mine.sha256] and [label for label, _ in labels(b)] == [3, 5]
    collected = collect(b, 0)
    assert collected.accepted == []
    assert all("labelled [3, 5]" in reason for reason in collected.rejected.values())
    sync.remove(shared, b, [str(mine.path)])  # one copy removed: the conflict resolved here
    assert shared.record(mine.sha256).label == 3 and labels(b) == [(3, mine.sha256)]

    c = tmp_path / "c" / "extra"  # relabelled on another host: the new label replaces the old
    sync.sync(shared, c, "test")
    shared.retract(mine.sha256)
    assert shared.publish(png, 7, "png", "test")
    assert sync.sync(shared, c, "test").downloaded == [mine.sha256]
    assert labels(c) == [(7, mine.sha256)]


def test_an_accept_the_store_refuses_moves_nothing(location: str, tmp_path: Path) -> None:
    shared = SharedInbox(location)
    inbox, queue = tmp_path / "extra", tmp_path / "pending"
    png = digit(tmp_path, 8)
    shared.publish(png, 1, "png", "other host")
    sha = pending.submit(queue, inbox, png, "upload.png", 8, "token:alice").sha256
    with pytest.raises(store.LabelConflict, match="labelled 1 in the shared inbox"):
        pending.accept(queue, inbox, [sha], "bob", publish=sync.publish_all(shared, "t"))
    assert labels(inbox) == [] and [p.sha256 for p in pending.items(queue)] == [sha]


def test_altered_images_and_bad_records_are_reported_and_not_taken(
    location: str, tmp_path: Path
) -> None:
    shared = SharedInbox(location)
    png, fine = digit(tmp_path, 4), digit(tmp_path, 9)
    shared.publish(png, 4, "png", "test")
    shared.publish(fine, 9, "png", "test")
    sha, record = next((s, r) for s, r in shared.records()[0].items() if r.label == 4)
    shared.storage.delete(record.image)
    shared.storage.create(record.image, png + b"tampered")
    bad, elsewhere = "f" * 64, "e" * 64
    shared.storage.create(f"labels/{bad}.json", b"{not json")
    pointing = f'{{"label": 1, "format": "png", "image": "images/{sha}"}}'.encode()
    shared.storage.create(f"labels/{elsewhere}.json", pointing)  # another image's bytes
    b = tmp_path / "b" / "extra"
    got = sync.sync(shared, b, "test")
    assert "does not match its hash" in got.problems[sha]
    assert f"labels/{bad}.json is not a label record" in got.problems[bad]
    assert f"names no bytes of image {elsewhere[:12]}" in got.problems[elsewhere]
    assert [label for label, _ in labels(b)] == [9]  # the rest synced
    shared.storage.delete(record.image)  # repaired: the next sync takes it
    shared.storage.create(record.image, png)
    assert sync.sync(shared, b, "test").downloaded == [sha]


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
    sync.sync(shared, inbox, "test")
    assert dead in shared.image_keys()  # seen unnamed once: not yet
    records, problems = shared.records()
    noted = json.loads(orphans.file(inbox).read_text())
    assert noted["store"] == shared.location and list(noted["first_seen"]) == [dead]
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
    create = shared.storage.create

    def create_after_collection(key: str, data: bytes) -> bool:
        if key.startswith("labels/"):
            for image in shared.image_keys():
                assert shared.delete_unnamed(image)  # another host's sync collected them
        return create(key, data)

    monkeypatch.setattr(shared.storage, "create", create_after_collection)
    assert shared.publish(png, 4, "png", "test") is True
    (record,) = shared.records()[0].values()
    assert shared.image(hashlib.sha256(png).hexdigest(), record) == png


def test_records_written_before_their_image_had_a_key_of_its_own_still_sync(
    location: str, tmp_path: Path
) -> None:
    """A store filled by an earlier release: the bytes at images/<sha256>, no "image" field."""
    shared = SharedInbox(location)
    png = digit(tmp_path, 7)
    sha = hashlib.sha256(png).hexdigest()
    shared.identity(create=True)
    shared.storage.create(f"images/{sha}", png)
    shared.storage.create(f"labels/{sha}.json", b'{"label": 7, "format": "png", "by": "old"}')
    assert sync.sync(shared, tmp_path / "extra", "test").downloaded == [sha]
    assert labels(tmp_path / "extra") == [(7, sha)]
    shared.retract(sha)
    assert shared.records() == ({}, {}) and shared.storage.list("images/") == []


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
        syncing.join(30)


def test_a_sync_reads_the_store_without_holding_the_inbox(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a sync waits on a slow store, `data add` here goes ahead; an image removed here
    meanwhile is not brought back by what the sync read before (it reads the store again)."""
    shared, inbox = SharedInbox(location), tmp_path / "extra"
    first = sync.add(shared, inbox, digit(tmp_path, 1), "1.png", 1, "test").entry
    other = SharedInbox(location)  # another host's digit, for this one to download
    other.publish(digit(tmp_path, 2), 2, "png", "other host")
    with sync_paused_at(shared, inbox, monkeypatch, lambda key: key.startswith("images/")) as done:
        added = store.add(inbox, digit(tmp_path, 3), "3.png", 3).entry  # not blocked
        sync.remove(other, inbox, [first.sha256])  # retracted and deleted here mid-sync
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
    sync.add(shared, inbox, digit(tmp_path, 1), "1.png", 1, "test")
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
    sha = sync.add(shared, tmp_path / "a" / "extra", digit(tmp_path, 3), "3.png", 3, "t").entry
    assert sync.sync(shared, b, "test").downloaded == [sha.sha256]
    shared.storage.delete(f"labels/{sha.sha256}.json")
    shared.storage.create(f"labels/{sha.sha256}.json", b'{"label": "three"}')
    got = sync.sync(shared, b, "test")
    assert "not a label record" in got.problems[sha.sha256] and got.deleted_here == []
    assert labels(b) == [(3, sha.sha256)]
    sync.remove(shared, b, [sha.sha256])  # removing it here removes the bad record too
    assert labels(b) == [] and shared.records() == ({}, {})


def test_a_wiped_store_empties_no_inbox_and_a_new_one_is_filled_again(
    location: str, tmp_path: Path
) -> None:
    shared = SharedInbox(location)
    a, b = tmp_path / "a" / "extra", tmp_path / "b" / "extra"
    sha = sync.add(shared, a, digit(tmp_path, 5), "x.png", 2, "test").entry.sha256
    sync.remove(shared, a, [sha])  # every image removed: the store is empty, not lost
    assert shared.records() == ({}, {}) and shared.identity() is not None
    assert nothing_changed(sync.sync(shared, a, "test"))
    sha = sync.add(shared, a, digit(tmp_path, 5), "x.png", 2, "test").entry.sha256
    assert sync.sync(shared, b, "test").downloaded == [sha]
    for key in shared.storage.list("") + ["inbox.json"]:
        shared.storage.delete(key)  # wiped, or a share mounted empty
    again = SharedInbox(location)
    with pytest.raises(StoreUnavailable, match="has lost its inbox.json .*nothing synced"):
        sync.sync(again, a, "test")
    assert labels(a) == labels(b) == [(2, sha)]
    sync.base_file(a).unlink()  # the operator starts the store afresh from host a
    assert sync.sync(again, a, "test").published == [sha]
    assert sync.sync(SharedInbox(location), b, "test").summary().startswith("0 downloaded")
    assert labels(b) == [(2, sha)]  # a store made afresh is another store: nothing deleted


def test_bad_locations_are_one_line_and_store_nothing(tmp_path: Path) -> None:
    for bad, message in (
        ("s3://", "shared inbox location 's3://' names no bucket"),
        ("s3://Bad_Bucket/x", "is not a valid bucket name"),
        ("ftp://host/x", "unsupported scheme 'ftp'"),
        (str(tmp_path / "unmounted"), "is not a folder: create it"),
    ):
        with pytest.raises(StoreUnavailable, match=message) as refused:
            SharedInbox(bad)
        assert "\n" not in str(refused.value)
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text("inbox:\n  shared: s3://\n")
    image = draw_digit(tmp_path / "d.png", 5)
    added = CliRunner().invoke(app, ["--root", str(root), "data", "add", str(image), "-l", "1"])
    assert isinstance(added.exception, StoreUnavailable)
    assert not (root / "data" / "extra").exists()


@pytest.mark.slow
def test_two_projects_share_digits_through_s3_and_a_store_that_is_down_changes_nothing(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`data add` on one host, `data sync` and ingest on another, through moto behind a proxy
    that stops answering: then add, remove and sync fail naming the endpoint, changing nothing."""
    runner = CliRunner()
    with proxy(s3_endpoint) as store_proxy:
        use_endpoint(monkeypatch, store_proxy.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # a store that is down fails at once
        url = f"s3://{new_bucket(s3_endpoint)}/inbox"
        a, b = tmp_path / "a", tmp_path / "b"
        for root in (a, b):
            root.mkdir()
            (root / "params.yaml").write_text(f"inbox:\n  shared: {url}\n")

        def cli(root: Path, *args: str):  # noqa: ANN202 - typer's Result
            return runner.invoke(app, ["--root", str(root), "data", *args])

        first = cli(a, "add", str(draw_digit(tmp_path / "1.png", 1)), "-l", "1")
        assert first.exit_code == 0 and f"shared: 1 image(s) in {url}" in first.output
        (one,) = labels(a / "data" / "extra")
        store_proxy.down.set()
        for refused in (
            cli(a, "add", str(draw_digit(tmp_path / "2.png", 2)), "-l", "2"),
            cli(a, "remove", one[1][:12]),
            cli(b, "sync"),
        ):
            assert isinstance(refused.exception, StoreUnavailable), refused.output
            assert store_proxy.url in str(refused.exception)
            assert "\n" not in str(refused.exception)
        assert labels(a / "data" / "extra") == [one]  # nothing added, nothing removed
        assert not (b / "data" / "extra").exists() or labels(b / "data" / "extra") == []

        store_proxy.down.clear()
        assert cli(a, "add", str(draw_digit(tmp_path / "2.png", 2)), "-l", "2").exit_code == 0
        synced = cli(b, "sync")
        assert synced.exit_code == 0 and "2 downloaded" in synced.output
        assert labels(a / "data" / "extra") == labels(b / "data" / "extra")
        ingested = runner.invoke(app, ["--root", str(b), "ingest"])
        assert ingested.exit_code == 0, ingested.output
        manifest = (b / "data" / "ingested" / "manifest.json").read_text()
        assert all(sha in manifest for _, sha in labels(b / "data" / "extra"))


def test_a_damaged_record_of_what_was_seen_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    shared, inbox = SharedInbox(tmp_path / "store"), tmp_path / "a" / "extra"
    inbox.mkdir(parents=True)
    sync.base_file(inbox).write_text("{half")
    with pytest.raises(DataError, match=r"cannot read .*\.extra\.shared\.json: .*delete it"):
        sync.sync(shared, inbox, "test")
    assert sync.base_file(inbox).read_text() == "{half"  # left for the operator to look at


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
        assert events.note_added(a, 2, {}, min_new=3, model_name="m", shared=on_a) is None
        assert on_b.count_pending(0) == (2, False)  # host B sees host A's count
        told = events.note_added(b, 1, {}, min_new=3, model_name="m", shared=on_b)
    assert told is not None and told.startswith("warning: could not tell the Prefect server")
    assert told.endswith("3 pending") and on_a.count_pending(0) == (3, False)  # given back
    assert events.read_pending(a) == events.read_pending(b) == 0  # no host's own count
    assert on_a.count_pending(1, claim_at=4) == (4, True) and on_b.count_pending(0) == (0, False)
    png = digit(tmp_path, 7)
    assert sync.add(on_a, a, png, "7.png", 7, "a").new is True
    assert sync.add(on_b, b, png, "7.png", 7, "b").new is False  # the store had it: not counted


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
        thread.join(30)
    assert hosts[0].count_pending(0) == (8, False)
