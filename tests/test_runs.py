"""Run folders: the pruning policy keeps the newest, never the current one."""

from __future__ import annotations

import os
from pathlib import Path

from mnist_pipeline import runs
from mnist_pipeline.layout import Layout


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


def test_run_layout_shares_data_and_registry(tmp_path: Path) -> None:
    layout = Layout.for_run(tmp_path, "brave-otter-1234abcd")
    assert layout.root == tmp_path / "runs" / "brave-otter-1234abcd"
    assert layout.state_dict == layout.root / "models" / "model.pt"
    assert layout.data_dir == Layout(tmp_path).data_dir
    assert layout.registry_root("registry") == tmp_path / "registry"
    assert layout.registry_root("/abs/reg") == Path("/abs/reg")
