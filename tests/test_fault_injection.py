"""Fault injection: a full disk, a read-only filesystem, a denied permission or a kill -9 at any
write of any command never leaves a state that users see changed without being told.

Each command runs through the real CLI on a tiny project that has been through ingest, train,
evaluate, export and parity once. A fault is injected at the k-th file write of the command, for
every k (ENOSPC, EROFS and EACCES in turn); kills land at random moments of a separate process.
After each fault: the command said so (one line, exit code 74), every visible file is complete
(the old bytes or a whole new file), no temp file is left in sight, and the registry neither
gained nor lost anything. Whatever mix of old and new outputs a fault left, registering it
afterwards either succeeds with every report describing the registered files or is refused
naming the stale link: the chain (gate.made_from) keeps a half-finished step out of the registry.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import pytest
import yaml

from mnist_pipeline.cli.app import main
from mnist_pipeline.core import atomic
from mnist_pipeline.core.errors import EXIT_IO
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.inbox import store as inbox
from mnist_pipeline.registry import Registry
from mnist_pipeline.registry.local import LocalFolder
from tests.conftest import REPO_ROOT
from tests.synthetic import make_dataset, write_data_dir
from tests.test_ingest import stroke_png

ERRORS = (errno.ENOSPC, errno.EROFS, errno.EACCES)
PIPELINE = ("ingest", "train", "evaluate", "export", "parity")
PARAMS = {
    "train": {"epochs": 1, "batch_size": 32, "val_size": 32, "num_threads": 1},
    "evaluate": {"min_accuracy": 0.0},
}


def cli(root: Path, *args: str) -> int:
    """The console script in this process; its exit code."""
    argv = ["mnist-pipeline", "--root", str(root), *args]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", argv)
        try:
            main()
        except SystemExit as done:
            return int(done.code or 0)
    return 0


@pytest.fixture(scope="module")
def _project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults") / "project"
    write_data_dir(Layout(root).data_dir, make_dataset())
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    for stage in PIPELINE:
        assert cli(root, stage) == 0, stage
    return root


@pytest.fixture
def project(_project: Path, tmp_path: Path) -> Path:
    """A fresh copy of the prepared project, one version already registered."""
    root = tmp_path / "project"
    shutil.copytree(_project, root)
    assert cli(root, "models", "register") == 0
    return root


def new_inputs(root: Path, *stages: str) -> None:
    """Change the seed (so the next training makes other weights), add labelled digits to the
    inbox, and run `stages`: the situation of a retraining whose later stages are still to come."""
    for seed in range(4):
        inbox.add(Layout(root).inbox, stroke_png(seed), f"s{seed}.png", seed)
    (root / "params.yaml").write_text(
        yaml.safe_dump(PARAMS | {"train": {**PARAMS["train"], "seed": 7}})
    )
    for stage in stages:
        assert cli(root, stage) == 0, stage


def visible_files(root: Path) -> dict[str, str]:
    """SHA-256 of every file a user sees (no dot files), by path relative to `root`."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def assert_complete(root: Path) -> None:
    """Every visible report, model and plot is whole, and no temp file is left anywhere."""
    leftovers = [p for p in root.rglob("*") if ".tmp" in p.name or p.name.startswith(".write-")]
    assert leftovers == []
    for path in root.rglob("*"):
        if path.suffix == ".json" and "registry" not in path.parts:
            json.loads(path.read_text())
        elif path.suffix == ".onnx":
            onnx.checker.check_model(onnx.load(str(path)))
        elif path.suffix == ".png":
            assert path.read_bytes().startswith(b"\x89PNG")


@contextmanager
def fault_at(k: int | None, code: int) -> Iterator[list[Path]]:
    """Fail the k-th atomic file write (None: fail nothing) with OSError `code`; yields the
    targets written, in order."""
    written: list[Path] = []
    original = atomic.atomic_path

    @contextmanager
    def faulty(target):
        written.append(Path(target))
        if len(written) == k:
            raise OSError(code, os.strerror(code), str(Path(target).parent))
        with original(target) as tmp:
            yield tmp

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(atomic, "atomic_path", faulty)
        yield written


def registered(root: Path) -> tuple[list[dict], dict[str, int]]:
    registry = Registry(root / "registry", "mnist-cnn")
    assert registry.verify() == []
    return registry.versions(), registry.aliases()


def register_after(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Registering whatever a fault left: intact and consistent, or refused naming the link."""
    capsys.readouterr()
    code = cli(root, "models", "register")
    message = capsys.readouterr().err
    if code == 0:
        registered(root)  # verify() cross-checks each card with its reports
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
        code = ERRORS[k % len(ERRORS)]
        capsys.readouterr()
        with fault_at(k, code) as attempted:
            assert cli(project, command) == EXIT_IO
        errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
        assert errors == [f"error: {attempted[-1].parent}: {os.strerror(code)}"]
        assert_complete(project)
        after = visible_files(project)
        changed = {path for path in after if before.get(path) != after[path]}
        # Only files the command finished writing before the fault changed; nothing vanished.
        assert set(before) <= set(after)
        assert changed <= {p.relative_to(project).as_posix() for p in attempted[:-1]}
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


def _fails(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(args[0]) if args else "?")

    return fail


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_kill_9_at_random_moments_leaves_whole_files(
    project: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    new_inputs(project, *PIPELINE[: PIPELINE.index(command)])
    rng = random.Random(f"kill-{command}")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    args = [sys.executable, "-m", "mnist_pipeline", "--root", str(project), command]
    versions = registered(project)
    for _ in range(4):
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 4.0))  # the import takes ~1.5 s; then it computes and writes
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        for leftover in project.rglob(".*.tmp*"):  # a killed writer cannot remove its temp file
            leftover.unlink()
        assert_complete(project)
        assert registered(project) == versions
    register_after(project, capsys)
