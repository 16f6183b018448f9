"""Operating-system errors (not a folder, read-only, disk full) are one line and exit code 74."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.cli.app import main
from mnist_pipeline.core import atomic
from mnist_pipeline.core.errors import EXIT_IO, StageFailed, describe_os_error, one_line_errors
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import ModelParams, TrainParams
from mnist_pipeline.evaluation.evaluate import STAGING
from mnist_pipeline.training import loop
from mnist_pipeline.training.train import train

TINY = {"epochs": 1, "batch_size": 32, "val_size": 32, "num_threads": 1}


def cli(root: Path, *args: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr("sys.argv", ["mnist-pipeline", "--root", str(root), *args])
    with pytest.raises(SystemExit) as info:
        main()
    return int(info.value.code)


def test_train_checks_its_output_folders_before_an_epoch(
    tmp_path: Path, tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout(tmp_path)
    layout.model_dir.write_text("a file where the models folder should be")
    monkeypatch.setattr(loop, "train_epoch", lambda *a, **k: pytest.fail("trained an epoch"))
    with pytest.raises(FileExistsError) as info:
        train(ModelParams(), TrainParams(**TINY), layout)
    assert info.value.filename == str(layout.model_dir)


@pytest.mark.parametrize("output", ["state_dict", "train_record", "train_history", "checkpoint"])
def test_train_finds_a_folder_where_an_output_file_belongs_before_an_epoch(
    tmp_path: Path, tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch, output: str
) -> None:
    layout = Layout(tmp_path)
    getattr(layout, output).mkdir(parents=True)
    monkeypatch.setattr(loop, "train_epoch", lambda *a, **k: pytest.fail("trained an epoch"))
    with pytest.raises(IsADirectoryError) as info:
        train(ModelParams(), TrainParams(**TINY), layout)
    assert info.value.filename == str(getattr(layout, output))


def test_a_train_whose_last_write_fails_keeps_the_previous_run_whole(
    tmp_path: Path, tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights, history and record are written in full before any replaces its target: a
    failure while writing the last of them (here the record: a full disk) replaces none."""
    layout = Layout(tmp_path)
    train(ModelParams(), TrainParams(**TINY), layout)
    files = (layout.state_dict, layout.train_history, layout.train_timings, layout.train_record)
    before = {path: path.read_bytes() for path in files}
    real_text = Path.write_text

    def full_disk(self: Path, text: str, *args, **kwargs) -> int:
        if self.name.startswith(f".{layout.train_record.name}."):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match="No space left"):
        train(ModelParams(), TrainParams(**{**TINY, "seed": 7}), layout)
    monkeypatch.undo()
    assert {path: path.read_bytes() for path in files} == before
    assert {p.name for p in layout.model_dir.glob(".*")} == {".train.lock"}  # no temp files


def test_train_removes_what_a_killed_training_left_and_nothing_else(
    tmp_path: Path, tiny_data_dir: Path
) -> None:
    """The temp files of train's own outputs that a SIGKILL left (nothing removes them then)
    go with the next training, under its lock; another stage's temp file stays."""
    layout = Layout(tmp_path)
    layout.model_dir.mkdir(parents=True)
    left = [
        layout.model_dir / ".model.pt.k3j2x1.tmp.pt",
        layout.model_dir / ".checkpoint.pt.a1b2c3.tmp.pt",
        layout.train_history.parent / f".{layout.train_history.name}.q9w8e7.tmp.csv",
    ]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    exporting = layout.model_dir / ".model.onnx.z1y2x3.tmp.onnx"  # export may be writing it
    exporting.write_bytes(b"half an onnx")
    train(ModelParams(), TrainParams(**TINY), layout)
    assert [p for p in left if p.exists()] == [] and exporting.exists()
    assert sorted(p.name for p in layout.model_dir.glob(".*")) == [
        ".model.onnx.z1y2x3.tmp.onnx",
        ".train.lock",
    ]


def test_cli_io_error_is_one_line_with_exit_code_74(
    tmp_path: Path, tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": TINY}))
    Layout(tmp_path).model_dir.write_text("not a folder")
    assert cli(tmp_path, "train", monkeypatch=monkeypatch) == EXIT_IO
    err = capsys.readouterr().err
    assert err.strip() == f"error: {Layout(tmp_path).model_dir}: a file, where a folder is needed"


def test_a_folder_refusing_temp_files_is_named_by_the_file_asked_for() -> None:
    """The temp name (`/proc/.x.json.38iencb2.tmp.json`, `/proc/.write-check-k2x9`) is no file
    the user asked for."""
    for write in (lambda t: atomic.write_bytes(t, b"{}"), lambda t: atomic.write_many({t: b""})):
        with pytest.raises(OSError) as refused:
            write(Path("/proc/x.json"))  # no file can be created there, even by root
        assert refused.value.filename == "/proc/x.json"
    with pytest.raises(OSError) as refused:  # a stage's check before its work: the folder
        atomic.check_writable(Path("/proc"))
    assert refused.value.filename == "/proc"


def test_a_log_that_is_a_pipe_is_named_and_left_alone(tmp_path: Path) -> None:
    """A FIFO where an append-only log belongs (the review log): seeking it failed as "File or
    stream is not seekable", naming no file; now refused, naming it, before a byte is written."""
    log = tmp_path / "review-log.jsonl"
    os.mkfifo(log)
    with pytest.raises(OSError) as refused:
        atomic.append_line(log, "{}")
    assert describe_os_error(refused.value) == (
        f"{log}: not a regular file (a device, pipe or socket)"
    )


def test_a_file_where_a_folder_is_needed_is_named_as_such(tmp_path: Path) -> None:
    blocker = tmp_path / "models"
    blocker.write_text("not a folder")
    for make in (
        lambda: blocker.mkdir(exist_ok=True),
        lambda: (blocker / "a" / "b").mkdir(parents=True),
    ):
        with pytest.raises(OSError) as info:
            make()
        wanted = "" if info.value.filename == str(blocker) else f" (on the way to {blocker}/a"
        assert describe_os_error(info.value).startswith(
            f"{blocker}: a file, where a folder is needed{wanted}"
        ), describe_os_error(info.value)
    with pytest.raises(OSError) as info:
        (blocker / "x.json").write_text("{}")  # Not a directory
    assert describe_os_error(info.value) == (
        f"{blocker}: a file, where a folder is needed (on the way to {blocker}/x.json)"
    )
    # Other errors keep the OS's words; an existing file is not mistaken for a blocker.
    missing = OSError(errno.ENOENT, "No such file or directory", str(tmp_path / "gone"))
    assert describe_os_error(missing) == f"{tmp_path / 'gone'}: No such file or directory"
    exists = OSError(errno.EEXIST, "File exists", str(tmp_path))
    assert describe_os_error(exists) == f"{tmp_path}: File exists"
    # A descriptor or bytes where a path would be (os.stat(fd), a bytes path): still one line.
    assert describe_os_error(OSError(errno.ENOTDIR, "Not a directory", 3)) == "3: Not a directory"
    as_bytes = OSError(errno.EEXIST, "File exists", os.fsencode(blocker))
    assert describe_os_error(as_bytes) == f"{blocker}: a file, where a folder is needed"


def test_read_only_reports_leave_the_previous_report(
    tmp_path: Path, tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": TINY, "evaluate": {}}))
    assert cli(tmp_path, "train", monkeypatch=monkeypatch) == 0
    layout = Layout(tmp_path)
    layout.metrics.write_text(json.dumps({"previous": True}))
    capsys.readouterr()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(kwargs.get("dir", "?")))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    assert cli(tmp_path, "evaluate", monkeypatch=monkeypatch) == EXIT_IO
    *before, last = capsys.readouterr().err.strip().splitlines()
    # its first write: into the hidden folder in reports/ where evaluate makes its files, named
    # as the folder it stands for (it is removed by the time the error is read)
    assert last == f"error: {layout.reports}: Read-only file system", last
    assert list(layout.reports.rglob(f"{STAGING}*")) == []  # removed
    # the robustness set's cache cannot be written either: one warning, and evaluate goes on
    (warning,) = before
    assert warning.startswith(f"warning: cannot cache the robustness set in {tmp_path}")
    assert json.loads(layout.metrics.read_text()) == {"previous": True}


def test_a_stage_failing_on_the_disk_ends_a_flow_as_the_cli_does(capsys) -> None:
    """python -m flows.retrain: one line naming the path, exit 74, as `mnist-pipeline train`."""
    cause = OSError(errno.ENOSPC, "No space left on device", "runs/x/models/model.pt")
    with pytest.raises(SystemExit) as ended, one_line_errors():
        raise StageFailed.of("train", cause)
    assert ended.value.code == EXIT_IO
    err = capsys.readouterr().err
    assert err == "error: stage train failed: runs/x/models/model.pt: No space left on device\n"
