"""A stage killed (SIGKILL) at any of its writes: every file a user sees still loads, and the next
stage takes the earlier stage's outputs only when they all come from one finished run.

The command runs in a child process that kills itself at its k-th write, for every k: an atomic
write with the new bytes in the temp file and the rename still to come, or one of the renames
that publish files staged in full (tests/kill_at_write.py). Train writes its checkpoint,
model.pt, the history and last model.json (which names the other two); evaluate stages
predictions, plots and headline, and last metrics.json (which lists their SHA-256), then moves
them into place in that order.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.fault_helpers import (
    PARAMS,
    TEMP_FILE,
    assert_complete,
    cli,
    copy_project,
    new_inputs,
    prepared_project,
    set_params,
    temp_files,
    visible_files,
)
from tests.kill_at_write import PUBLISHING_RENAME

OUTPUTS = {  # what each stage writes (not its checkpoint, a resume aid the next stage ignores)
    "train": re.compile(r"models/model\.(pt|json)|reports/train_history\.csv"),
    "evaluate": re.compile(r"reports/(metrics\.json|scores\.json|predictions\.csv|plots/.*)"),
}
NEXT = {"train": "evaluate", "evaluate": "export"}


def killed_at(root: Path, k: int, command: str) -> subprocess.CompletedProcess[str]:
    """`mnist-pipeline COMMAND` in a child process killed at its k-th write (0: not killed)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    args = [sys.executable, "-m", "tests.kill_at_write", str(k), "--root", str(root), command]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def changed_outputs(stage: str, before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {
        path
        for path in set(before) | set(after)
        if OUTPUTS[stage].fullmatch(path) and before.get(path) != after.get(path)
    }


@pytest.fixture(scope="module")
def _project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared_project(tmp_path_factory.mktemp("kills"))


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_a_stage_killed_at_any_write_never_hands_on_a_mix(
    _project: Path, tmp_path: Path, stage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    project = copy_project(_project, tmp_path)
    if stage == "train":  # new weights: model.pt, history and model.json all change
        new_inputs(project)
    else:  # the same weights scored anew: some plots change, predictions.csv does not
        set_params(project, evaluate={**PARAMS["evaluate"], "robustness_per_transform": 12})
    pristine = shutil.copytree(project, tmp_path / "pristine")
    published_partly = 0  # kills between a publish's renames that left some files replaced
    whole = killed_at(project, 0, stage)
    assert whole.returncode == 0, whole.stderr[-3000:]
    writes = int(re.search(r"atomic writes: (\d+)", whole.stderr)[1])
    finished = visible_files(project)
    assert len(changed_outputs(stage, visible_files(pristine), finished)) >= 2
    for k in range(1, writes + 1):
        shutil.rmtree(project)
        shutil.copytree(pristine, project)
        before = visible_files(project)
        done = killed_at(project, k, stage)
        assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
        assert_complete(project)
        # the killed write's temp file, never renamed (with those written beside it to be
        # renamed after it: train's files are all written before the first is renamed); none
        # after a publishing rename (evaluate's files are staged in full, then moved)
        left = temp_files(project)
        publishing = PUBLISHING_RENAME in done.stderr
        if stage == "evaluate":  # evaluate writes one at a time
            assert len(left) == (0 if publishing else 1), (k, left)
        else:
            assert left and not publishing
        targets = {(p.parent / TEMP_FILE.fullmatch(p.name)["target"]) for p in left}
        after = visible_files(project)
        changed = changed_outputs(stage, before, after)
        assert not {t.relative_to(project).as_posix() for t in targets} & changed
        assert all(finished[path] == after[path] for path in changed)  # whole new files
        # killed after the last rename: every new file is in place, a finished run
        mixed = bool(changed) and changed != changed_outputs(stage, before, finished)
        published_partly += publishing and mixed
        capsys.readouterr()
        code = cli(project, NEXT[stage])
        said = capsys.readouterr().err
        if mixed:  # a mix of this run's files and the last finished run's
            assert code == 1, f"write {k}: {NEXT[stage]} took {sorted(changed)}"
            assert f"run `mnist-pipeline {stage}`" in said, said
        else:  # the last finished run's files (or all of this one's), consistent
            assert code == 0, said
    # evaluate's dangerous moment is reached: killed between its renames, part published
    assert published_partly >= (1 if stage == "evaluate" else 0)
