"""Fault injection: a full disk, a read-only filesystem or a denied permission at any write of
any command never leaves a state that users see changed without being told.

Each command runs through the real CLI on a tiny project that has been through ingest, train,
evaluate, export and parity once. A fault is injected at the k-th file write of the command, for
every k (ENOSPC, EROFS and EACCES in turn), at one of three points of the real atomic write: when
its temp file was just created, at its fsync once the bytes are written, or at the rename. After
each fault: the command said so (one line, exit code 74), every visible file loads (the old bytes
or a whole new file), the real cleanup removed the temp file, and the registry neither gained nor
lost anything. Registering whatever mix of old and new outputs a fault left succeeds exactly when
the reports' recorded hashes fit the files (checked here from the files), and is otherwise refused
naming the stale link. Kills at each write: test_stage_chain.py.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from mnist_pipeline.core import atomic
from mnist_pipeline.core.errors import EXIT_IO
from mnist_pipeline.data.manifest import file_sha256
from mnist_pipeline.evaluation.evaluate import STAGING
from mnist_pipeline.registry.local import LocalFolder
from tests.fault_helpers import (
    PIPELINE,
    assert_complete,
    cli,
    copy_project,
    new_inputs,
    prepared_project,
    registered,
    temp_files,
    visible_files,
)

ERRORS = (errno.ENOSPC, errno.EROFS, errno.EACCES)
POINTS = ("create", "fsync", "replace")  # where in the atomic write the fault strikes


@pytest.fixture(scope="module")
def _project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared_project(tmp_path_factory.mktemp("faults"))


@pytest.fixture
def project(_project: Path, tmp_path: Path) -> Path:
    """A fresh copy of the prepared project, one version already registered."""
    root = copy_project(_project, tmp_path)
    assert cli(root, "models", "register") == 0
    return root


@contextmanager
def fault_at(k: int | None, code: int) -> Iterator[list[Path]]:
    """Fail the k-th atomic file write (None: fail nothing) with OSError `code`, at POINTS[k % 3]
    of the real atomic write; yields the targets written, in order."""
    written: list[Path] = []
    original = atomic.atomic_path

    @contextmanager
    def faulty(target, **options):
        written.append(Path(target))
        if len(written) != k:
            with original(target, **options) as tmp:
                yield tmp
            return
        point = POINTS[k % len(POINTS)]

        def fail(*args, **kwargs):
            raise OSError(code, os.strerror(code), str(Path(target).parent))

        with ExitStack() as stack:
            if point != "create":  # the write itself runs, then its fsync or rename fails
                stack.enter_context(pytest.MonkeyPatch.context()).setattr(os, point, fail)
            with original(target, **options) as tmp:
                assert tmp.exists()  # the real temp file, which the real cleanup must remove
                if point == "create":
                    fail()
                yield tmp

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(atomic, "atomic_path", faulty)
        yield written


def finished(
    project: Path, written: list[Path], every: list[Path], files: dict[str, bytes]
) -> set[str]:
    """The files that may have changed (relative to `project`) after these writes of `every`
    write a command makes: evaluate makes its files in hidden staging folders and moves them
    into place, under their names, only once it made every one of them."""
    done = {p.relative_to(project).as_posix() for p in written}
    staged = [p.name for p in every if p.parent.name.startswith(STAGING)]
    if len(staged) > sum(p.parent.name.startswith(STAGING) for p in written):
        return done  # some were still to be made: none was moved into place
    return done | {path for path in files if Path(path).name in staged}


def chain_fits(root: Path) -> bool:
    """Whether the reports a registration reads name the weights and ONNX file beside them."""
    weights = file_sha256(root / "models/model.pt")
    onnx_file = file_sha256(root / "models/model.onnx")
    record, metrics, parity = (
        json.loads((root / name).read_text())
        for name in ("models/model.json", "reports/metrics.json", "reports/parity.json")
    )
    return (
        record["state_dict_sha256"] == metrics["state_dict_sha256"] == weights
        and parity["state_dict_sha256"] == weights
        and parity["onnx_sha256"] == onnx_file
    )


def register_after(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Registering whatever a fault left: done exactly when the chain fits, else refused."""
    fits = chain_fits(root)
    capsys.readouterr()
    code = cli(root, "models", "register")
    message = capsys.readouterr().err
    if fits:
        assert code == 0, message
        versions, _ = registered(root)  # verify() cross-checks each card with its reports
        assert versions[-1]["files"]["model.onnx"] == file_sha256(root / "models/model.onnx")
    else:
        assert code == 1 and "was not made from the current" in message, message


@pytest.mark.parametrize("command", PIPELINE)
def test_a_fault_at_any_write_is_reported_and_leaves_whole_files(
    project: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    new_inputs(project, *PIPELINE[: PIPELINE.index(command)])
    pristine = project.parent / "pristine"
    shutil.copytree(project, pristine)
    with fault_at(None, 0) as written:
        assert cli(project, command) == 0
    writes = len(written)
    assert writes >= 1
    for k in range(1, writes + 1):
        shutil.rmtree(project)
        shutil.copytree(pristine, project)
        before, versions = visible_files(project), registered(project)
        code = ERRORS[(k + k // 3) % len(ERRORS)]  # with POINTS[k % 3]: every pair by k = 9
        capsys.readouterr()
        with fault_at(k, code) as attempted:
            assert cli(project, command) == EXIT_IO
        errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
        # the k-th write's folder: writes renamed together (train's) may fail at another's turn;
        # evaluate's staging folder is named as the folder it stands for (it is gone by then)
        folder = attempted[k - 1].parent
        folder = folder.parent if folder.name.startswith(STAGING) else folder
        assert errors == [f"error: {folder}: {os.strerror(code)}"]
        assert_complete(project)
        assert temp_files(project) == []  # removed by the real cleanup, not by this test
        after = visible_files(project)
        changed = {path for path in after if before.get(path) != after[path]}
        # Only files the command finished writing before the fault changed; nothing vanished.
        assert set(before) <= set(after)
        assert changed <= finished(project, attempted[: k - 1], attempted, after)
        assert registered(project) == versions
        register_after(project, capsys)


def test_a_fault_while_registering_leaves_the_registry_as_it_was(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new_inputs(project, *PIPELINE)
    versions = registered(project)
    writes = 0

    def create_fails_at(k: int, code: int):
        def create(self, key, data):
            nonlocal writes
            writes += 1
            if writes == k:
                raise OSError(code, os.strerror(code), key)
            return original(self, key, data)

        return create

    original = LocalFolder.create
    for k, code in enumerate(ERRORS, start=1):
        writes = 0
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(LocalFolder, "create", create_fails_at(k * 2, code))
            assert cli(project, "models", "register") == EXIT_IO
        assert os.strerror(code) in capsys.readouterr().err
        assert registered(project) == versions  # no new version: the card is the commit
        cards = sorted((project / "registry" / "mnist-cnn").glob("v*/card.json"))
        assert [c.parent.name for c in cards] == ["v1"]
    with pytest.MonkeyPatch.context() as patch:  # the commit point itself fails
        patch.setattr(LocalFolder, "create", _fails_for("/card.json", errno.EROFS, original))
        assert cli(project, "models", "register") == EXIT_IO
    assert registered(project) == versions
    assert cli(project, "models", "register") == 0  # the disk is back: v2, whole
    assert [card["version"] for card in registered(project)[0]] == [1, 2]


def _fails_for(suffix: str, code: int, original):
    """LocalFolder.create failing with `code` for keys ending in `suffix`."""

    def create(self, key, data):
        if key.endswith(suffix):
            raise OSError(code, os.strerror(code), key)
        return original(self, key, data)

    return create
