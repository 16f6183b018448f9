"""The ingest stage: inbox -> IDX splits + manifest + report; bad files listed, never blocking."""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import IngestParams
from mnist_pipeline.data.manifest import file_sha256
from mnist_pipeline.data.preprocess import preprocess_bytes
from mnist_pipeline.inbox import extra
from mnist_pipeline.inbox import store as inbox
from mnist_pipeline.inbox.drawings import to_uint8
from mnist_pipeline.inbox.ingest import ingest, split_of


def stroke_png(seed: int, size: tuple[int, int] = (120, 90)) -> bytes:
    """A dark-on-light stroke unlike any other seed's: one thick line through 4 random points,
    connected, so that preprocessing keeps all of it (separate blobs could shrink to the same
    single rectangle for two seeds)."""
    rng = np.random.default_rng(seed)
    image = Image.new("L", (size[1], size[0]), 230)
    points = [(int(rng.integers(10, size[1] - 10)), int(rng.integers(10, size[0] - 10)))]
    for _ in range(3):
        points.append((int(rng.integers(10, size[1] - 10)), int(rng.integers(10, size[0] - 10))))
    ImageDraw.Draw(image).line(points, fill=int(rng.integers(0, 60)), width=7, joint="curve")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def fill_inbox(layout: Layout, seeds: range) -> dict[str, int]:
    """Add one scribble per seed (label seed % 10); returns SHA-256 -> label."""
    added = {}
    for seed in seeds:
        done = inbox.add(layout.inbox, stroke_png(seed), f"s{seed}.png", seed % 10)
        added[done.entry.sha256] = seed % 10
    return added


def test_an_empty_or_missing_inbox_is_normal(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    result = ingest(IngestParams(), layout)
    assert result.counts == {"train": 0, "holdout": 0} and result.rejected == {}
    assert result.extra_sha256 == extra.NO_EXTRA_SHA256 == extra.extra_sha256(layout.extra_dir)
    for split in extra.SPLITS:
        assert len(extra.read_split(layout.extra_dir, split)) == 0
    assert json.loads(layout.ingest_report.read_text())["counts"] == result.counts


def test_an_inbox_gone_or_not_a_folder_never_replaces_what_was_ingested(tmp_path: Path) -> None:
    from tests.test_inbox_tracked import write_lock  # it imports this module's helpers

    layout = Layout(tmp_path)
    fill_inbox(layout, range(12))
    ingest(IngestParams(), layout)
    before = {p.name: p.read_bytes() for p in [*layout.extra_dir.iterdir(), layout.ingest_report]}
    shutil.rmtree(layout.inbox)
    write_lock(tmp_path, 12)  # dvc.lock records the inbox `dvc pull` would bring back
    with pytest.raises(DataError, match=r"missing but dvc.lock records 12 file\(s\) in it"):
        ingest(IngestParams(), layout)
    (tmp_path / "dvc.lock").unlink()
    layout.inbox.write_text("not a folder")
    with pytest.raises(DataError, match=r"the inbox .*extra is not a folder"):
        ingest(IngestParams(), layout)
    after = {p.name: p.read_bytes() for p in [*layout.extra_dir.iterdir(), layout.ingest_report]}
    assert after == before


def test_images_are_preprocessed_split_by_hash_and_listed(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    added = fill_inbox(layout, range(40))
    result = ingest(IngestParams(holdout_percent=30), layout)
    manifest = json.loads((layout.extra_dir / extra.MANIFEST_FILE).read_text())
    assert {m["sha256"]: m["label"] for m in manifest} == added
    assert result.counts["train"] + result.counts["holdout"] == 40
    assert 0 < result.counts["holdout"] < 40  # ~30% of 40 by hash
    splits = {split: extra.read_split(layout.extra_dir, split) for split in extra.SPLITS}
    for item in manifest:
        assert item["split"] == split_of(item["sha256"], 30)
        split = splits[item["split"]]
        assert split.labels[item["index"]] == item["label"]
        data = (layout.inbox / item["source"]).read_bytes()
        expected = to_uint8(preprocess_bytes(data, item["source"]))  # exactly what predict sees
        assert np.array_equal(split.images[item["index"]], expected)
    assert result.extra_sha256 != extra.NO_EXTRA_SHA256
    assert result.extra_sha256 == extra.extra_sha256(layout.extra_dir)  # hashed before written
    report = json.loads(layout.ingest_report.read_text())
    assert report["extra_sha256"] == result.extra_sha256


def test_the_split_rule_is_the_first_eight_hex_digits_modulo_100() -> None:
    """The rule is a contract between versions and hosts: pinned by examples, not by itself."""
    tail = "0" * 56
    assert split_of("00000005" + tail, 20) == "holdout"  # 5 % 100 = 5 < 20
    assert split_of("00000019" + tail, 20) == "train"  # 0x19 = 25
    assert split_of("00000019" + tail, 30) == "holdout"
    assert split_of("ffffffff" + tail, 90) == "train"  # 4294967295 % 100 = 95
    assert split_of("0000000a" + "f" * 56, 10) == "train"  # only the first 8 digits count
    assert split_of("0" * 64, 0) == "train" and split_of("0" * 64, 1) == "holdout"


def test_an_image_never_changes_sides_when_others_arrive(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    fill_inbox(layout, range(30))
    ingest(IngestParams(), layout)
    before = json.loads((layout.extra_dir / extra.MANIFEST_FILE).read_text())
    first_bytes = {n: (layout.extra_dir / n).read_bytes() for n in extra.data_files()}
    ingest(IngestParams(), layout)  # the same inbox: byte-identical files
    assert {n: (layout.extra_dir / n).read_bytes() for n in extra.data_files()} == first_bytes
    fill_inbox(layout, range(30, 80))
    ingest(IngestParams(), layout)
    after = {
        m["sha256"]: m["split"]
        for m in json.loads((layout.extra_dir / "manifest.json").read_text())
    }
    assert all(after[m["sha256"]] == m["split"] for m in before)
    assert len(after) == 80


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (its pixel data is never needed)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_bad_files_are_listed_with_reasons_and_never_block_or_change_the_inbox(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path)
    good = fill_inbox(layout, range(6))
    blank = io.BytesIO()
    Image.new("L", (40, 40), 240).save(blank, format="PNG")
    drops = {  # bulk drops by hand: any name, no checks at drop time
        "4/truncated.png": stroke_png(100)[:120],
        "4/notes.png": b"this is not an image",
        "5/blank.png": blank.getvalue(),
        "6/huge.png": huge_png_header(10_000, 10_000),
        "loose.png": stroke_png(101),
        "12/two-digit-folder.png": stroke_png(102),
        "3/conflict.png": stroke_png(103),
        "8/conflict-too.png": stroke_png(103),
        "1/copy-of-s1.png": stroke_png(1),  # the same image, the same label: kept once
    }
    for rel, data in drops.items():
        (layout.inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (layout.inbox / rel).write_bytes(data)
    snapshot = {p: file_sha256(p) for p in layout.inbox.rglob("*") if p.is_file()}
    result = ingest(IngestParams(), layout)
    reasons = result.rejected
    assert set(reasons) == set(drops) - {"1/copy-of-s1.png"}
    assert "cannot read or decode" in reasons["4/truncated.png"]
    assert "not a recognised image file" in reasons["4/notes.png"]
    assert "blank image" in reasons["5/blank.png"]
    assert "100,000,000 pixels" in reasons["6/huge.png"]
    assert "not in a digit folder" in reasons["loose.png"]
    assert "not in a digit folder" in reasons["12/two-digit-folder.png"]
    assert "labelled [3, 8]" in reasons["3/conflict.png"] == reasons["8/conflict-too.png"]
    assert result.counts["train"] + result.counts["holdout"] == len(good)
    assert list(result.duplicates) == ["1/copy-of-s1.png"]
    report = json.loads(layout.ingest_report.read_text())
    assert report["rejected"] == reasons and sum(map(sum, report["per_class"].values())) == 6
    assert {p: file_sha256(p) for p in layout.inbox.rglob("*") if p.is_file()} == snapshot
    assert all("refused: " + src in result.summary() for src in reasons)


def reencoded(png: bytes, level: int) -> bytes:
    """The same pixels as `png`, saved again at zlib level `level` with a text chunk: new bytes."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Software", f"re-encoded at level {level}")
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).save(out, format="PNG", compress_level=level, pnginfo=info)
    return out.getvalue()


def test_files_with_identical_pixels_are_one_digit_on_one_side_of_the_split(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path)
    copies = {}
    for seed in range(20):  # 20 digits, each dropped as 3 encodings: 60 distinct files
        for level in (1, 6, 9):
            data = reencoded(stroke_png(seed), level)
            rel = f"{seed % 10}/s{seed}-level{level}.png"
            (layout.inbox / rel).parent.mkdir(parents=True, exist_ok=True)
            (layout.inbox / rel).write_bytes(data)
            copies.setdefault(seed, {})[rel] = file_sha256(layout.inbox / rel)
    assert len({sha for files in copies.values() for sha in files.values()}) == 60
    result = ingest(IngestParams(holdout_percent=50), layout)
    assert result.counts["train"] + result.counts["holdout"] == 20 and result.rejected == {}
    manifest = json.loads((layout.extra_dir / extra.MANIFEST_FILE).read_text())
    for seed, files in copies.items():
        kept = [row for row in manifest if row["sha256"] in files.values()]
        assert len(kept) == 1, (seed, kept)  # one row, so one side, whatever the split says
        smallest = min(files.values())
        assert kept[0]["sha256"] == smallest
        assert kept[0]["split"] == split_of(smallest, 50)
        assert {result.duplicates[rel] for rel in files if rel != kept[0]["source"]} == {
            kept[0]["source"]
        }
    assert {row["split"] for row in manifest} == {"train", "holdout"}  # both sides were used


def test_files_with_identical_pixels_and_other_labels_are_refused_together(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path)
    fill_inbox(layout, range(3))
    drops = {"3/drawn.png": stroke_png(50), "5/saved-again.png": reencoded(stroke_png(50), 1)}
    for rel, data in drops.items():
        (layout.inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (layout.inbox / rel).write_bytes(data)
    result = ingest(IngestParams(), layout)
    assert set(result.rejected) == set(drops)
    reason = result.rejected["3/drawn.png"]
    assert reason == result.rejected["5/saved-again.png"]
    assert "labelled [3, 5]" in reason and "3/drawn.png, 5/saved-again.png" in reason
    assert result.counts["train"] + result.counts["holdout"] == 3


def test_cli_ingest_warns_per_refused_file_and_succeeds(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    fill_inbox(layout, range(3))
    (layout.inbox / "7").mkdir()
    (tmp_path / "params.yaml").write_text("ingest:\n  holdout_percent: 50\n")
    (layout.inbox / "7" / "bad.png").write_bytes(b"nope")
    out = CliRunner().invoke(app, ["--root", str(tmp_path), "ingest"])
    assert out.exit_code == 0, out.output
    assert "ingested" in out.output and "refused: 7/bad.png: not a recognised image" in out.output


def test_the_inbox_lock_is_outside_what_dvc_hashes(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    fill_inbox(layout, range(2))
    assert not [p for p in layout.inbox.rglob("*") if p.name.endswith(".lock")]
    assert (layout.inbox.parent / ".extra.lock").exists()


def test_ingest_takes_the_pending_count_for_the_retraining_trigger(tmp_path: Path) -> None:
    from mnist_pipeline.inbox import events as inbox_events

    layout = Layout(tmp_path)
    fill_inbox(layout, range(3))
    inbox_events.write_pending(layout.inbox, 3)  # as `data add` left it, below the minimum
    trial = ingest(IngestParams(), layout, take_pending=False)  # a sweep's trial
    assert inbox_events.read_pending(layout.inbox) == 3  # it registers nothing: still new
    assert ingest(IngestParams(), layout) == trial  # the same output either way
    assert inbox_events.read_pending(layout.inbox) == 0  # being trained on: no longer new


def test_pipes_devices_and_linked_folders_are_refused_by_name_never_left_out(
    tmp_path: Path,
) -> None:
    """A pipe or a link to a device in a digit folder, and a link to a folder inside one, were
    left out of every output without a word; each is refused with its reason now (no pipe is
    opened: that would wait for a writer). A name that could fake a line is printed escaped."""
    import os

    layout = Layout(tmp_path)
    fill_inbox(layout, range(3))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.png").write_bytes(stroke_png(50))
    (layout.inbox / "5").mkdir()
    os.mkfifo(layout.inbox / "5" / "fifo.png")
    (layout.inbox / "5" / "zero.png").symlink_to("/dev/zero")
    (layout.inbox / "7").mkdir(exist_ok=True)
    (layout.inbox / "7" / "linked").symlink_to(elsewhere)
    (layout.inbox / "7" / "gone.png").symlink_to(tmp_path / "nowhere.png")  # leads nowhere
    forged = "a.png\nrefused: nothing\x1b[2K.png"
    (layout.inbox / "7" / forged).write_bytes(b"not an image")
    # the same image under another label: each copy's reason names the other, escaped too
    (layout.inbox / "8").mkdir()
    (layout.inbox / "8" / "x.png").write_bytes(stroke_png(60))
    (layout.inbox / "9").mkdir()
    (layout.inbox / "9" / "y.png\nrefused: evil.png").write_bytes(stroke_png(60))
    result = ingest(IngestParams(), layout)
    regular = "not a regular file (a pipe, a device or a link to a folder)"
    assert result.rejected["5/fifo.png"] == regular == result.rejected["7/linked"]
    assert result.rejected["5/zero.png"] == regular
    assert "7/gone.png" not in result.rejected and f"7/{forged}" in result.rejected
    assert result.counts["train"] + result.counts["holdout"] == 3
    assert not any(line.startswith("refused: evil.png") for line in result.summary().splitlines())
    assert "refused: 7/a.png\\nrefused: nothing\\x1b[2K.png: not a recognised" in result.summary()
    assert len(result.summary().splitlines()) == 1 + len(result.rejected)
    listed = CliRunner().invoke(app, ["--root", str(tmp_path), "data", "list"])
    assert listed.exit_code == 0, listed.output
    assert "or not regular files" in listed.output and "5/fifo.png" in listed.output


@pytest.mark.parametrize("renamed", [1, 2, 3, 5])
@pytest.mark.parametrize("older", [False, True], ids=["checksummed", "older-ingest"])
def test_an_ingest_interrupted_between_its_renames_is_refused_when_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renamed: int, older: bool
) -> None:
    """Ctrl-C after `renamed` of the outputs replaced the last ingest's (checksums.json, naming
    the new files, first): new images beside old labels, or an old manifest, are refused by
    every reader, never trained on with the wrong labels, also where the last ingest was an
    earlier release's (no checksums.json); the next ingest is whole again."""
    import os

    from mnist_pipeline.pipeline.promotion import check_split_with

    layout = Layout(tmp_path)
    fill_inbox(layout, range(12))
    ingest(IngestParams(holdout_percent=50), layout)
    if older:
        (layout.extra_dir / extra.CHECKSUMS_FILE).unlink()
    for path in sorted(layout.inbox.rglob("*.png")):
        path.unlink()
    fill_inbox(layout, range(20, 32))  # as many images, other ones in both splits
    replace, done = os.replace, []

    def interrupted(source: object, target: object) -> None:
        if len(done) == renamed:
            raise KeyboardInterrupt
        replace(source, target)
        done.append(target)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", interrupted)
        with pytest.raises(KeyboardInterrupt):
            ingest(IngestParams(holdout_percent=50), layout)
    mixed = "is not the file the last ingest wrote .*an ingest was interrupted"
    if renamed < 5:  # an IDX file not replaced yet
        split = "train" if renamed < 3 else "holdout"  # its images, other ones now
        with pytest.raises(DataError, match=mixed) as refused:
            extra.read_split(layout.extra_dir, split)
        assert str(refused.value).count("mnist-pipeline ingest") == 1  # the hint said once
        with pytest.raises(DataError, match=mixed):
            extra.extra_sha256(layout.extra_dir)
    with pytest.raises(DataError, match=mixed):  # the manifest is the last to go
        check_split_with(layout.extra_dir, 50)
    ingest(IngestParams(holdout_percent=50), layout)
    assert sum(len(extra.read_split(layout.extra_dir, s)) for s in extra.SPLITS) == 12
    (layout.extra_dir / extra.MANIFEST_FILE).unlink()  # named by checksums.json: not "older"
    with pytest.raises(DataError, match="missing .*manifest.json: run `mnist-pipeline ingest`"):
        check_split_with(layout.extra_dir, 50)


def test_a_failed_ingest_changes_no_output_and_keeps_the_pending_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnist_pipeline.inbox import events as inbox_events
    from mnist_pipeline.inbox import ingest as ingest_module

    layout = Layout(tmp_path)
    fill_inbox(layout, range(6))
    ingest(IngestParams(holdout_percent=50), layout)
    before = {p.name: p.read_bytes() for p in layout.extra_dir.iterdir()}
    fill_inbox(layout, range(6, 12))
    inbox_events.write_pending(layout.inbox, 6)
    write = Path.write_bytes

    def fails_writing(name: str) -> None:
        """Ingest again with the disk full when a file named like `name` is written."""

        def disk_full(path: Path, data: bytes) -> int:
            if name in path.name:
                raise OSError(28, "No space left on device")
            return write(path, data)

        with monkeypatch.context() as patch:
            patch.setattr(Path, "write_bytes", disk_full)
            with pytest.raises(OSError, match="No space left"):
                ingest(IngestParams(holdout_percent=50), layout)

    fails_writing(extra.labels_file("holdout"))
    after = {p.name: p.read_bytes() for p in layout.extra_dir.iterdir()}
    assert after == before  # no new images beside old labels, no temp file left
    assert inbox_events.read_pending(layout.inbox) == 6  # still counted for the trigger
    # The report is written with the data: failing to write it replaces neither.
    report = layout.ingest_report.read_bytes()
    fails_writing(layout.ingest_report.name)
    assert {p.name: p.read_bytes() for p in layout.extra_dir.iterdir()} == before
    assert layout.ingest_report.read_bytes() == report
    assert [p.name for p in layout.reports.iterdir()] == [layout.ingest_report.name]
    layout.ingest_report.unlink()
    layout.ingest_report.mkdir()  # a folder where the report goes: found before any rename
    with pytest.raises(IsADirectoryError, match=re.escape(str(layout.ingest_report))):
        ingest(IngestParams(holdout_percent=50), layout)
    assert {p.name: p.read_bytes() for p in layout.extra_dir.iterdir()} == before
    assert inbox_events.read_pending(layout.inbox) == 6
    layout.ingest_report.rmdir()

    real_write_many = ingest_module.write_many

    def added_meanwhile(files: dict[Path, bytes]) -> None:  # a `data add` while ingest writes
        inbox_events.count_here(layout.inbox)(2, None)
        real_write_many(files)

    monkeypatch.setattr(ingest_module, "write_many", added_meanwhile)
    result = ingest(IngestParams(holdout_percent=50), layout)
    assert sum(result.counts.values()) == 12
    assert inbox_events.read_pending(layout.inbox) == 2  # only what ingest did not read

    def event_meanwhile(files: dict[Path, bytes]) -> None:  # enough for the event, then more
        count = inbox_events.count_here(layout.inbox)
        assert count(5, 5) == (7, True)  # the event takes the 2 and these 5: the count is 0
        count(3, None)  # added after the event, not read by this ingest
        real_write_many(files)

    monkeypatch.setattr(ingest_module, "write_many", event_meanwhile)
    ingest(IngestParams(holdout_percent=50), layout)
    assert inbox_events.read_pending(layout.inbox) == 3  # not 3 minus the 2 ingest read


def test_two_ingests_at_once_take_turns_and_the_later_inbox_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dvc repro` beside a CLI `ingest`: each writes five files, which two at once could
    interleave (one's images beside the other's labels); the lock makes them take turns."""
    from mnist_pipeline.inbox import ingest as ingest_module

    layout = Layout(tmp_path)
    fill_inbox(layout, range(4))
    real_write_many = ingest_module.write_many
    inside, most = [0], [0]
    first_writing, added = threading.Event(), threading.Event()

    def slow_write_many(files: dict[Path, bytes]) -> None:
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        first_writing.set()
        added.wait(10)  # the second run starts meanwhile, with two more images in the inbox
        time.sleep(0.3)
        real_write_many(files)
        inside[0] -= 1

    monkeypatch.setattr(ingest_module, "write_many", slow_write_many)
    results = {}

    def run(name: str) -> None:
        results[name] = ingest(IngestParams(holdout_percent=0), layout)

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert first_writing.wait(10)
    fill_inbox(layout, range(4, 6))
    second = threading.Thread(target=run, args=("second",))
    second.start()
    added.set()
    first.join(30)
    second.join(30)
    assert most[0] == 1  # never two writing at once
    assert results["first"].counts["train"] == 4 and results["second"].counts["train"] == 6
    manifest = json.loads((layout.extra_dir / extra.MANIFEST_FILE).read_text())
    assert len(manifest) == 6  # the later inbox, whole: images, labels and manifest agree
    split = extra.read_split(layout.extra_dir, "train")
    assert len(split) == 6 and list(split.labels) == [m["label"] for m in manifest]
    assert json.loads(layout.ingest_report.read_text())["counts"]["train"] == 6


def test_report_per_class_counts_each_split_and_digit(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    added = fill_inbox(layout, range(40))  # sha -> label, from `data add`, not from ingest
    ingest(IngestParams(holdout_percent=30), layout)
    expected = {s: [0] * 10 for s in extra.SPLITS}
    for sha, label in added.items():
        expected[split_of(sha, 30)][label] += 1
    assert min(map(sum, expected.values())) > 0  # both splits used: a swap would show
    assert json.loads(layout.ingest_report.read_text())["per_class"] == expected


def test_the_extra_identity_changes_when_only_the_holdout_does(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    fill_inbox(layout, range(20))
    ingest(IngestParams(holdout_percent=50), layout)
    before = extra.extra_sha256(layout.extra_dir)
    train = {n: (layout.extra_dir / n).read_bytes() for n in extra.data_files()[:2]}
    manifest = json.loads((layout.extra_dir / extra.MANIFEST_FILE).read_text())
    held = next(m for m in manifest if m["split"] == "holdout")
    (layout.inbox / held["source"]).unlink()  # one held-out digit fewer, the same train split
    result = ingest(IngestParams(holdout_percent=50), layout)
    assert {n: (layout.extra_dir / n).read_bytes() for n in extra.data_files()[:2]} == train
    assert result.extra_sha256 == extra.extra_sha256(layout.extra_dir) != before


def test_cli_ingest_prints_the_counts_per_split(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    added = fill_inbox(layout, range(12))
    (tmp_path / "params.yaml").write_text("ingest:\n  holdout_percent: 50\n")
    (layout.inbox / "7" / "bad.png").write_bytes(b"nope")
    held = sum(split_of(sha, 50) == "holdout" for sha in added)
    assert 0 < held < 12
    out = CliRunner().invoke(app, ["--root", str(tmp_path), "ingest"])
    assert out.exit_code == 0, out.output
    line = f"ingested {12 - held} train + {held} holdout labelled digit(s), 1 refused"
    assert line in out.output, out.output
