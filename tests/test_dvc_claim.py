"""The inbox claimed from DVC while a command changes it (inbox/dvc_claim.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dvc.repo import Repo
from dvc.rwlock import rwlock

from mnist_pipeline.core.errors import DataError
from mnist_pipeline.inbox import store as inbox
from mnist_pipeline.inbox.dvc_claim import changing_inbox
from tests.conftest import REPO_ROOT
from tests.test_ingest import stroke_png


def dvc_repo(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Repo.init(str(folder), no_scm=True).close()
    return folder


def stage_reads(root: Path, path: str):  # noqa: ANN201 - DVC's own context manager
    """The claim DVC's ingest stage holds on its dependency while it runs."""
    repo = Repo(str(root))
    return rwlock(repo.tmp_dir, repo.fs, "dvc repro ingest", [path], [], False)


@pytest.mark.parametrize("through", ["the project", "the inbox"])
def test_a_stage_reading_the_inbox_refuses_a_change_made_through_a_link(
    tmp_path: Path, through: str
) -> None:
    real = dvc_repo(tmp_path / "real")
    (real / "data" / "extra").mkdir(parents=True)
    if through == "the project":  # `--root` names the project by a link to it
        (tmp_path / "link").symlink_to(real)
        project = tmp_path / "link"
    else:  # data/extra is a link to a folder elsewhere
        (real / "data" / "extra").rmdir()
        (tmp_path / "elsewhere").mkdir()
        (real / "data" / "extra").symlink_to(tmp_path / "elsewhere")
        project = real
    # DVC names the dependency from the working directory's real path, the link left as it is.
    dependency = os.path.join(os.path.realpath(real), "data", "extra")
    folder = project / "data" / "extra"
    with (
        stage_reads(real, dependency),
        pytest.raises(DataError) as refused,
        changing_inbox(project, folder),
    ):
        inbox.add(folder, stroke_png(1), "one.png", 1)
    assert "cannot change while a DVC command uses it" in str(refused.value)
    assert "dvc repro ingest" in str(refused.value)
    assert inbox.entries(project / "data" / "extra") == []


def test_two_changes_at_once_do_not_refuse_each_other_and_release_their_claims(
    tmp_path: Path,
) -> None:
    project = dvc_repo(tmp_path / "project")
    shutil.copy2(REPO_ROOT / "params.yaml", project / "params.yaml")
    folder = project / "data" / "extra"
    image = tmp_path / "two.png"
    image.write_bytes(stroke_png(2))
    with changing_inbox(project, folder):
        inbox.add(folder, stroke_png(1), "one.png", 1)
        other = subprocess.run(
            [sys.executable, "-m", "mnist_pipeline", "--root", str(project), "data", "add"]
            + [str(image), "--label", "2"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert other.returncode == 0, other.stdout + other.stderr
    assert sorted(e.label for e in inbox.entries(folder)) == [1, 2]
    with stage_reads(project, str(folder)):  # nothing left claimed: the stage can run
        pass


def test_a_damaged_table_of_claims_is_named_and_nothing_changes(tmp_path: Path) -> None:
    project = dvc_repo(tmp_path / "project")
    folder = project / "data" / "extra"
    folder.mkdir(parents=True)
    (project / ".dvc" / "tmp").mkdir(exist_ok=True)
    (project / ".dvc" / "tmp" / "rwlock").write_text('{"read": {"x"')  # cut off mid-write
    with pytest.raises(DataError) as refused, changing_inbox(project, folder):
        inbox.add(folder, stroke_png(1), "one.png", 1)
    assert f"cannot claim {folder} from DVC" in str(refused.value)
    assert "rwlock" in str(refused.value)
    assert inbox.entries(folder) == []


def test_outside_a_dvc_repository_nothing_is_claimed(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "extra"
    with changing_inbox(tmp_path, folder):
        inbox.add(folder, stroke_png(1), "one.png", 1)
    assert len(inbox.entries(folder)) == 1
    assert not (tmp_path / ".dvc").exists()


def test_a_clone_before_dvc_pull_is_refused_and_its_claim_given_back(tmp_path: Path) -> None:
    project = dvc_repo(tmp_path / "project")
    (project / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  inbox:\n    cmd: mnist-pipeline data init\n    outs:\n"
        "    - path: data/extra\n      hash: md5\n      md5: 0.dir\n      nfiles: 3\n"
    )
    with (
        pytest.raises(DataError, match="records 3 file"),
        changing_inbox(project, project / "data" / "extra"),
    ):
        pass
    assert not (project / "data" / "extra").exists()
    with stage_reads(project, str(project / "data" / "extra")):  # the claim was given back
        pass


def test_a_dvc_command_holding_the_repository_refuses_a_change(tmp_path: Path) -> None:
    """`dvc repro` holds the repository lock between its stages (from one stage's dvc.lock
    record to the next stage's claims): a change then would fall between inbox and ingest."""
    project = dvc_repo(tmp_path / "project")
    folder = project / "data" / "extra"
    folder.mkdir(parents=True)
    repo = Repo(str(project))
    with repo.lock, pytest.raises(DataError) as refused, changing_inbox(project, folder):
        inbox.add(folder, stroke_png(1), "one.png", 1)
    repo.close()
    assert "cannot change while a DVC command uses it" in str(refused.value)
    assert "Unable to acquire lock" in str(refused.value)
    assert inbox.entries(folder) == []
