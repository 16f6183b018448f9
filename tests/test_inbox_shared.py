"""The inbox shared through object storage: hosts (here: folders) that share only the store see
each other's digits, removals and relabellings follow, two labels for one image never both
train, and a store that is down loses nothing. On a folder store and on moto's S3 server."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.inbox import store, sync
from mnist_pipeline.inbox.ingest import collect
from mnist_pipeline.inbox.shared import SharedInbox, StoreUnavailable
from tests.example_helpers import draw_digit
from tests.s3_helpers import new_bucket, proxy, use_endpoint


@pytest.fixture(params=["folder", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A shared inbox on each backend."""
    if request.param == "folder":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_url").replace("/registry", "/inbox")


def digit(tmp_path: Path, seed: int) -> bytes:
    return draw_digit(tmp_path / f"digit-{seed}.png", seed).read_bytes()


def labels(inbox: Path) -> list[tuple[int, str]]:
    return [(e.label, e.sha256) for e in store.entries(inbox)]


def test_digits_added_on_one_host_reach_the_other_and_removals_follow(
    location: str, tmp_path: Path
) -> None:
    shared = SharedInbox(location)
    a, b = tmp_path / "a" / "extra", tmp_path / "b" / "extra"
    three = store.add(a, digit(tmp_path, 1), "one.png", 3).entry
    sync.publish_entry(shared, three, "test")
    got = sync.sync(shared, b, "test")
    assert got.downloaded == [three.sha256] and not got.problems
    (copy,) = store.entries(b)
    assert (copy.label, copy.path.name) == (3, f"{three.sha256}.png")
    assert copy.path.read_bytes() == three.path.read_bytes()
    again = sync.sync(shared, b, "test")
    assert again.summary().startswith("0 downloaded, 0 published, 0 deleted here")

    five = store.add(b, digit(tmp_path, 2), "two.png", 5).entry  # only here: published
    assert sync.sync(shared, b, "test").published == [five.sha256]
    assert sync.sync(shared, a, "test").downloaded == [five.sha256]
    assert labels(a) == labels(b) == sorted([(3, three.sha256), (5, five.sha256)])

    removed = store.remove(a, [three.sha256])  # `data remove` on host a
    sync.note_retracted(shared, a, removed)
    assert shared.record(three.sha256) is None
    assert sync.sync(shared, b, "test").deleted_here == [three.sha256]
    store.remove(b, [five.sha256])  # removed on b, not yet retracted: the sync retracts it
    assert sync.sync(shared, b, "test").retracted == [five.sha256]
    assert sync.sync(shared, a, "test").deleted_here == [five.sha256]
    assert labels(a) == labels(b) == [] and shared.records() == {}


def test_one_image_with_two_labels_never_trains(location: str, tmp_path: Path) -> None:
    shared = SharedInbox(location)
    png = digit(tmp_path, 3)
    assert shared.publish(png, 3, "png", "test") is True
    assert shared.publish(png, 3, "png", "test") is False  # the same label: already there
    with pytest.raises(store.LabelConflict, match=r"labelled 3 in the shared inbox .*not 5"):
        shared.publish(png, 5, "png", "test")

    b = tmp_path / "b" / "extra"
    sha = store.add(b, png, "mine.png", 5).entry.sha256  # labelled 5 here, 3 in the store
    got = sync.sync(shared, b, "test")
    assert got.conflicts == [sha] and [label for label, _ in labels(b)] == [3, 5]
    collected = collect(b, 0)
    assert collected.accepted == []
    assert all("labelled [3, 5]" in reason for reason in collected.rejected.values())

    c = tmp_path / "c" / "extra"  # relabelled on another host: the new label replaces the old
    sync.sync(shared, c, "test")
    shared.retract(sha)
    assert shared.publish(png, 7, "png", "test")
    assert sync.sync(shared, c, "test").downloaded == [sha]
    assert labels(c) == [(7, sha)]


def test_an_altered_image_in_the_store_is_not_taken(location: str, tmp_path: Path) -> None:
    shared = SharedInbox(location)
    png = digit(tmp_path, 4)
    shared.publish(png, 4, "png", "test")
    sha = next(iter(shared.records()))
    shared.storage.delete(f"images/{sha}")
    shared.storage.create(f"images/{sha}", png + b"tampered")
    b = tmp_path / "b" / "extra"
    got = sync.sync(shared, b, "test")
    assert "does not match its hash" in got.problems[sha] and labels(b) == []
    shared.storage.delete(f"images/{sha}")  # repaired: the next sync takes it (not a removal)
    shared.storage.create(f"images/{sha}", png)
    assert sync.sync(shared, b, "test").downloaded == [sha] and labels(b) == [(4, sha)]


def test_bad_locations_are_one_line_and_store_nothing(tmp_path: Path) -> None:
    for bad, message in (
        ("s3://", "shared inbox location 's3://' names no bucket"),
        ("s3://Bad_Bucket/x", "is not a valid bucket name"),
        ("ftp://host/x", "unsupported scheme 'ftp'"),
    ):
        with pytest.raises(StoreUnavailable, match=message):
            SharedInbox(bad)
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text("inbox:\n  shared: s3://\n")
    image = draw_digit(tmp_path / "d.png", 5)
    added = CliRunner().invoke(app, ["--root", str(root), "data", "add", str(image), "-l", "1"])
    assert isinstance(added.exception, StoreUnavailable)
    assert not (root / "data" / "extra").exists()


@pytest.mark.slow
def test_two_projects_share_digits_through_s3_and_survive_the_store_going_down(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`data add` on one host, `data sync` and ingest on another, through moto behind a proxy
    that stops answering: the add keeps its image and says the next sync shares it."""
    runner = CliRunner()
    with proxy(s3_endpoint) as store_proxy:
        use_endpoint(monkeypatch, store_proxy.url)
        url = f"s3://{new_bucket(s3_endpoint)}/inbox"
        a, b = tmp_path / "a", tmp_path / "b"
        for root in (a, b):
            root.mkdir()
            (root / "params.yaml").write_text(f"inbox:\n  shared: {url}\n")

        def cli(root: Path, *args: str):  # noqa: ANN202 - typer's Result
            return runner.invoke(app, ["--root", str(root), "data", *args])

        first = cli(a, "add", str(draw_digit(tmp_path / "1.png", 1)), "-l", "1")
        assert first.exit_code == 0 and f"shared: 1 image(s) in {url}" in first.output
        store_proxy.down.set()
        second = cli(a, "add", str(draw_digit(tmp_path / "2.png", 2)), "-l", "2")
        assert second.exit_code == 0, second.output
        assert "warning:" in second.output and store_proxy.url in second.output
        assert "next `mnist-pipeline data sync` shares them" in second.output
        assert len(store.entries(a / "data" / "extra")) == 2  # kept here

        refused = cli(b, "sync")
        assert isinstance(refused.exception, StoreUnavailable)
        assert store_proxy.url in str(refused.exception)
        assert "\n" not in str(refused.exception)
        assert not (b / "data" / ".extra.shared.json").exists()

        store_proxy.down.clear()
        assert "1 published" in cli(a, "sync").output
        synced = cli(b, "sync")
        assert synced.exit_code == 0 and "2 downloaded" in synced.output
        assert labels(a / "data" / "extra") == labels(b / "data" / "extra")
        ingested = runner.invoke(app, ["--root", str(b), "ingest"])
        assert ingested.exit_code == 0, ingested.output
        manifest = (b / "data" / "ingested" / "manifest.json").read_text()
        assert all(sha in manifest for _, sha in labels(b / "data" / "extra"))
