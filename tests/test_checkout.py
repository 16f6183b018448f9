"""The pull step of prefect.yaml (mnist_pipeline/deployment/checkout.py) on local git repositories:
a clone in the worker's folder that follows the deployed commit, updated in place and never
deleted when the repository cannot be reached (Prefect 3.8.8's `git_clone` leaves an existing
clone at the commit it first cloned, and deletes it when a fetch on a branch pull fails)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from mnist_pipeline.deployment import checkout, in_use
from mnist_pipeline.deployment.checkout import CheckoutError, git_checkout
from mnist_pipeline.deployment.run_failure import fail_the_run
from tests.conftest import REPO_ROOT
from tests.process_helpers import free_port


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def commit(work: Path, name: str) -> str:
    (work / name).write_text(name)
    git("add", name, cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", name, cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def visible(folder: Path) -> list[str]:
    """What a folder holds, but for the lock files runs take turns on and hold the clone with."""
    locks = (".mnist-pipeline.lock", ".mnist-pipeline.in-use")
    return sorted(p.name for p in folder.iterdir() if p.name not in locks)


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, Path]:
    """A bare repository and a working clone that pushes to it."""
    bare, work = tmp_path / "remote.git", tmp_path / "author"
    git("init", "--bare", "-q", "-b", "main", str(bare), cwd=tmp_path)
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)
    return bare, work


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "worker"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setattr(checkout.time, "sleep", lambda _s: None)  # no back-off waits here
    return folder


def test_a_repository_that_does_not_answer_at_first_is_tried_again(
    remote, worker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare, work = remote
    real_git, failures = checkout.run_git, {"clone": 2, "fetch": 1}

    def flaky(args: list[str], cwd: Path, timeout: float = 300):
        if failures.get(args[0]):
            failures[args[0]] -= 1
            return subprocess.CompletedProcess(args, 128, "", "fatal: unable to connect")
        return real_git(args, cwd, timeout)

    monkeypatch.setattr(checkout, "run_git", flaky)
    first = commit(work, "one")
    git_checkout(str(bare), first)  # third try
    second = commit(work, "two")
    git_checkout(str(bare), second)  # second try
    assert failures == {"clone": 0, "fetch": 0}
    assert git("rev-parse", "HEAD", cwd=worker / "mnist-pipeline") == second
    assert visible(worker) == ["mnist-pipeline"]


def test_a_relative_repository_path_is_read_from_the_workers_folder(remote, worker: Path) -> None:
    """`../remote.git` from the worker's folder (before: read from the scratch folder the clone
    was made in, one level too shallow: "repository does not exist"), fetched from later too."""
    bare, work = remote
    first = commit(work, "one")
    relative = os.path.relpath(bare, worker)
    assert git_checkout(relative, first) == {"directory": "mnist-pipeline"}
    second = commit(work, "two")
    assert git_checkout(relative, second) == {"directory": "mnist-pipeline"}
    assert git("rev-parse", "HEAD", cwd=worker / "mnist-pipeline") == second


def test_clones_then_updates_in_place_keeping_what_runs_left(remote, worker: Path) -> None:
    bare, work = remote
    first = commit(work, "one")
    assert git_checkout(str(bare), first) == {"directory": "mnist-pipeline"}
    clone = worker / "mnist-pipeline"
    assert git("rev-parse", "HEAD", cwd=clone) == first
    assert visible(worker) == ["mnist-pipeline"]  # no partial clone left
    (clone / "registry").mkdir()
    (clone / "registry" / "card.json").write_text("{}")
    second = commit(work, "two")
    assert git_checkout(str(bare), second, "mnist-pipeline") == {"directory": "mnist-pipeline"}
    assert git("rev-parse", "HEAD", cwd=clone) == second and (clone / "two").is_file()
    assert (clone / "registry" / "card.json").read_text() == "{}"
    git_checkout(str(bare), first)  # an earlier commit, already here: no fetch needed
    assert git("rev-parse", "HEAD", cwd=clone) == first and not (clone / "two").exists()


def test_a_commit_pushed_to_another_branch_than_the_default_is_fetched(
    remote, worker: Path
) -> None:
    bare, work = remote
    first = commit(work, "one")
    git_checkout(str(bare), first)  # the clone exists: later commits come by fetch
    git("checkout", "-q", "-b", "dev", cwd=work)
    (work / "dev").write_text("dev")
    git("add", "dev", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "d", cwd=work)
    git("push", "-q", "origin", "dev", cwd=work)  # only on dev: main's head stays `first`
    on_dev = git("rev-parse", "HEAD", cwd=work)
    assert git_checkout(str(bare), on_dev) == {"directory": "mnist-pipeline"}
    assert git("rev-parse", "HEAD", cwd=worker / "mnist-pipeline") == on_dev


def test_a_branch_deleted_and_made_again_as_a_folder_does_not_stop_fetches(
    remote, worker: Path
) -> None:
    """refs/remotes/origin/feature, left by the clone, would block the fetch of feature/x."""
    bare, work = remote
    git("push", "-q", "origin", f"{commit(work, 'one')}:refs/heads/feature", cwd=work)
    git_checkout(str(bare), git("rev-parse", "HEAD", cwd=work))  # the clone has both branches
    git("push", "-q", "origin", ":feature", cwd=work)
    git("push", "-q", "origin", "HEAD:refs/heads/feature/x", cwd=work)
    later = commit(work, "two")
    assert git_checkout(str(bare), later) == {"directory": "mnist-pipeline"}
    assert git("rev-parse", "HEAD", cwd=worker / "mnist-pipeline") == later


def test_a_tag_moved_on_the_repository_moves_in_the_clone_too(remote, worker: Path) -> None:
    """A `latest` tag re-pointed upstream made every later fetch fail ("would clobber existing
    tag"), so no new commit could be deployed on a worker that had the clone."""
    bare, work = remote
    first = commit(work, "one")
    git("tag", "latest", cwd=work)
    git("push", "-q", "origin", "latest", cwd=work)
    git_checkout(str(bare), first)
    clone = worker / "mnist-pipeline"
    second = commit(work, "two")
    git("tag", "-f", "latest", cwd=work)
    git("push", "-q", "-f", "origin", "latest", cwd=work)
    assert git_checkout(str(bare), second) == {"directory": "mnist-pipeline"}
    assert git("rev-parse", "HEAD", cwd=clone) == second
    assert git("rev-parse", "latest^{commit}", cwd=clone) == second


def test_a_fetch_that_fails_after_bringing_the_commit_still_checks_it_out(
    remote, worker: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bare, work = remote
    git_checkout(str(bare), commit(work, "one"))
    second = commit(work, "two")
    real_git = checkout.run_git

    def refusing_a_ref(args: list[str], cwd: Path, timeout: float = 300):
        done = real_git(args, cwd, timeout)
        if args[0] == "fetch":  # the objects came; one ref could not be updated
            return subprocess.CompletedProcess(args, 1, done.stdout, "error: some local refs")
        return done

    monkeypatch.setattr(checkout, "run_git", refusing_a_ref)
    assert git_checkout(str(bare), second) == {"directory": "mnist-pipeline"}
    assert git("rev-parse", "HEAD", cwd=worker / "mnist-pipeline") == second
    said = capsys.readouterr().err  # the failure is told, not dropped
    assert "warning: cannot fetch from" in said and "the commit came, so the run goes on" in said
    missing = "0" * 40
    with pytest.raises(CheckoutError, match="cannot fetch from .*error: some local refs"):
        git_checkout(str(bare), missing)  # not brought: the fetch's own error is the reason


def test_a_folder_that_is_gone_is_named_not_git(tmp_path: Path) -> None:
    with pytest.raises(CheckoutError, match=f"^{tmp_path / 'gone'} does not exist"):
        checkout.run_git(["status"], tmp_path / "gone")


def test_a_worker_without_git_is_told_so(
    remote, worker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare, work = remote
    first = commit(work, "one")
    monkeypatch.setenv("PATH", str(worker / "no-bin"))
    with pytest.raises(CheckoutError, match="^git is not installed on this worker"):
        git_checkout(str(bare), first)
    assert visible(worker) == []


def test_a_worker_folder_that_cannot_be_written_is_named(
    remote, worker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare, work = remote
    first = commit(work, "one")

    def refused(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(worker / ".mnist-pipeline.lock"))

    monkeypatch.setattr(checkout.FileLock, "acquire", refused)
    with pytest.raises(CheckoutError) as info:
        git_checkout(str(bare), first)
    assert str(info.value) == (
        f"cannot check out {first} in {worker}: {worker / '.mnist-pipeline.lock'}: "
        "Permission denied"
    )


def test_a_checkout_refused_by_git_names_why(remote, worker: Path) -> None:
    bare, work = remote
    first = commit(work, "one")
    git_checkout(str(bare), first)
    second = commit(work, "two")
    clone = worker / "mnist-pipeline"
    (clone / "two").write_text("an untracked file on the worker")
    with pytest.raises(CheckoutError) as refused:
        git_checkout(str(bare), second)
    message = str(refused.value)
    assert message.startswith(f"cannot check out {second} in {clone}: error: The following")
    assert message.endswith("would be overwritten by checkout: two") and "\n" not in message
    assert (clone / "two").read_text() == "an untracked file on the worker"  # kept as it was
    assert git("rev-parse", "HEAD", cwd=clone) == first


@pytest.mark.parametrize("deployed", ["the same commit", "a later commit"])
def test_local_edits_to_tracked_files_are_refused_not_run(remote, worker: Path, deployed) -> None:
    """Edits to files the deployed commit shares with HEAD would run unnoticed: git carries them
    into a checkout, and with HEAD at the deployed commit there is no checkout at all."""
    bare, work = remote
    commit(work, "one")
    commit(work, "three")
    first = commit(work, "four")
    git_checkout(str(bare), first)
    target = first if deployed == "the same commit" else commit(work, "two")
    clone = worker / "mnist-pipeline"
    (clone / "one").write_text("edited on the worker")
    git("mv", "three", "renamed", cwd=clone)  # git status: "R  renamed", then "three"
    (clone / "four").rename(clone / "moved")
    git("add", "-N", "moved", cwd=clone)  # " R moved", then "four"
    with pytest.raises(CheckoutError) as refused:
        git_checkout(str(bare), target)
    assert str(refused.value) == (
        f"{clone} has local changes to tracked files (moved, one, renamed), so a run there would "
        f"not be commit {target}: commit, stash or discard them (`git -C {clone} stash`)"
    )
    assert (clone / "one").read_text() == "edited on the worker"  # nothing discarded
    git("reset", "-q", "--hard", cwd=clone)  # the worker's owner discards them
    (clone / "moved").unlink(missing_ok=True)
    git_checkout(str(bare), target)
    assert git("rev-parse", "HEAD", cwd=clone) == target and (clone / "one").read_text() == "one"


def run_elsewhere(bare: Path, commit_sha: str, worker: Path) -> subprocess.Popen[str]:
    """A run's process on the same worker, as Prefect's process worker starts one: the pull step,
    then an exec into the flow's engine (the same process), which works in the folder the step
    returned until its stdin is closed."""
    engine = "import sys; print('running', flush=True); sys.stdin.read()"
    code = (
        "import os, sys\n"
        "from mnist_pipeline.deployment.checkout import git_checkout\n"
        f"folder = git_checkout({str(bare)!r}, {commit_sha!r})['directory']\n"
        f"os.execv(sys.executable, [sys.executable, '-c', {engine!r}])\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=worker,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "running"
    return proc


def test_a_run_of_another_commit_gets_a_worktree_beside_the_clone_runs_work_in(
    remote, worker: Path
) -> None:
    bare, work = remote
    first, second = commit(work, "one"), commit(work, "two")
    clone = worker / "mnist-pipeline"
    running = run_elsewhere(bare, first, worker)  # holds the clone past its exec
    try:
        assert git_checkout(str(bare), first) == {"directory": "mnist-pipeline"}  # beside it
        side = f"mnist-pipeline@{second[:12]}"
        assert git_checkout(str(bare), second) == {"directory": side}
        assert git("rev-parse", "HEAD", cwd=clone) == first  # nothing changed under the run
        assert git("rev-parse", "HEAD", cwd=worker / side) == second
        assert (worker / side / "two").is_file() and not (clone / "two").exists()
        other = run_elsewhere(bare, second, worker)  # a second run of it shares the worktree
        other.stdin.close()
        assert other.wait(timeout=30) == 0 and f"this run uses {worker / side}" in "".join(
            other.stderr
        )
    finally:
        running.kill()
        running.wait()
    for folder in (clone, worker / side):  # this process's runs end too
        in_use.release(folder)
    # with no run in the clone, the next run of the new commit gets the clone itself
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from mnist_pipeline.deployment.checkout import git_checkout; "
            f"print(git_checkout({str(bare)!r}, {second!r})['directory'])",
        ],
        cwd=worker,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert done.stdout.strip() == "mnist-pipeline", done.stderr
    assert git("rev-parse", "HEAD", cwd=clone) == second


def test_a_side_folder_that_is_not_a_worktree_or_was_deleted(remote, worker: Path) -> None:
    bare, work = remote
    first, second = commit(work, "one"), commit(work, "two")
    side = worker / f"mnist-pipeline@{second[:12]}"
    running = run_elsewhere(bare, first, worker)
    try:
        side.mkdir()  # a folder of that name, not a worktree (git would look above it)
        with pytest.raises(CheckoutError, match="exists and is not a git worktree: move it"):
            git_checkout(str(bare), second)
        side.rmdir()
        assert git_checkout(str(bare), second) == {"directory": side.name}
        in_use.release(side)
        shutil.rmtree(side)  # deleted by hand: git still lists it until pruned
        assert git_checkout(str(bare), second) == {"directory": side.name}
        assert git("rev-parse", "HEAD", cwd=side) == second
    finally:
        running.kill()
        running.wait()


def test_an_unreachable_repository_fails_the_run_and_keeps_the_clone(
    remote, worker: Path, tmp_path: Path
) -> None:
    bare, work = remote
    first = commit(work, "one")
    git_checkout(str(bare), first)
    clone = worker / "mnist-pipeline"
    (clone / "runs").mkdir()
    (clone / "runs" / "kept.txt").write_text("a run's output")
    second = commit(work, "two")
    bare.rename(tmp_path / "moved.git")  # the git server is down
    with pytest.raises(CheckoutError) as failed:
        git_checkout(str(bare), second)
    message = str(failed.value)
    assert message.startswith(f"cannot fetch from {bare}: ") and "\n" not in message
    assert f"the clone in {clone} is kept as it was" in message
    assert git("rev-parse", "HEAD", cwd=clone) == first
    assert (clone / "runs" / "kept.txt").read_text() == "a run's output"
    git_checkout(str(bare), first)  # the commit it has needs no server
    (tmp_path / "moved.git").rename(bare)  # back up: the same call succeeds
    git_checkout(str(bare), second)
    assert git("rev-parse", "HEAD", cwd=clone) == second
    assert (clone / "runs" / "kept.txt").is_file()


def test_a_repository_that_cannot_be_cloned_leaves_nothing(worker: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.git"
    with pytest.raises(CheckoutError, match=f"^cannot clone {missing}: "):
        git_checkout(str(missing), "a" * 40)
    assert visible(worker) == []


def test_a_commit_not_on_the_repository_is_named(remote, worker: Path) -> None:
    bare, work = remote
    commit(work, "one")
    unknown = "b" * 40
    with pytest.raises(CheckoutError, match=f"^commit {unknown} is not on {bare}: push it first"):
        git_checkout(str(bare), unknown)
    assert visible(worker) == []  # the clone is made whole or not at all
    first = git("rev-parse", "HEAD", cwd=work)
    git_checkout(str(bare), first)
    with pytest.raises(CheckoutError, match=f"^commit {unknown} is not on {bare}"):
        git_checkout(str(bare), unknown)
    assert git("rev-parse", "HEAD", cwd=worker / "mnist-pipeline") == first


def test_bad_arguments_and_a_folder_in_the_way_are_refused(remote, worker: Path) -> None:
    bare, work = remote
    first = commit(work, "one")
    for short in ("main", first[:12], ""):
        with pytest.raises(CheckoutError, match="must be a full commit hash"):
            git_checkout(str(bare), short)
    for name in ("", ".", "..", "a/b", "/tmp/x"):
        with pytest.raises(CheckoutError, match="must be one folder name"):
            git_checkout(str(bare), first, name)
    git_checkout(str(bare), first, "other")
    elsewhere = f"{bare.parent}/elsewhere.git"
    with pytest.raises(CheckoutError, match=f"is a clone of {bare}, not of {elsewhere}: "):
        git_checkout(elsewhere, first, "other")  # the commit is here, the repository differs
    (worker / "mnist-pipeline").mkdir()
    (worker / "mnist-pipeline" / "notes.txt").write_text("mine")
    with pytest.raises(CheckoutError, match="exists and is not a git clone"):
        git_checkout(str(bare), first)
    assert (worker / "mnist-pipeline" / "notes.txt").read_text() == "mine"


def test_git_never_prompts_and_a_hung_git_is_a_result(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text(
        '#!/bin/sh\necho "prompt=$GIT_TERMINAL_PROMPT"\n[ "$1" = fetch ] && sleep 5\n'
    )
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("GIT_TERMINAL_PROMPT", raising=False)
    assert checkout.run_git(["status"], tmp_path).stdout == "prompt=0\n"
    hung = checkout.run_git(["fetch", "origin"], tmp_path, timeout=1)
    assert hung.returncode == 124 and hung.stderr == "git fetch had no answer within 1 s"


def test_prefects_git_clone_leaves_an_existing_clone_at_its_old_commit(remote, worker) -> None:
    """Why prefect.yaml does not use Prefect's own step: in 3.8.8 `git_clone` takes any full
    commit hash for the one checked out (`git rev-parse SHA` echoes it) and returns without
    fetching. When this fails, Prefect has fixed it: see whether its step can be used again."""
    from prefect.deployments.steps import git_clone

    bare, work = remote
    first = commit(work, "one")
    git_clone(repository=str(bare), commit_sha=first, clone_directory_name="prefect-clone")
    second = commit(work, "two")
    git_clone(repository=str(bare), commit_sha=second, clone_directory_name="prefect-clone")
    assert git("rev-parse", "HEAD", cwd=worker / "prefect-clone") == first
    git_checkout(str(bare), second, "prefect-clone")  # the same clone, put right
    assert git("rev-parse", "HEAD", cwd=worker / "prefect-clone") == second


def test_a_checkout_error_is_told_to_the_run_only_when_there_is_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert fail_the_run("cannot clone x", {}) is False  # not a worker's flow-run process
    assert capsys.readouterr().err == ""
    # A run named, but a Prefect API that does not answer: False, said on stderr, no exception.
    run = {"PREFECT__FLOW_RUN_ID": "00000000-0000-4000-8000-000000000001"}
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        assert fail_the_run("cannot clone x", run) is False
    assert "could not tell flow run 00000000-0000-4000-8000-000000000001 why it fails" in (
        capsys.readouterr().err
    )
