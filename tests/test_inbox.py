"""The labelled-digit inbox: content-addressed, deduplicated, conflicts refused, atomic."""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from filelock import Timeout
from PIL import Image
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core import regular_file
from mnist_pipeline.core.errors import DataError
from mnist_pipeline.inbox import lookup
from mnist_pipeline.inbox import store as inbox
from tests.example_helpers import draw_digit


def add_file(folder: Path, path: Path, label: int) -> inbox.Added:
    """`data add` of one file: its bytes read as the command reads them (errors name it)."""
    return inbox.add(folder, inbox.read_file(path), str(path), label)


def as_format(path: Path, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.open(path).convert("RGB").save(out, format=fmt)
    return out.getvalue()


def test_added_images_are_named_by_content_once(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "extra"
    png = draw_digit(tmp_path / "a.png", 1).read_bytes()
    first = inbox.add(folder, png, "a.png", 7)
    assert first.new and first.entry.path.parent == folder / "7"
    assert first.entry.path.name == f"{first.entry.sha256}.png"
    assert first.entry.path.read_bytes() == png
    again = inbox.add(folder, png, "copy.png", "7")
    assert not again.new and again.entry == first.entry
    jpeg = inbox.add(folder, as_format(tmp_path / "a.png", "JPEG"), "a.jpg", 7)
    assert jpeg.new and jpeg.entry.path.suffix == ".jpeg"  # any format predict reads
    pictures = [Image.open(tmp_path / "a.png").convert("RGB")] * 2
    camera = io.BytesIO()  # a multi-picture JPEG (MPO), as some cameras write: a JPEG
    pictures[0].save(camera, format="MPO", save_all=True, append_images=pictures[1:])
    mpo = inbox.add(folder, camera.getvalue(), "camera.jpg", 7)
    assert mpo.new and mpo.entry.path.suffix == ".jpeg"
    assert [e.label for e in inbox.entries(folder)] == [7, 7, 7]
    assert not list(folder.rglob("*.tmp*"))


def test_an_image_removed_while_the_inbox_is_read_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file another command removes between the listing and the hashing is not an error."""
    folder = tmp_path / "data" / "extra"
    kept = inbox.add(folder, draw_digit(tmp_path / "a.png", 1).read_bytes(), "a.png", 7).entry
    gone = inbox.add(folder, draw_digit(tmp_path / "b.png", 2).read_bytes(), "b.png", 7).entry
    hash_file = inbox.file_sha256

    def removed_first(path: Path) -> str:
        if path == gone.path:
            path.unlink()
        return hash_file(path)

    monkeypatch.setattr(inbox, "file_sha256", removed_first)
    assert inbox.entries(folder) == [kept]


def test_an_image_removed_while_it_is_looked_up_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "data" / "extra"
    gone = inbox.add(folder, draw_digit(tmp_path / "a.png", 1).read_bytes(), "a.png", 7).entry
    hash_file = inbox.file_sha256

    def removed_first(path: Path) -> str:
        path.unlink(missing_ok=True)
        return hash_file(path)

    monkeypatch.setattr(inbox, "file_sha256", removed_first)
    assert inbox.find(folder, gone.sha256) is None


def test_remove_looks_images_up_under_the_inbox_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two removes at once: the second must look up what is left, so the lookup is locked."""
    folder = tmp_path / "data" / "extra"
    entry = inbox.add(folder, draw_digit(tmp_path / "a.png", 1).read_bytes(), "a.png", 7).entry
    resolve, held = lookup.resolve, []

    def resolve_noting_the_lock(where: Path, refs: list[str]) -> list[inbox.Entry]:
        other = inbox.lock(where)
        try:
            other.acquire(timeout=0)
            other.release()
            held.append(False)
        except Timeout:
            held.append(True)
        return resolve(where, refs)

    monkeypatch.setattr(lookup, "resolve", resolve_noting_the_lock)
    assert lookup.remove(folder, [entry.sha256[:8]]) == [entry] and held == [True]


def test_bad_images_labels_and_conflicts_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "extra"
    png = draw_digit(tmp_path / "a.png", 2).read_bytes()
    inbox.add(folder, png, "a.png", 3)
    with pytest.raises(inbox.LabelConflict, match=r"already in the inbox labelled 3 .* label it 5"):
        inbox.add(folder, png, "a.png", 5)
    blank = io.BytesIO()
    Image.new("L", (50, 50), 255).save(blank, format="PNG")
    for data, label, message in (
        (b"not an image", 1, "x: not a recognised image file"),
        (png[:100], 1, "x: cannot read or decode"),
        (blank.getvalue(), 1, "x: .*blank"),
        (png, 10, "label must be one digit 0-9, got 10"),
        (png, "seven", "label must be one digit"),
    ):
        with pytest.raises(DataError, match=message):
            inbox.add(folder, data, "x", label)
    assert [e.label for e in inbox.entries(folder)] == [3]


def test_hand_dropped_files_are_listed_and_removal_needs_one_match(tmp_path: Path) -> None:
    folder = tmp_path / "extra"
    (folder / "4").mkdir(parents=True)
    draw_digit(folder / "4" / "scan-0001.png", 4)
    added = inbox.add(folder, draw_digit(tmp_path / "b.png", 5).read_bytes(), "b.png", 4)
    listed = inbox.entries(folder)
    assert [e.path.name for e in listed] == sorted([added.entry.path.name, "scan-0001.png"])
    with pytest.raises(DataError, match="matches no image"):
        lookup.remove(folder, ["0123456789abcdef"])
    with pytest.raises(DataError, match="'ab' is too short a SHA-256 prefix: use 8 or more"):
        lookup.remove(folder, ["ab"])
    with pytest.raises(DataError, match=f"{tmp_path}: a folder, not an image file"):
        add_file(folder, tmp_path, 4)
    named_twice = [added.entry.sha256[:8], str(added.entry.path)]
    assert lookup.remove(folder, named_twice) == [added.entry]
    assert [e.path.name for e in inbox.entries(folder)] == ["scan-0001.png"]
    # The same image dropped by hand under two labels: no prefix can choose, a path can.
    (folder / "7").mkdir()
    copy = folder / "7" / "scan-0001.png"
    copy.write_bytes((folder / "4" / "scan-0001.png").read_bytes())
    sha = inbox.file_sha256(copy)
    with pytest.raises(DataError) as info:
        lookup.remove(folder, [sha[:10]])
    assert str(info.value) == (
        f"'{sha[:10]}': one image is in {folder} 2 times ({folder / '4' / 'scan-0001.png'}, "
        f"{copy}): name one by its path"
    )
    assert [e.label for e in lookup.remove(folder, [str(copy)])] == [7]


def test_a_digit_folder_that_is_a_link_is_read_like_any_other(tmp_path: Path) -> None:
    """data/extra/3 a symbolic link to a folder elsewhere: what `add` stores through it is
    listed, read by ingest and removable (listing used to skip linked folders, while `add`
    found images in them: stored, then neither listed nor removable nor relabelled)."""
    folder, elsewhere = tmp_path / "data" / "extra", tmp_path / "threes"
    folder.mkdir(parents=True)
    elsewhere.mkdir()
    (folder / "3").symlink_to(elsewhere, target_is_directory=True)
    added = inbox.add(folder, draw_digit(tmp_path / "a.png", 3).read_bytes(), "a.png", 3)
    draw_digit(elsewhere / "by-hand.png", 4)
    assert added.new and (elsewhere / added.entry.path.name).is_file()
    assert {e.path.name for e in inbox.entries(folder)} == {added.entry.path.name, "by-hand.png"}
    assert [label for label, _ in inbox.listing(folder)[0]] == [3, 3]  # what ingest reads
    with pytest.raises(inbox.LabelConflict, match="already in the inbox labelled 3"):
        inbox.add(folder, added.entry.path.read_bytes(), "again.png", 8)
    assert lookup.remove(folder, [added.entry.sha256[:8]]) == [added.entry]
    assert [e.path.name for e in inbox.entries(folder)] == ["by-hand.png"]


def test_an_image_is_found_by_its_name_before_the_inbox_is_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "extra"
    added = [
        inbox.add(folder, draw_digit(tmp_path / f"{d}.png", d).read_bytes(), "x", d).entry
        for d in range(4)
    ]
    hashed: list[Path] = []
    real = inbox.file_sha256
    monkeypatch.setattr(inbox, "file_sha256", lambda path: hashed.append(path) or real(path))
    assert inbox.find(folder, added[2].sha256) == added[2]
    assert hashed == [added[2].path]  # one file read, not the whole inbox
    hashed.clear()
    renamed = added[1].path.with_name("scan.png")  # a hand-named file is still found
    added[1].path.rename(renamed)
    assert inbox.find(folder, added[1].sha256) == inbox.Entry(1, renamed, added[1].sha256)
    assert len(hashed) == 4
    added[3].path.write_bytes(added[0].path.read_bytes())  # a name its content does not match
    assert inbox.find(folder, added[3].sha256) is None


def test_concurrent_adds_of_one_image_store_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "extra"
    png = draw_digit(tmp_path / "c.png", 6).read_bytes()
    write = inbox.write_bytes

    def slow_write(path: Path, data: bytes) -> None:
        time.sleep(0.2)  # the others have all looked for the image by now, unless a lock held them
        write(path, data)

    monkeypatch.setattr(inbox, "write_bytes", slow_write)
    results: list[inbox.Added] = []
    start = threading.Barrier(8)

    def add() -> None:
        start.wait()
        results.append(inbox.add(folder, png, "c", 6))

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.new for r in results) == 1 and len(inbox.entries(folder)) == 1


def test_data_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    image = draw_digit(tmp_path / "d.png", 3)
    (tmp_path / "params.yaml").write_text("{}\n")
    base = ["--root", str(tmp_path), "data"]
    added = runner.invoke(app, [*base, "add", str(image), "--label", "2"])
    assert added.exit_code == 0, added.output
    assert runner.invoke(app, [*base, "add", str(image), "--label", "12"]).exit_code == 2
    conflict = runner.invoke(app, [*base, "add", str(image), "--label", "3"])
    assert conflict.exit_code == 1 and isinstance(conflict.exception, inbox.LabelConflict)
    listed = runner.invoke(app, [*base, "list", "--json"])
    (entry,) = __import__("json").loads(listed.stdout)
    assert entry["label"] == 2
    stray = tmp_path / "data" / "extra" / "2" / "sub" / "x.png"  # ingest refuses it
    stray.parent.mkdir()
    shutil.copyfile(image, stray)
    listed = runner.invoke(app, [*base, "list"])
    assert listed.exit_code == 0 and "1 image(s); per digit: 0:0 1:0 2:1" in listed.stderr
    assert "1 file(s) outside the digit folders" in listed.stderr and str(stray) in listed.stderr
    shutil.rmtree(stray.parent)
    assert runner.invoke(app, [*base, "remove", entry["sha256"][:10]]).exit_code == 0
    assert inbox.entries(tmp_path / "data" / "extra") == []
    shutil.rmtree(tmp_path / "data" / "extra")  # its empty digit folder too
    (tmp_path / "data" / "extra").write_text("")  # a file where the inbox should be
    not_a_folder = runner.invoke(app, [*base, "list"])  # not "0 image(s)", as add would refuse
    assert not_a_folder.exit_code == 1 and isinstance(not_a_folder.exception, DataError)
    assert "is not a folder" in str(not_a_folder.exception)


def test_pending_new_images_are_counted_and_kept_when_the_server_is_down(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from mnist_pipeline.inbox import events as inbox_events
    from tests.process_helpers import free_port

    folder = tmp_path / "data" / "extra"
    nobody = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: nobody}):
        assert inbox_events.server_configured() == nobody
        assert inbox_events.note_added(folder, 2, {}, min_new=3, model_name="m") is None
        assert inbox_events.read_pending(folder) == 2
        told = inbox_events.note_added(folder, 0, {}, min_new=1, model_name="m")
        assert told is None and inbox_events.read_pending(folder) == 2  # nothing new: no event
        told = inbox_events.note_added(folder, 1, {}, min_new=3, model_name="m")
    assert told is not None
    assert told.startswith(f"warning: could not tell the Prefect server at {nobody}")
    assert told.endswith("3 pending") and inbox_events.read_pending(folder) == 3
    inbox_events.pending_file(folder).write_text("not json")
    assert inbox_events.read_pending(folder) == 0  # unreadable: counting starts again


def test_prefect_settings_it_refuses_leave_the_images_stored_and_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PREFECT_* variable Prefect refuses failed `data add` and `data accept` with a
    traceback after the images were stored; now they are, and a warning says they were not
    counted for the trigger."""
    from mnist_pipeline.inbox import events as inbox_events
    from tests.flow_helpers import refuse_prefect_settings

    refuse_prefect_settings(monkeypatch)
    folder = tmp_path / "data" / "extra"
    told = inbox_events.note_added(folder, 2, {}, min_new=3, model_name="m")
    assert told.startswith(
        "warning: 2 new image(s) not counted for the retraining trigger: Prefect's settings "
        "are refused: 1 validation error for int; Input should be a valid integer"
    ), told
    image = str(draw_digit(tmp_path / "d.png", 5))
    (tmp_path / "params.yaml").write_text("{}\n")
    added = CliRunner().invoke(app, ["--root", str(tmp_path), "data", "add", "--label", "5", image])
    assert added.exit_code == 0 and "not counted for the retraining trigger" in added.output
    assert [e.label for e in inbox.entries(folder)] == [5]


def test_a_link_loop_named_for_removal_is_no_image(tmp_path: Path) -> None:
    folder = tmp_path / "extra"
    added = add_file(folder, draw_digit(tmp_path / "mine.png", 5), 5)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(DataError, match="no image"):
        lookup.remove(folder, [str(loop)])
    assert inbox.entries(folder) == [added.entry]


def test_an_image_is_removed_by_the_users_own_copy(tmp_path: Path) -> None:
    folder = tmp_path / "extra"
    mine = draw_digit(tmp_path / "mine.png", 5)
    added = add_file(folder, mine, 5)
    other = draw_digit(tmp_path / "other.png", 6)
    with pytest.raises(DataError, match=r"other.png: no image with its content \(\w{12}\) in "):
        lookup.remove(folder, [str(other)])
    assert lookup.remove(folder, [str(mine)]) == [added.entry]
    assert inbox.entries(folder) == [] and mine.exists()  # the user's copy stays
    again = add_file(folder, mine, 5)
    pasted = f" {again.entry.sha256[:10].upper()} "  # as `data accept` and `models show` take it
    assert lookup.resolve(folder, [pasted]) == [again.entry]


def test_a_file_in_the_inbox_that_is_not_one_of_its_images_never_removes_its_labelled_copy(
    tmp_path: Path,
) -> None:
    """Ingest refuses a copy outside the digit folders; naming it to `remove` must not match
    the labelled image with the same content in its place (on a shared inbox: on every host)."""
    folder = tmp_path / "extra"
    added = add_file(folder, draw_digit(tmp_path / "mine.png", 5), 5)
    misplaced = [folder / "stray.png", folder / "5" / "sub" / "x.png", folder / "5" / ".hidden"]
    for copy in misplaced:
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(added.entry.path, copy)
        for ref in (str(copy), os.path.relpath(copy)):
            with pytest.raises(DataError, match=r": not one of the inbox's images \(those are "):
                lookup.remove(folder, [ref])
        assert copy.exists() and inbox.entries(folder) == [added.entry]
    linked = tmp_path / "linked"
    linked.symlink_to(folder, target_is_directory=True)  # the inbox reached through a link
    with pytest.raises(DataError, match="not one of the inbox's images"):
        lookup.remove(folder, [str(linked / "stray.png")])
    assert lookup.remove(folder, [str(linked / "5" / added.entry.path.name)]) == [added.entry]


def test_add_stopping_at_a_bad_file_names_those_not_added(tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "params.yaml").write_text("{}\n")
    good = [draw_digit(tmp_path / f"{d}.png", d) for d in (1, 7)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    for extra in ([], ["--pending"]):
        args = ["--root", str(tmp_path), "data", "add", *extra, "-l", "1"]
        done = runner.invoke(app, [*args, str(good[0]), str(bad), str(good[1])])
        assert done.exit_code == 1, done.output
        assert f"stopped at {bad}, so not added: {good[1]}" in done.output
    assert [e.label for e in inbox.entries(tmp_path / "data" / "extra")] == [1]
    from mnist_pipeline.inbox import events as inbox_events

    assert inbox_events.read_pending(tmp_path / "data" / "extra") == 1  # the one stored counts


def test_file_names_are_shown_with_their_control_characters_escaped(tmp_path: Path) -> None:
    """A name's newline or escape sequence is shown, not obeyed (and `[bold]` is no markup)."""
    runner = CliRunner()
    (tmp_path / "params.yaml").write_text("{}\n")
    odd = draw_digit(tmp_path / "a\x1b[31m\n[bold]b.png", 1)
    bad = tmp_path / "bad\x1b[2J.png"
    bad.write_bytes(b"not an image")
    for extra in ([], ["--pending"]):
        args = ["--root", str(tmp_path), "data", "add", *extra, "-l", "1"]
        done = runner.invoke(app, [*args, str(bad), str(odd)])
        assert done.exit_code == 1 and "\x1b" not in done.output, done.output
        assert f"stopped at {tmp_path}/bad\\x1b[2J.png, so not added: {tmp_path}/a\\x1b[31m" in (
            done.output
        )
    done = runner.invoke(
        app, ["--root", str(tmp_path), "data", "add", "--pending", "-l", "1", str(odd)]
    )
    assert done.exit_code == 0 and f"pending review: {tmp_path}/a\\x1b[31m\\n[bold]b.png " in (
        done.output
    )


def test_a_folder_where_the_count_belongs_is_refused_before_any_image_is_added(
    tmp_path: Path,
) -> None:
    """Before: `added: ...`, then an error and exit 74, the image in and never counted."""
    from mnist_pipeline.inbox import events as inbox_events

    (tmp_path / "params.yaml").write_text("{}\n")
    count = inbox_events.pending_file(tmp_path / "data" / "extra")
    count.mkdir(parents=True)
    image = draw_digit(tmp_path / "d.png", 4)
    done = CliRunner().invoke(app, ["--root", str(tmp_path), "data", "add", str(image), "-l", "4"])
    assert isinstance(done.exception, IsADirectoryError), done.output
    assert done.exception.filename == str(count) and "added" not in done.output
    assert inbox.entries(tmp_path / "data" / "extra") == []


def test_only_a_regular_file_of_at_most_the_limit_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipe, a device or an oversized file is refused from its metadata, before any read: a
    pipe without a writer would wait forever, /dev/zero would fill the memory."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(DataError, match=f"{pipe}: not a regular file"):
        inbox.read_file(pipe)  # returns at once (a read would block: no writer)
    with pytest.raises(DataError, match="/dev/zero: not a regular file"):
        inbox.read_file(Path("/dev/zero"))
    big = tmp_path / "big.png"
    with big.open("wb") as file:
        file.truncate(inbox.MAX_FILE_BYTES + 1)  # sparse: no real bytes written
    read: list[int] = []
    with monkeypatch.context() as patched:  # the bytes would be read from the descriptor
        patched.setattr(regular_file.os, "fdopen", lambda fd, *a, **k: read.append(fd))
        with pytest.raises(DataError, match=f"{big}: 10,000,001 bytes, over the limit of 10,0"):
            inbox.read_file(big)
    assert read == []  # refused from its size as opened, never read
    (tmp_path / "params.yaml").write_text("{}\n")
    for extra in ([], ["--pending"]):
        args = ["--root", str(tmp_path), "data", "add", *extra, "-l", "3", str(pipe)]
        result = CliRunner().invoke(app, args)
        assert isinstance(result.exception, DataError), result.output
        assert str(result.exception).startswith(f"{pipe}: not a regular file")


@pytest.mark.parametrize("where", ["here", "shared"])
def test_adding_and_accepting_many_images_hashes_the_inbox_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """`data add` and `data accept` of several new images hash every inbox file once for the
    command, not once per image (an image is found by name only where `add` named it), with
    this host's inbox or a shared one; each image is added under the inbox's lock of its own."""
    import hashlib

    from mnist_pipeline.core.layout import Layout

    params = "{}\n" if where == "here" else f"inbox:\n  shared: {tmp_path / 'store'}\n"
    (tmp_path / "store").mkdir()
    (tmp_path / "params.yaml").write_text(params)
    folder, root = Layout(tmp_path).inbox, ["--root", str(tmp_path), "data"]
    for seed in range(12):
        inbox.add(folder, draw_digit(tmp_path / f"old{seed}.png", seed).read_bytes(), "x", 1)
    new = [str(draw_digit(tmp_path / f"new{seed}.png", 12 + seed)) for seed in range(4)]
    hashed: list[Path] = []
    real = inbox.file_sha256
    monkeypatch.setattr(inbox, "file_sha256", lambda path: hashed.append(path) or real(path))
    locks = []
    lock = inbox.lock
    monkeypatch.setattr(inbox, "lock", lambda folder: locks.append(folder) or lock(folder))
    added = CliRunner().invoke(app, [*root, "add", *new, "--label", "2"])
    assert added.exit_code == 0, added.output
    count = len(hashed)  # the inbox as found (12 files), and as left, for the event (16)
    assert len(inbox.entries(folder)) == 16 and count == 12 + 16, hashed
    assert len(locks) >= 4  # one per image, not one held for the whole command
    later = [draw_digit(tmp_path / f"later{seed}.png", 16 + seed) for seed in range(3)]
    queued = CliRunner().invoke(app, [*root, "add", *map(str, later), "-l", "3", "--pending"])
    assert queued.exit_code == 0, queued.output
    hashed.clear()
    shas = [hashlib.sha256(path.read_bytes()).hexdigest()[:12] for path in later]
    accepted = CliRunner().invoke(app, [*root, "accept", *shas])
    assert accepted.exit_code == 0, repr(accepted.exception)
    count = len(hashed)  # as found (16), and as left, for the event (19)
    assert len(inbox.entries(folder)) == 19 and count == 16 + 19, hashed
