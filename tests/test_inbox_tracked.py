"""`mnist-pipeline data init` (dvc.yaml's `inbox` stage): the inbox a fresh clone lacks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageDraw

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.inbox import tracked
from tests.fault_helpers import cli


def write_lock(project: Path, nfiles: int) -> None:
    """A dvc.lock recording an inbox of `nfiles` files, as `dvc repro` writes it."""
    out = {"path": "data/extra", "hash": "md5", "md5": "0" * 32 + ".dir", "nfiles": nfiles}
    stage = {"cmd": "mnist-pipeline data init", "outs": [out]}
    lock = {"schema": "2.0", "stages": {"inbox": stage}}
    (project / "dvc.lock").write_text(yaml.safe_dump(lock), encoding="utf-8")


def test_an_absent_inbox_is_created_empty_and_a_present_one_is_kept(tmp_path: Path) -> None:
    inbox = tmp_path / "data" / "extra"
    assert tracked.ensure_inbox(tmp_path, inbox) is True
    assert inbox.is_dir() and not any(inbox.iterdir())
    (inbox / "3").mkdir()
    (inbox / "3" / "a.png").write_bytes(b"png")
    assert tracked.ensure_inbox(tmp_path, inbox) is False
    assert (inbox / "3" / "a.png").read_bytes() == b"png"


def test_a_lock_recording_an_empty_inbox_lets_it_be_created(tmp_path: Path) -> None:
    write_lock(tmp_path, 0)
    assert tracked.recorded_files(tmp_path, tmp_path / "data" / "extra") == 0
    assert tracked.ensure_inbox(tmp_path, tmp_path / "data" / "extra") is True


def test_images_the_lock_records_but_the_clone_lacks_are_not_replaced(tmp_path: Path) -> None:
    write_lock(tmp_path, 6)
    inbox = tmp_path / "data" / "extra"
    with pytest.raises(DataError, match=r"records 6 file\(s\).*`dvc pull data/extra`"):
        tracked.ensure_inbox(tmp_path, inbox)
    assert not inbox.exists()  # nothing created
    (tmp_path / "params.yaml").write_text("{}\n")
    assert cli(tmp_path, "data", "init") != 0
    assert not inbox.exists()


def test_a_file_where_the_inbox_belongs_and_a_broken_lock_are_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "extra").write_text("not a folder")
    with pytest.raises(DataError, match="not a folder"):
        tracked.ensure_inbox(tmp_path, tmp_path / "data" / "extra")
    (tmp_path / "dvc.lock").write_text("stages: [unclosed\n")
    with pytest.raises(DataError, match="cannot read .*dvc.lock"):
        tracked.ensure_inbox(tmp_path, tmp_path / "data" / "new")
    (tmp_path / "data" / "extra").unlink()
    inbox = tmp_path / "data" / "extra"
    out = "{path: data/extra, nfiles: %s}"
    for shape in (  # YAML, but not as DVC writes it: one error, not a traceback
        "[a, list]",
        "stages: {inbox: {outs: [%s]}}" % (out % "null"),
        "stages: {inbox: {outs: [%s]}}" % (out % "many"),
        "stages: {inbox: {outs: [%s]}}" % (out % ".inf"),
        "stages: {inbox: {outs: [data/extra]}}",
        "stages: {inbox: [outs]}",
    ):
        (tmp_path / "dvc.lock").write_text(shape + "\n")
        with pytest.raises(DataError, match=r"cannot read .*dvc.lock: its 'inbox' stage is not"):
            tracked.ensure_inbox(tmp_path, inbox)
        assert cli(tmp_path, "data", "init") == 1
        assert not inbox.exists()
    (tmp_path / "dvc.lock").write_text("[" * 100_000 + "]" * 100_000)  # nested too deeply
    with pytest.raises(DataError, match=r"cannot read .*dvc.lock: nested too deeply"):
        tracked.ensure_inbox(tmp_path, inbox)
    (tmp_path / "dvc.lock").write_text("stages: {inbox: {outs: [{md5: x}]}}\n")  # no path
    assert cli(tmp_path, "data", "init") == 0 and inbox.is_dir()


def test_data_init_creates_the_inbox(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "params.yaml").write_text("{}\n")
    assert cli(tmp_path, "data", "init") == 0
    assert (tmp_path / "data" / "extra").is_dir()
    assert "created the empty inbox" in capsys.readouterr().err  # the console writes to stderr
    assert cli(tmp_path, "data", "init") == 0
    assert "the inbox holds 0 image(s)" in capsys.readouterr().err  # the console writes to stderr


def test_adding_or_accepting_in_a_clone_before_dvc_pull_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Creating the inbox there would record it in dvc.lock without the images it records."""
    write_lock(tmp_path, 3)
    (tmp_path / "params.yaml").write_text("{}\n")
    image = tmp_path / "seven.png"
    drawn = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(drawn).line((14, 4, 14, 24), fill=255, width=3)
    drawn.save(image)
    inbox = tmp_path / "data" / "extra"
    assert cli(tmp_path, "data", "add", str(image), "--label", "7") == 1
    assert "records 3 file(s) in it: run `dvc pull data/extra` first" in capsys.readouterr().err
    assert cli(tmp_path, "data", "accept", "0123456789abcdef") == 1
    assert "`dvc pull data/extra`" in capsys.readouterr().err
    assert not inbox.exists()
    assert cli(tmp_path, "data", "add", "--pending", str(image), "--label", "7") == 0  # quarantine


def test_a_broken_link_where_the_inbox_belongs_is_named(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "extra").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataError, match=r"is a link to .*elsewhere, which is missing"):
        tracked.ensure_inbox(tmp_path, tmp_path / "data" / "extra")


def test_data_on_another_disk_through_a_link_is_found_as_dvc_names_it(tmp_path: Path) -> None:
    """`data` a link to a folder outside the project (data on another disk): dvc.lock names the
    inbox `data/extra` still, links not followed."""
    project, disk = tmp_path / "project", tmp_path / "disk"
    project.mkdir()
    disk.mkdir()
    (project / "data").symlink_to(disk)
    write_lock(project, 6)
    inbox = project / "data" / "extra"
    with pytest.raises(DataError, match=r"records 6 file\(s\).*`dvc pull data/extra`"):
        tracked.ensure_inbox(project, inbox)
    write_lock(project, 0)
    (project / "params.yaml").write_text("{}\n")
    assert cli(project, "data", "init") == 0 and (disk / "extra").is_dir()
    assert tracked.recorded_files(project, tmp_path / "elsewhere" / "extra") == 0  # outside
