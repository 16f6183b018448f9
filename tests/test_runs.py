"""Run folders: the pruning policy keeps the newest, never the current one."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest
from filelock import FileLock, Timeout

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.pipeline import runs
from tests.synthetic import write_data_dir


def make_runs(project: Path, n: int) -> list[Path]:
    """n run folders, the first oldest (explicit mtimes 100 s apart)."""
    folders = []
    for i in range(n):
        folder = Layout.for_run(project, f"run-{i}").root
        (folder / "models").mkdir(parents=True)
        os.utime(folder, (1_000_000 + 100 * i, 1_000_000 + 100 * i))
        folders.append(folder)
    return folders


def test_keeps_the_newest_and_the_current(tmp_path: Path) -> None:
    folders = make_runs(tmp_path, 5)
    current = folders[0]  # the oldest, but the run that is pruning: never deleted
    deleted = runs.prune(tmp_path, keep=3, current=current)
    assert sorted(deleted) == sorted(folders[1:3])
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["run-0", "run-3", "run-4"]


def test_without_current_and_without_runs(tmp_path: Path) -> None:
    assert runs.prune(tmp_path, keep=2) == []  # no runs/ folder yet
    folders = make_runs(tmp_path, 3)
    assert runs.prune(tmp_path, keep=2) == [folders[0]]
    assert runs.prune(tmp_path, keep=2) == []


def test_run_layout_has_its_own_files_and_shares_the_registry(tmp_path: Path) -> None:
    layout = Layout.for_run(tmp_path, "brave-otter-1234abcd")
    assert layout.root == tmp_path / "runs" / "brave-otter-1234abcd"
    assert layout.state_dict == layout.root / "models" / "model.pt"
    assert layout.data_dir == layout.root / "data" / "mnist"
    assert layout.registry_root("registry") == tmp_path / "registry"
    assert layout.registry_root("/abs/reg") == Path("/abs/reg")


def test_snapshot_survives_the_shared_files_being_replaced(
    tmp_path: Path, tiny_data_dir: Path, tiny_files: dict[str, bytes]
) -> None:
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in tiny_files.items()}
    run = Layout.for_run(tmp_path, "r1")
    runs.snapshot_dataset(tiny_data_dir, run.data_dir, sha)
    for name in tiny_files:  # what `dvc repro --force` does to its outputs: delete, recreate
        (tiny_data_dir / name).unlink()
    assert {n: (run.data_dir / n).read_bytes() for n in tiny_files} == tiny_files
    with pytest.raises(DataError, match="missing dataset file .*: run `fetch`"):
        runs.snapshot_dataset(tiny_data_dir, Layout.for_run(tmp_path, "r2").data_dir, sha)
    write_data_dir(tiny_data_dir, {**tiny_files, "t10k-labels-idx1-ubyte": b"other"})
    with pytest.raises(DataError, match="changed while it was being snapshotted"):
        runs.snapshot_dataset(tiny_data_dir, Layout.for_run(tmp_path, "r3").data_dir, sha)


def test_a_retried_run_snapshots_into_its_own_folder_again(
    tmp_path: Path, tiny_data_dir: Path, tiny_files: dict[str, bytes]
) -> None:
    """A retry of a flow run has the same run folder: its snapshot is kept when whole and made
    again when not (a hard link onto itself used to fail)."""
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in tiny_files.items()}
    run = Layout.for_run(tmp_path, "r1")
    runs.snapshot_dataset(tiny_data_dir, run.data_dir, sha)
    runs.snapshot_dataset(tiny_data_dir, run.data_dir, sha)  # the retry: nothing to do
    spoilt = next(iter(tiny_files))
    (run.data_dir / spoilt).unlink()
    (run.data_dir / spoilt).write_bytes(b"half a file")
    runs.snapshot_dataset(tiny_data_dir, run.data_dir, sha)
    assert {n: (run.data_dir / n).read_bytes() for n in tiny_files} == tiny_files


def test_a_snapshot_missing_a_file_fetches_again_up_to_the_tries(
    tmp_path: Path, tiny_data_dir: Path, tiny_files: dict[str, bytes]
) -> None:
    """A `dvc repro --force` beside the run removed the shared files: the run fetches again and
    snapshots what the fetch wrote; a fetch that never restores them fails after `tries`."""
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in tiny_files.items()}
    for name in tiny_files:
        (tiny_data_dir / name).unlink()
    fetches: list[int] = []

    def fetch_on_second_call() -> None:
        fetches.append(1)
        if len(fetches) == 2:
            write_data_dir(tiny_data_dir, tiny_files)

    run = Layout.for_run(tmp_path, "r1")
    runs.snapshot_fetching_again(tiny_data_dir, run.data_dir, sha, fetch_on_second_call, tries=3)
    assert len(fetches) == 2
    assert {n: (run.data_dir / n).read_bytes() for n in tiny_files} == tiny_files
    for name in tiny_files:
        (tiny_data_dir / name).unlink()
    fetches.clear()
    with pytest.raises(DataError, match="missing dataset file"):
        runs.snapshot_fetching_again(
            tiny_data_dir, Layout.for_run(tmp_path, "r2").data_dir, sha, lambda: fetches.append(1)
        )
    assert len(fetches) == 2  # three snapshots in all, a fetch between each two


def test_a_run_still_going_keeps_its_folder_however_old(tmp_path: Path) -> None:
    """More runs at once than `keep` (a sweep's trials): the oldest, still running, stays."""
    folders = make_runs(tmp_path, 4)
    holding = runs.running(folders[0])  # the oldest run is still going
    assert runs.prune(tmp_path, keep=1, current=folders[3]) == folders[1:3][::-1]
    assert folders[0].is_dir()
    holding.release()  # it finished: the next prune may take it
    assert runs.prune(tmp_path, keep=1, current=folders[3]) == [folders[0]]


def test_no_run_can_start_in_a_folder_while_prune_deletes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prune holds the folder's run lock across the deletion: a run starting meanwhile (a retry
    of that run) waits, instead of working in a folder being deleted under it."""
    folders = make_runs(tmp_path, 2)
    real_rmtree = runs.shutil.rmtree
    starts: list[bool] = []

    def deleting(path: Path, **kwargs) -> None:
        try:  # another process's run taking the folder's lock now
            with FileLock(path / runs.RUNNING_LOCK, timeout=0):
                starts.append(True)
        except Timeout:
            starts.append(False)
        real_rmtree(path, **kwargs)

    monkeypatch.setattr(runs.shutil, "rmtree", deleting)
    assert runs.prune(tmp_path, keep=1) == [folders[0]]
    assert starts == [False] and not folders[0].exists()


def test_a_run_waiting_while_prune_deletes_its_folder_takes_it_again() -> None:
    """A retried run waits on its folder's lock while a prune (holding it) deletes the folder:
    its wait then fails on the missing file; it makes the folder anew and takes the lock there,
    so the next prune sees it held."""
    import tempfile
    import threading

    project = Path(tempfile.mkdtemp())
    folder = project / "runs" / "run-0"
    folder.mkdir(parents=True)
    held = threading.Event()

    def prune_deleting() -> None:  # prune's hold on the folder's lock while it deletes it
        with FileLock(folder / runs.RUNNING_LOCK, timeout=0):
            held.set()
            time.sleep(0.3)  # the run is waiting on the lock meanwhile
            shutil.rmtree(folder)

    pruner = threading.Thread(target=prune_deleting)
    pruner.start()
    assert held.wait(10)
    got = [runs.running(folder)]  # waits, then finds its lock file gone
    pruner.join(10)
    assert got and (folder / runs.RUNNING_LOCK).exists(), "the run did not take its folder again"
    assert runs.prune(project, keep=0) == [] and folder.is_dir()  # held: never deleted
    got[0].release()
    assert runs.prune(project, keep=0) == [folder]
    shutil.rmtree(project)


def test_a_folder_prune_cannot_lock_is_left_and_fails_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another user's run folder (its lock file not ours to open): logged and left alone."""
    folders = make_runs(tmp_path, 3)
    real_acquire = FileLock.acquire

    def refused(self, *args, **kwargs):
        if Path(self.lock_file).parent == folders[0]:
            raise PermissionError(13, "Permission denied", self.lock_file)
        return real_acquire(self, *args, **kwargs)

    monkeypatch.setattr(FileLock, "acquire", refused)
    assert runs.prune(tmp_path, keep=1) == [folders[1]]
    assert (
        folders[0].is_dir() and "not pruning" in caplog.text and "Permission denied" in caplog.text
    )


def test_a_run_fetches_into_the_project_only_for_the_projects_own_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnist_pipeline.data.manifest import DEFAULT_SHA256
    from mnist_pipeline.pipeline.runs import fetches_into_project

    other = {name: "0" * 64 for name in DEFAULT_SHA256}
    assert not fetches_into_project(DEFAULT_SHA256, tmp_path)  # no params.yaml: its own folder
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 2\n")  # the embedded hashes
    assert fetches_into_project(DEFAULT_SHA256, tmp_path)
    assert not fetches_into_project(other, tmp_path)
    # a worker's MNIST_MIRROR that would not parse changes no dataset: it is not read here
    monkeypatch.setenv("MNIST_MIRROR", " , ")
    assert fetches_into_project(DEFAULT_SHA256, tmp_path)
    (tmp_path / "params.yaml").write_text(f"data:\n  sha256: {other}\n")
    assert fetches_into_project(other, tmp_path) and not fetches_into_project(
        DEFAULT_SHA256, tmp_path
    )
    (tmp_path / "params.yaml").write_text("train: [not, a, section]\n")
    assert not fetches_into_project(DEFAULT_SHA256, tmp_path)  # unreadable: its own folder
