"""The inbox shared through object storage: hosts (here: folders) that share only the store see
each other's digits, removals and relabellings follow and are never undone by another host,
two labels for one image never both train, and a store that is down or emptied loses nothing.
On a folder store and on moto's S3 server. Races between hosts: test_inbox_shared_races.py."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core.errors import DataError, ParamsError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.inbox import (
    incoming,
    pending,
    review_move,
    review_queue,
    review_shared,
    seen,
    shared_edits,
    store,
    sync,
)
from mnist_pipeline.inbox.ingest import collect
from mnist_pipeline.inbox.shared import LABELS, SharedInbox, StoreUnavailable
from tests.example_helpers import draw_digit
from tests.inbox_shared_helpers import digit, labels, nothing_changed
from tests.s3_helpers import new_bucket, proxy, use_endpoint


def test_digits_added_on_one_host_reach_the_other_and_removals_follow(
    location: str, tmp_path: Path
) -> None:
    shared = SharedInbox(location)
    a, b = tmp_path / "a" / "extra", tmp_path / "b" / "extra"
    three = shared_edits.add(shared, a, digit(tmp_path, 1), "one.png", 3, "test").entry
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

    assert shared_edits.remove(shared, a, [three.sha256]) == ([three], [])  # `data remove` on a
    assert shared.record(three.sha256) is None
    assert sync.sync(shared, b, "test").deleted_here == [three.sha256]
    shared_edits.remove(shared, b, [five.sha256])
    assert sync.sync(shared, a, "test").deleted_here == [five.sha256]
    assert labels(a) == labels(b) == []
    assert shared.records() == ({}, {})


def test_an_image_edited_in_place_is_neither_overwritten_nor_lost(
    location: str, tmp_path: Path
) -> None:
    """The file `data add` named after image X holds image Y now (edited in place). A sync
    must not write X over it, which lost Y on every host while reporting it published: X is
    a problem until the file is moved, Y is published from it, and `data add` of X again
    refuses to overwrite it too."""
    shared = SharedInbox(location)
    a = tmp_path / "a" / "extra"
    x, y = digit(tmp_path, 1), digit(tmp_path, 2)
    added = shared_edits.add(shared, a, x, "x.png", 3, "test").entry
    added.path.write_bytes(y)  # an editor saved another digit over it
    got = sync.sync(shared, a, "test")
    assert added.path.read_bytes() == y
    assert "holds other bytes than the image its name says" in got.problems[added.sha256]
    y_sha = hashlib.sha256(y).hexdigest()
    assert got.published == [y_sha] and shared.record(y_sha).label == 3
    assert shared.image(added.sha256, shared.record(added.sha256)) == x  # still in the store
    with pytest.raises(DataError, match="holds other bytes than the image its name says"):
        store.add(a, x, "x-again.png", 3)
    assert added.path.read_bytes() == y


def test_a_removal_elsewhere_takes_only_the_label_it_removed(location: str, tmp_path: Path) -> None:
    """Host a labelled an image 3 by hand while the store has it as 5 (a conflict: both kept
    here). Host b removes its 5: a's copy labelled 5 goes, and its own 3, never in the store,
    stays, with a warning that says how to publish it. Before, a's 3 was deleted too."""
    shared = SharedInbox(location)
    a, b = tmp_path / "a" / "extra", tmp_path / "b" / "extra"
    image = digit(tmp_path, 1)
    five = shared_edits.add(shared, b, image, "x.png", 5, "test").entry
    store.add(a, image, "mine.png", 3)
    assert sync.sync(shared, a, "test").conflicts == [five.sha256]
    assert labels(a) == [(3, five.sha256), (5, five.sha256)]
    shared_edits.remove(shared, b, [five.sha256])
    after = sync.sync(shared, a, "test")
    assert after.deleted_here == [five.sha256] and labels(a) == [(3, five.sha256)]
    (warning,) = after.warnings
    assert "labelled 5 there); the copy labelled 3 here was never there and stays" in warning
    assert "`data add --label 3 FILE` with a copy of it publishes it" in warning
    assert shared.record(five.sha256) is None  # not published back by the sync
    assert sync.sync(shared, a, "test").deleted_here == []  # and kept at the next one
    fresh = tmp_path / "c" / "extra"  # a host that never saw it: the marker names what went
    for label in (3, 5):  # copied in by hand under two labels
        (fresh / str(label)).mkdir(parents=True)
        (fresh / str(label) / "x.png").write_bytes(image)
    done = sync.sync(shared, fresh, "test")
    assert done.deleted_here == [five.sha256] and labels(fresh) == [(3, five.sha256)]
    assert "labelled 5 there); the copy labelled 3 here was never there" in done.warnings[0]


def test_a_removal_marker_names_every_label_removed(location: str, tmp_path: Path) -> None:
    """Removed as 3, then (its marker not cleared) as 5: a host that never saw it deletes
    both; a marker that cannot be read deletes nothing and is replaced by the next removal."""
    from mnist_pipeline.inbox import removals

    shared = SharedInbox(location)
    sha = hashlib.sha256(digit(tmp_path, 1)).hexdigest()
    removals.remember(shared, sha, [3])
    removals.remember(shared, sha, [5, 3])
    removals.remember(shared, sha, [5])  # nothing new: left as it is
    assert removals.removed_labels(shared, sha) == {3, 5}
    fresh = tmp_path / "c" / "extra"
    for label in (3, 5, 7):  # copied in by hand under three labels
        (fresh / str(label)).mkdir(parents=True)
        (fresh / str(label) / "x.png").write_bytes(digit(tmp_path, 1))
    done = sync.sync(shared, fresh, "test")
    assert done.deleted_here == [sha] and labels(fresh) == [(7, sha)] and not done.published
    shared.storage.swap(
        removals.key(sha), b"[" * 100_000, shared.storage.read_document(removals.key(sha))[1]
    )  # damaged, and nested too deep for json.loads
    assert removals.removed_labels(shared, sha) == set()
    done = sync.sync(shared, fresh, "test")  # nothing known removed: kept, and not published
    assert labels(fresh) == [(7, sha)] and not done.published and not done.problems
    assert (
        "cannot be read, so the labels removed are unknown: the copy labelled 7 here stays"
        in (done.warnings[0])
    )
    removals.remember(shared, sha, [7])
    assert removals.removed_labels(shared, sha) == {7}


def test_an_image_the_store_lost_is_kept_and_reported_not_deleted(
    location: str, tmp_path: Path
) -> None:
    """Host b saw the image; its record goes from the store without `data remove` (deleted by
    hand, a lifecycle rule): b keeps its copy and says so, until it is removed or added again."""
    shared = SharedInbox(location)
    a, b = tmp_path / "a" / "extra", tmp_path / "b" / "extra"
    added = shared_edits.add(shared, a, digit(tmp_path, 1), "one.png", 3, "test").entry
    assert sync.sync(shared, b, "test").downloaded == [added.sha256]
    shared.storage.delete(f"{LABELS}{added.sha256}.json")  # not a removal: no marker first
    done = sync.sync(shared, b, "test")
    assert done.deleted_here == [] and labels(b) == [(3, added.sha256)]
    assert "gone from it without a removal" in done.problems[added.sha256]
    assert "`data add --label 3` the copy" in done.problems[added.sha256]
    shared_edits.remove(shared, a, [added.sha256])  # removed on purpose: now it goes everywhere
    assert sync.sync(shared, b, "test").deleted_here == [added.sha256] and labels(b) == []


def test_a_store_named_two_ways_is_one_store_to_a_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`inbox.shared: ../store` read with `--root .` and with the flow's resolved workdir: the
    host's record of what it saw must hold for both, or an image removed elsewhere would look
    dropped in by hand and be published again."""
    from mnist_pipeline.inbox.shared import open_shared

    (tmp_path / "store").mkdir()
    host = tmp_path / "host"
    host.mkdir()
    monkeypatch.chdir(host)
    by_cli = open_shared("../store", Layout(Path(".")))  # `mnist-pipeline --root . data sync`
    by_flow = open_shared("../store", Layout(host.resolve()))  # the flow's workdir
    assert by_cli is not None and by_flow is not None
    assert by_cli.location == by_flow.location == str(tmp_path.resolve() / "store")
    elsewhere = SharedInbox(str(tmp_path / "store"))
    added = shared_edits.add(
        elsewhere, tmp_path / "a" / "extra", digit(tmp_path, 1), "one.png", 3, "t"
    )
    inbox = host / "data" / "extra"
    assert sync.sync(by_cli, inbox, "test").downloaded == [added.entry.sha256]
    shared_edits.remove(elsewhere, tmp_path / "a" / "extra", [added.entry.sha256])
    done = sync.sync(by_flow, inbox, "test")
    assert done.deleted_here == [added.entry.sha256] and done.published == []
    assert elsewhere.record(added.entry.sha256) is None


def test_what_a_host_saw_is_kept_by_the_stores_identity() -> None:
    """A store is known by its identity wherever it is named; before it has one (no image
    yet), by where it is."""
    assert seen._same_store(["/srv/store", "id-1"], "../store", "id-1")
    assert not seen._same_store(["/srv/store", "id-1"], "/srv/store", "id-2")  # made afresh
    assert seen._same_store(["/srv/store", None], "/srv/store", None)
    assert not seen._same_store(["/srv/store", None], "/srv/other", None)
    assert not seen._same_store(["/srv/store", "id-1"], "/srv/store", None)  # lost its identity
    assert not seen._same_store("/srv/store", "/srv/store", None)  # not a record of a store


def test_a_host_that_never_synced_does_not_publish_a_removed_image_back(
    location: str, tmp_path: Path
) -> None:
    """A new worker given an older snapshot of data/extra (no record of what it saw) took a
    removed image for one dropped in by hand, and published it back to every host."""
    import shutil

    from mnist_pipeline.inbox import removals

    shared = SharedInbox(location)
    a, b, new = (tmp_path / host / "extra" for host in ("a", "b", "new"))
    gone = shared_edits.add(shared, a, digit(tmp_path, 1), "one.png", 3, "test").entry
    kept = shared_edits.add(shared, a, digit(tmp_path, 2), "two.png", 4, "test").entry
    sync.sync(shared, b, "test")
    shutil.copytree(b, new)  # the snapshot, without b's record of what it saw
    shared_edits.remove(shared, a, [gone.sha256])
    assert removals.was_removed(shared, gone.sha256)
    done = sync.sync(shared, new, "test")
    assert done.deleted_here == [gone.sha256] and done.published == [] and not done.problems
    assert shared.record(gone.sha256) is None and labels(new) == [(4, kept.sha256)]
    shared_edits.remove(shared, new, [kept.sha256])  # removed where it was never seen: marked too
    assert removals.was_removed(shared, kept.sha256)

    again = shared_edits.add(
        shared, b, digit(tmp_path, 1), "one-again.png", 3, "test"
    )  # `data add`
    assert again.new and not removals.was_removed(shared, gone.sha256)  # added again: cleared
    assert sync.sync(shared, new, "test").downloaded == [gone.sha256]

    third = shared_edits.add(shared, a, digit(tmp_path, 4), "four.png", 6, "test").entry
    cut_short = SharedInbox(location)  # the store goes down as the removal retracts
    cut_short.retract = lambda *_: (_ for _ in ()).throw(StoreUnavailable("store down"))
    with pytest.raises(StoreUnavailable):
        shared_edits.remove(cut_short, a, [third.sha256])
    assert removals.was_removed(shared, third.sha256)  # marked before the retraction ...
    assert shared.record(third.sha256) is not None  # ... which did not happen: the image stays
    assert sync.sync(shared, new, "test").downloaded == [third.sha256]  # the marker unread


def test_a_removal_is_never_undone_by_the_host_that_published_it(
    location: str, tmp_path: Path
) -> None:
    shared = SharedInbox(location)
    review, worker = tmp_path / "review" / "extra", tmp_path / "worker" / "extra"
    png = digit(tmp_path, 6)
    sha = review_queue.submit(shared, png, "upload.png", 6, "token:alice").sha256
    review_shared.accept(shared, review, [sha], "bob")
    assert sync.sync(shared, worker, "test").downloaded == [sha]
    shared_edits.remove(shared, worker, [sha])  # the worker's operator removes it
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
        shared_edits.add(shared, a, png, "x.png", 5, "test")
    assert labels(a) == []  # refused by the store: nothing stored here either

    b = tmp_path / "b" / "extra"
    mine = store.add(b, png, "mine.png", 5).entry  # labelled 5 by hand here, 3 in the store
    got = sync.sync(shared, b, "test")
    assert got.conflicts == [mine.sha256] and [label for label, _ in labels(b)] == [3, 5]
    assert got.downloaded == [mine.sha256]  # the store's 3 was written here: said so
    assert got.summary().startswith("1 downloaded, 0 published, 0 deleted")
    collected = collect(b, 0)
    assert collected.accepted == []
    assert len(collected.rejected) == 2, collected.rejected  # both copies, each said why
    assert all("labelled [3, 5]" in reason for reason in collected.rejected.values())
    shared_edits.remove(shared, b, [str(mine.path)])  # one copy removed: the conflict resolved here
    assert shared.record(mine.sha256).label == 3 and labels(b) == [(3, mine.sha256)]

    c = tmp_path / "c" / "extra"  # relabelled on another host: the new label replaces the old
    sync.sync(shared, c, "test")
    shared.retract(mine.sha256)
    assert shared.publish(png, 7, "png", "test")
    assert sync.sync(shared, c, "test").downloaded == [mine.sha256]
    assert labels(c) == [(7, mine.sha256)]

    d = tmp_path / "d" / "extra"  # the store's label replaced by hand here, not with the CLI
    sync.sync(shared, d, "test")
    ((_, path),) = store.listing(d)[0]
    path.unlink()  # the store's 7 deleted here by hand, and the image added again as a 2
    hand = store.add(d, png, "mine.png", 2).entry
    got = sync.sync(shared, d, "test")
    assert got.conflicts == [mine.sha256] and got.downloaded == [mine.sha256]  # the 7 again
    assert hand.path.is_file()  # never deleted silently
    assert sorted(lab for lab, _ in labels(d)) == [2, 7] and hand.path.is_file()


def test_a_label_conflict_is_resolved_for_the_label_kept_here_too(
    location: str, tmp_path: Path
) -> None:
    """The store has an image as 3, a copy here was labelled 5 by hand. Removing only the 3
    here would come back with the next sync, so it is refused, saying how; removing both copies
    retracts the store's 3 whichever is named first, and the image can be added again as 5."""
    shared = SharedInbox(location)
    png = digit(tmp_path, 3)
    assert shared.publish(png, 3, "png", "test")
    b = tmp_path / "b" / "extra"
    mine = store.add(b, png, "mine.png", 5).entry
    assert sync.sync(shared, b, "test").conflicts == [mine.sha256]
    (theirs,) = [e for e in store.entries(b) if e.label == 3]
    with pytest.raises(DataError) as refused:
        shared_edits.remove(shared, b, [str(theirs.path)])
    message = str(refused.value)
    assert "labelled 3" in message and "would bring it back" in message
    advised = sorted([str(theirs.path), str(mine.path)])  # no SHA-256 prefix can choose
    assert f"`data remove {' '.join(advised)}` (every copy)" in message
    saved = f"/tmp/{mine.sha256[:12]}.png"  # the only copy labelled 5 is kept out first
    assert f"`cp {mine.path} {saved}`, then" in message and f"--label 5 {saved}`" in message
    assert sorted(lab for lab, _ in labels(b)) == [3, 5] and shared.record(mine.sha256).label == 3
    seven = b / "7" / mine.path.name  # a third copy, by hand: two other labels stay
    seven.parent.mkdir()
    seven.write_bytes(mine.path.read_bytes())
    with pytest.raises(DataError) as two:
        shared_edits.remove(shared, b, [str(theirs.path)])
    assert "To label it 5 or 7 everywhere" in str(two.value)  # the user chooses
    assert str(two.value).endswith(f"`data add --label N {saved}`")
    seven.unlink()

    down = SharedInbox(location)  # the store unreachable: nothing is removed here either
    down.record = lambda sha: (_ for _ in ()).throw(StoreUnavailable("store down"))
    with pytest.raises(StoreUnavailable):
        shared_edits.remove(down, b, [str(theirs.path)])
    assert sorted(lab for lab, _ in labels(b)) == [3, 5]
    key = f"{LABELS}{mine.sha256}.json"  # the store's record damaged: the 3 goes as before
    good = shared.storage.read_document(key)
    assert shared.storage.swap(key, b"{", good[1])
    assert shared_edits.remove(shared, b, [str(theirs.path)])[0] == [theirs]
    assert shared.storage.swap(key, good[0], shared.storage.read_document(key)[1])
    assert sync.sync(shared, b, "test").conflicts == [mine.sha256]  # the store's 3 comes back
    removed, stayed = shared_edits.remove(
        shared, b, [str(theirs.path), str(mine.path)]
    )  # 5 named last
    assert len(removed) == 2 and stayed == [] and shared.record(mine.sha256) is None
    shared_edits.add(shared, b, png, "mine.png", 5, "test")
    assert shared.record(mine.sha256).label == 5 and labels(b) == [(5, mine.sha256)]
    assert nothing_changed(sync.sync(shared, b, "test"))


def test_an_accept_the_store_refuses_moves_nothing(location: str, tmp_path: Path) -> None:
    shared = SharedInbox(location)
    inbox = tmp_path / "extra"
    png = digit(tmp_path, 8)
    shared.publish(png, 1, "png", "other host")
    sha = review_queue.submit(shared, png, "upload.png", 8, "token:alice").sha256
    with pytest.raises(store.LabelConflict, match="labelled 1 in the shared inbox") as refused:
        review_shared.accept(shared, inbox, [sha], "bob")
    assert labels(inbox) == [] and [p.sha256 for p in review_queue.queue(shared).found] == [sha]
    assert f"`data sync`, then `data remove {sha[:12]}`" in str(refused.value)
    assert sync.sync(shared, inbox, "test").downloaded == [sha]  # the advice, on this host
    shared_edits.remove(shared, inbox, [sha[:12]])
    review_shared.accept(shared, inbox, [sha], "bob")
    assert labels(inbox) == [(8, sha)] and shared.record(sha).label == 8


def test_an_unreadable_record_of_what_was_seen_stops_add_and_accept_before_the_store(
    location: str, tmp_path: Path
) -> None:
    """`data add` and `data accept` stored the image in the store, then failed on this host's
    record of what it saw: an error for a change that was made. Now nothing changes."""
    shared = SharedInbox(location)
    inbox = tmp_path / "extra"
    first = shared_edits.add(shared, inbox, digit(tmp_path, 1), "one.png", 1, "test").entry
    seen.base_file(inbox).write_text("not json")
    png = digit(tmp_path, 2)
    sha = hashlib.sha256(png).hexdigest()
    with pytest.raises(DataError, match="cannot read .*delete it: the next sync starts afresh"):
        shared_edits.add(shared, inbox, png, "two.png", 2, "test")
    claim = review_queue.submit(shared, png, "upload.png", 2, "token:alice").sha256
    with pytest.raises(DataError, match="cannot read .*delete it: the next sync starts afresh"):
        review_shared.accept(shared, inbox, [claim], "bob")
    assert shared.record(sha) is None and labels(inbox) == [(1, first.sha256)]
    assert [p.sha256 for p in review_queue.queue(shared).found] == [sha]  # still pending


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
    assert got.problems[bad].endswith("delete that object from the store, then add the image again")
    assert f"names no bytes of image {elsewhere[:12]}" in got.problems[elsewhere]
    assert [label for label, _ in labels(b)] == [9]  # the rest synced
    shared.storage.delete(record.image)  # repaired: the next sync takes it
    shared.storage.create(record.image, png)
    assert sync.sync(shared, b, "test").downloaded == [sha]


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


def test_a_store_down_partway_through_a_removal_leaves_each_image_whole(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`data remove A B C` and the store goes down at B: A is gone from the store and here
    (and told), B and C stay on both sides, so nothing here trains on what the store lost."""
    shared = SharedInbox(location)
    a = tmp_path / "a" / "extra"
    shas = [
        shared_edits.add(shared, a, digit(tmp_path, 40 + i), f"{i}.png", i, "t").entry.sha256
        for i in range(3)
    ]
    retract, calls = shared.retract, []

    def down_at_the_second(sha: str, label: int | None = None) -> str:
        calls.append(sha)
        if len(calls) == 2:
            raise StoreUnavailable("shared inbox: the store went down")
        return retract(sha, label)

    monkeypatch.setattr(shared, "retract", down_at_the_second)
    told: list[str] = []
    with pytest.raises(StoreUnavailable, match="went down"):
        shared_edits.remove(
            shared,
            a,
            [s[:12] for s in shas],
            each=lambda gone, kept: told.extend(e.sha256 for e in gone),
        )
    assert told == shas[:1]
    assert sorted(sha for _, sha in labels(a)) == sorted(shas[1:])
    assert sorted(shared.records()[0]) == sorted(shas[1:])


def test_a_removal_cut_short_has_told_which_earlier_image_the_store_kept(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A was relabelled elsewhere (the store keeps it), then the store goes down at B: A's
    removal here and the store's keeping it were both told before the error."""
    shared = SharedInbox(location)
    a = tmp_path / "a" / "extra"
    pngs = [digit(tmp_path, 50 + i) for i in range(2)]
    shas = [
        shared_edits.add(shared, a, png, f"{i}.png", 3, "t").entry.sha256
        for i, png in enumerate(pngs)
    ]
    assert shared.retract(shas[0]) == "removed" and shared.publish(pngs[0], 9, "png", "elsewhere")
    retract = shared.retract

    def down_at_b(sha: str, label: int | None = None) -> str:
        if sha == shas[1]:
            raise StoreUnavailable("shared inbox: the store went down")
        return retract(sha, label)

    monkeypatch.setattr(shared, "retract", down_at_b)
    told: list[tuple[str, bool]] = []
    with pytest.raises(StoreUnavailable, match="went down"):
        shared_edits.remove(
            shared,
            a,
            [s[:12] for s in shas],
            each=lambda gone, kept: told.append((gone[0].sha256, kept)),
        )
    assert told == [(shas[0], True)] and shared.record(shas[0]).label == 9


def test_an_image_dropped_in_by_hand_is_downloaded_by_no_later_sync(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file dropped into data/extra/4/ by hand keeps its name once published; later syncs
    know it from what this host saw in the store and download nothing, while an image deleted
    here since is downloaded again."""
    shared = SharedInbox(location)
    a = tmp_path / "a" / "extra"
    (a / "4").mkdir(parents=True)
    dropped = a / "4" / "scan-0001.png"
    dropped.write_bytes(digit(tmp_path, 14))
    sha = store.file_sha256(dropped)
    assert sync.sync(shared, a, "test").published == [sha]
    image, downloads = shared.image, []

    def counted(sha: str, record: object) -> bytes:
        downloads.append(sha)
        return image(sha, record)

    monkeypatch.setattr(shared, "image", counted)
    assert nothing_changed(sync.sync(shared, a, "test")) and downloads == []
    dropped.unlink()  # gone here by hand: a missing file never removes it from the store
    assert sync.sync(shared, a, "test").downloaded == downloads == [sha]
    assert labels(a) == [(4, sha)]


def test_an_inbox_linked_to_another_filesystem_takes_what_a_sync_staged(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data/extra a link to another filesystem: the staged image cannot be renamed into it
    (EXDEV), so it is copied; the sync takes every image and leaves nothing staged."""
    shared = SharedInbox(location)
    a, b = tmp_path / "a" / "extra", tmp_path / "b" / "extra"
    sha = shared_edits.add(shared, a, digit(tmp_path, 9), "x.png", 6, "test").entry.sha256

    rename, crossed = os.replace, []

    def across(source: object, target: object) -> None:  # the staged image into the inbox
        if Path(source) == incoming.folder(b) / sha and Path(target).parent.parent == b:
            crossed.append(Path(source).name)
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(source), None, target)
        rename(source, target)

    monkeypatch.setattr(os, "replace", across)
    got = sync.sync(shared, b, "test")
    assert got.downloaded == [sha] and got.problems == {}, got
    assert labels(b) == [(6, sha)] and not incoming.folder(b).exists()
    assert crossed == [sha]  # the staged file was taken (not downloaded again)


def test_a_wiped_store_empties_no_inbox_and_a_new_one_is_filled_again(
    location: str, tmp_path: Path
) -> None:
    shared = SharedInbox(location)
    a, b = tmp_path / "a" / "extra", tmp_path / "b" / "extra"
    sha = shared_edits.add(shared, a, digit(tmp_path, 5), "x.png", 2, "test").entry.sha256
    shared_edits.remove(shared, a, [sha])  # every image removed: the store is empty, not lost
    assert shared.records() == ({}, {}) and shared.identity() is not None
    assert nothing_changed(sync.sync(shared, a, "test"))
    sha = shared_edits.add(shared, a, digit(tmp_path, 5), "x.png", 2, "test").entry.sha256
    assert sync.sync(shared, b, "test").downloaded == [sha]
    for key in shared.storage.list("") + ["inbox.json"]:
        shared.storage.delete(key)  # wiped, or a share mounted empty
    again = SharedInbox(location)
    with pytest.raises(StoreUnavailable, match="has lost its inbox.json .*nothing synced"):
        sync.sync(again, a, "test")
    with pytest.raises(StoreUnavailable, match="has lost its inbox.json .*nothing stored"):
        shared_edits.add(again, b, digit(tmp_path, 6), "y.png", 4, "test")  # nor a new store begun
    claimed = review_queue.submit(again, digit(tmp_path, 7), "z.png", 1, "token:kiosk")
    with pytest.raises(StoreUnavailable, match="has lost its inbox.json .*nothing accepted"):
        review_shared.accept(again, b, [claimed.sha256[:8]], "bob")
    with pytest.raises(StoreUnavailable, match="has lost its inbox.json .*nothing removed"):
        shared_edits.remove(again, a, [sha])  # else the store, once back, would bring it back here
    quarantine = tmp_path / "a" / "pending"  # a's claims from before inbox.shared was set
    held = pending.submit(quarantine, a, digit(tmp_path, 8), "q.png", 3, "token:kiosk").sha256
    with pytest.raises(StoreUnavailable, match=r"lost its inbox.json .*nothing moved from .*pend"):
        review_move.move_local(again, quarantine, a)  # into a share not mounted: lost
    assert [i.sha256 for i in pending.items(quarantine)] == [held]
    assert again.identity() is None and labels(a) == labels(b) == [(2, sha)]
    for key in shared.storage.list(""):
        shared.storage.delete(key)  # the claim too
    seen.base_file(a).unlink()  # the operator starts the store afresh from host a
    assert sync.sync(again, a, "test").published == [sha]
    assert sync.sync(SharedInbox(location), b, "test").summary().startswith("0 downloaded")
    assert labels(b) == [(2, sha)]  # a store made afresh is another store: nothing deleted


def test_bad_locations_are_one_line_and_store_nothing(tmp_path: Path) -> None:
    for bad, message in (
        ("s3://", "shared inbox location 's3://' names no bucket"),
        ("s3://Bad_Bucket/x", "is not a valid bucket name"),
        ("ftp://host/x", "unsupported scheme 'ftp'"),
        (str(tmp_path / "unmounted"), "is not a folder: create it"),
        ("file://srv/x", "a file:// URL names a folder on this machine"),
    ):
        with pytest.raises(StoreUnavailable, match=message) as refused:
            SharedInbox(bad)
        assert "\n" not in str(refused.value)
    (tmp_path / "a store").mkdir()  # a file: URL as the registry reads one
    url = f"file://localhost{tmp_path}/a%20store"
    assert SharedInbox(url).location == str(tmp_path / "a store")
    root = tmp_path / "project"
    root.mkdir()
    image = draw_digit(tmp_path / "d.png", 5)
    for shared in ("s3://", "s3://Bad_Bucket/x"):  # refused when params.yaml is read
        (root / "params.yaml").write_text(f"inbox:\n  shared: {shared}\n")
        args = ["--root", str(root), "data", "add", str(image), "-l", "1"]
        added = CliRunner().invoke(app, args)
        assert isinstance(added.exception, ParamsError), added.exception
        assert not (root / "data" / "extra").exists()
    (tmp_path / "linked").symlink_to(root / "data", target_is_directory=True)
    for inside in ("data/extra", "./data/extra/store", f"{tmp_path}/linked/extra/s"):
        with pytest.raises(ParamsError, match=r"inside the inbox .*: the store needs a folder"):
            Layout(root).shared_inbox(inside)  # as `serve` opens it for /feedback
        (root / "params.yaml").write_text(f"inbox:\n  shared: {inside}\n")
        added = CliRunner().invoke(app, ["--root", str(root), "data", "add", str(image), "-l", "1"])
        assert isinstance(added.exception, ParamsError), added.exception  # exit status 2
        assert not (root / "data" / "extra").exists()
    for inside in ("data/pending", "data/pending/store"):  # review_move would list its files
        with pytest.raises(ParamsError, match=r"inside the pending area .*: the store needs a"):
            Layout(root).shared_inbox(inside)
        (root / "params.yaml").write_text(f"inbox:\n  shared: {inside}\n")
        added = CliRunner().invoke(app, ["--root", str(root), "data", "add", str(image), "-l", "1"])
        assert isinstance(added.exception, ParamsError), added.exception
        assert not (root / "data" / "extra").exists()
    refused = r"holding the inbox .*: the store|inbox.shared '.*' is the filesystem root: a"
    (tmp_path / "to-project").symlink_to(root, target_is_directory=True)
    spelled = (
        "data/..",
        "data/../data",
        "file:data/..",
        f"{tmp_path}/to-project",
        f"{tmp_path}/linked",
    )
    for holding in (".", "data", str(root), "/", "file:///", "../" * 40, *spelled):
        with pytest.raises(ParamsError, match=refused):
            Layout(root).shared_inbox(holding)  # the project's (or system's) files among its own
        (root / "params.yaml").write_text(f"inbox:\n  shared: '{holding}'\n")
        added = CliRunner().invoke(app, ["--root", str(root), "data", "add", str(image), "-l", "1"])
        assert isinstance(added.exception, ParamsError), added.exception
        assert not (root / "data" / "extra").exists() and not (root / "images").exists()
    with pytest.raises(ParamsError, match="^registry.root '/' is the filesystem root: a store"):
        Layout(root).registry_root("/")
    assert Layout(root).shared_inbox(str(tmp_path)) == tmp_path  # above the project: a mount
    assert Layout(root).shared_inbox("..") == root.resolve().parent  # so written
    (root / "loop").symlink_to(root / "loop")  # resolving it fails: used as written
    assert Layout(root).registry_root("loop") == root / "loop"
    assert Layout(root).shared_inbox("data/shared") == root / "data" / "shared"
    assert Layout(root).shared_inbox("s3://bucket/inbox") == "s3://bucket/inbox"


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

        image = str(draw_digit(tmp_path / "1.png", 1))
        first = cli(a, "add", image, image, "-l", "1")  # named twice: one image
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
        c = tmp_path / "c"  # a third host adds an image the store has: stored here, not new
        c.mkdir()
        (c / "params.yaml").write_text(f"inbox:\n  shared: {url}\n")
        told = cli(c, "add", image, "-l", "1")
        assert told.exit_code == 0 and "already in the shared inbox: " in told.output, told.output
        assert labels(c / "data" / "extra") == [one]

        relabelled = SharedInbox(url)  # on a third host, the 1 becomes a 7 meanwhile
        assert relabelled.retract(one[1]) == "removed"
        assert relabelled.publish((tmp_path / "1.png").read_bytes(), 7, "png", "test") is True
        removed = cli(a, "remove", one[1][:12])  # a still holds it labelled 1
        assert removed.exit_code == 0 and "removed: " in removed.output, removed.output
        assert f"warning: {one[1][:12]} stays in the shared inbox {url}" in removed.output
        assert relabelled.record(one[1]).label == 7  # the store's newer label is kept
        assert cli(a, "sync").exit_code == 0 and (7, one[1]) in labels(a / "data" / "extra")


def test_a_damaged_record_of_what_was_seen_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    shared, inbox = SharedInbox(tmp_path / "store"), tmp_path / "a" / "extra"
    inbox.mkdir(parents=True)
    seen.base_file(inbox).write_text("{half")
    with pytest.raises(DataError, match=r"cannot read .*\.extra\.shared\.json: .*delete it"):
        sync.sync(shared, inbox, "test")
    assert seen.base_file(inbox).read_text() == "{half"  # left for the operator to look at


def test_a_sync_cut_short_or_a_relabel_that_failed_here_is_followed_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "store").mkdir()
    shared = SharedInbox(str(tmp_path / "store"))
    a, b = tmp_path / "a" / "extra", tmp_path / "b" / "extra"
    first = shared_edits.add(shared, a, digit(tmp_path, 1), "one.png", 3, "test").entry
    second = shared_edits.add(shared, a, digit(tmp_path, 2), "two.png", 4, "test").entry
    take = sync.incoming.take
    went_away = StoreUnavailable("shared inbox: the store stopped answering")

    def store_gone_after_one(shared, inbox, sha, record, staged) -> None:
        if store.entries(inbox):
            raise went_away
        take(shared, inbox, sha, record, staged)

    with monkeypatch.context() as patch:
        patch.setattr(sync.incoming, "take", store_gone_after_one)
        with pytest.raises(StoreUnavailable):
            sync.sync(shared, b, "test")
    (got,) = store.entries(b)  # one image arrived before the store went away
    shared_edits.remove(shared, a, [got.sha256])  # then it is removed on a
    again = sync.sync(shared, b, "test")
    assert again.deleted_here == [got.sha256] and not again.published  # not published again
    assert labels(b) == labels(a)

    kept = next(e for e in (first, second) if e.sha256 != got.sha256)
    png = kept.path.read_bytes()
    shared_edits.remove(shared, a, [kept.sha256])  # relabelled on a: 7 now
    relabelled = shared_edits.add(shared, a, png, "again.png", 7, "test").entry
    with monkeypatch.context() as patch:
        patch.setattr(sync.incoming, "take", lambda *_: (_ for _ in ()).throw(OSError(28, "full")))
        failed = sync.sync(shared, b, "test")
    assert kept.sha256 in failed.problems and labels(b) == [(kept.label, kept.sha256)]
    followed = sync.sync(shared, b, "test")  # the relabel still reads as made elsewhere
    assert followed.downloaded == [kept.sha256] and not followed.conflicts
    assert labels(b) == labels(a) == [(7, relabelled.sha256)]

    # relabelled on a again (7 -> 2); b's sync takes the 2 and is cut short before its 7 goes
    shared_edits.remove(shared, a, [kept.sha256])
    shared_edits.add(shared, a, png, "third.png", 2, "test")
    (old_copy,) = store.entries(b)
    with monkeypatch.context() as patch:
        unlink = Path.unlink

        def cut_short(path: Path, missing_ok: bool = False) -> None:
            if path == old_copy.path:
                raise OSError(5, "Input/output error")
            unlink(path, missing_ok=missing_ok)

        patch.setattr(Path, "unlink", cut_short)
        sync.sync(shared, b, "test")
    assert sorted(lab for lab, _ in labels(b)) == [2, 7]  # the 2 taken, the 7 left behind
    finished = sync.sync(shared, b, "test")  # a relabel cut short here, not a conflict
    assert not finished.conflicts and labels(b) == labels(a) == [(2, kept.sha256)]
