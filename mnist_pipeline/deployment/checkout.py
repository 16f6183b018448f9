"""The pull step of prefect.yaml: the deployed commit, checked out in a clone in the worker's own
folder that is updated in place and never deleted.

Prefect's `git_clone` step (3.8.8, prefect/runner/storage.py) takes any full commit hash for
the one checked out (it asks `git rev-parse SHA`, which echoes the hash), so a worker that has
the clone keeps running the commit it first cloned; and when its `git fetch` fails (on a branch
pull) it deletes the whole clone, with whatever runs kept in it: a local registry, the inbox,
run folders. `git_checkout` checks the deployed commit out, and when it cannot, fails the run in
one line naming the repository and leaves the clone as it was; that line also goes to the run's
logs on the Prefect server and is its Failed state's message (Prefect 3.8.8 would send a failed
pull step's error only to the worker's own log, and call the run Crashed). It is part of the
installed package because a worker imports it before the clone exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from filelock import FileLock

from mnist_pipeline.deployment import in_use
from mnist_pipeline.deployment.run_failure import fail_the_run

FETCH_ATTEMPTS = 3  # a git server that is briefly down gets two more tries, 2 and 4 s later
COMMIT = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # a full SHA-1 or SHA-256 object name


class CheckoutError(RuntimeError):
    """The deployed commit cannot be checked out (the message says why; nothing was removed)."""


def run_git(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """git, never prompting for credentials (a run or a deploy must not hang on a prompt); past
    `timeout` the result has exit status 124 and says so in stderr."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        return subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(
            ["git", *args], 124, "", f"git {args[0]} had no answer within {timeout:.0f} s"
        )
    except FileNotFoundError as exc:
        if not Path(cwd).is_dir():  # the folder it was to run in is gone
            raise CheckoutError(f"{cwd} does not exist (git {args[0]} cannot run there)") from None
        raise CheckoutError(
            "git is not installed on this worker (or not on its PATH): the pull step needs it"
        ) from exc


def _reason(done: subprocess.CompletedProcess[str]) -> str:
    """git's own error in one line: its first `error:` or `fatal:` line with the indented file
    names after it (a checkout refused over local changes ends with a bare "Aborting"), else
    its last line."""
    lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
    for index, line in enumerate(lines):
        if line.startswith(("error:", "fatal:")):
            named = []
            for after in lines[index + 1 :]:
                if not after.startswith(("\t", " ")):
                    break
                named.append(after.strip())
            return " ".join([line, *named])
    return lines[-1]


def _has_commit(clone: Path, commit: str) -> bool:
    return run_git(["cat-file", "-e", f"{commit}^{{commit}}"], clone).returncode == 0


def _edited(clone: Path) -> list[str]:
    """Tracked files whose content in the clone is not its HEAD's (staged or not)."""
    done = run_git(["status", "--porcelain=v1", "-z", "--untracked-files=no"], clone)
    if done.returncode != 0:
        raise CheckoutError(f"cannot read the state of {clone}: {_reason(done)}")
    entries, names = iter(done.stdout.split("\0")), []
    for entry in entries:
        if entry:
            names.append(entry[3:])
            if {"R", "C"} & set(entry[:2]):  # a rename or copy: its source path comes next
                next(entries, None)
    return names


def _origin(clone: Path) -> str:
    return run_git(["config", "--get", "remote.origin.url"], clone).stdout.strip()


def _retried(
    args: list[str], cwd: Path, target: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """A git command that talks to the repository, tried FETCH_ATTEMPTS times; `target`, what a
    failed try may have left, is removed before the next."""
    for attempt in range(FETCH_ATTEMPTS):
        if attempt:
            if target is not None:
                shutil.rmtree(target, ignore_errors=True)
            time.sleep(2**attempt)
        done = run_git(args, cwd)
        if done.returncode == 0:
            break
    return done


def _fetch(repository: str, clone: Path) -> str | None:
    """`git fetch` of the repository's branches and tags into the clone: every branch and tag,
    named by refspecs (a fetch from a URL with none takes only the default branch's head);
    what went wrong in one line, None when nothing did."""
    branches = "+refs/heads/*:refs/remotes/origin/*"  # origin is `repository` (_check_out_in)
    tags = "+refs/tags/*:refs/tags/*"  # forced: a tag moved there (`latest`) moves here too
    # --prune: a branch or tag deleted there goes here too (a later "feature/x" could not be
    # made beside a stale "feature"), so no fetch fails for good on a ref the repository dropped
    done = _retried(["fetch", "--quiet", "--prune", repository, branches, tags], clone)
    if done.returncode != 0:
        kept = f"the clone in {clone} is kept as it was"
        return f"cannot fetch from {repository}: {_reason(done)}; {kept}"
    return None


def _have_commit(clone: Path, commit: str, repository: str) -> None:
    """Fetch `commit` into the clone unless it has it; CheckoutError when the fetch failed and
    did not bring it, or the repository lacks it."""
    if _has_commit(clone, commit):
        return
    problem = _fetch(repository, clone)
    if _has_commit(clone, commit):  # here, whatever else the fetch could not update
        if problem is not None:
            print(f"warning: {problem}; the commit came, so the run goes on", file=sys.stderr)
        return
    raise CheckoutError(problem or f"commit {commit} is not on {repository}: push it first")


def _refuse_local_changes(folder: Path, commit_sha: str) -> None:
    """CheckoutError naming the tracked files with local changes in `folder`: git would carry
    edits to files two commits share into a checkout, and with HEAD already at the commit there
    is no checkout at all, so a run there would not be the commit."""
    if edited := _edited(folder):
        shown = ", ".join(edited[:5]) + (f" and {len(edited) - 5} more" if len(edited) > 5 else "")
        raise CheckoutError(
            f"{folder} has local changes to tracked files ({shown}), so a run there would not "
            f"be commit {commit_sha}: commit, stash or discard them (`git -C {folder} stash`)"
        )


def _check_out(clone: Path, commit: str, repository: str) -> None:
    _have_commit(clone, commit, repository)
    done = run_git(["checkout", "--quiet", "--detach", commit], clone)
    if done.returncode != 0:
        raise CheckoutError(f"cannot check out {commit} in {clone}: {_reason(done)}")


def _clone(repository: str, commit: str, clone: Path) -> None:
    """A new clone at `commit`, made beside `clone` and renamed into place once complete."""
    scratch = Path(tempfile.mkdtemp(prefix=f".{clone.name}.", dir=clone.parent))
    partial = scratch / clone.name
    try:
        done = _retried(["clone", "--quiet", repository, str(partial)], scratch, partial)
        if done.returncode != 0:
            raise CheckoutError(f"cannot clone {repository}: {_reason(done)}")
        _check_out(partial, commit, repository)
        partial.rename(clone)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _from_here(repository: str) -> str:
    """A relative local path (`../src`) as git reads it from this folder, the worker's: git
    would otherwise read it from the scratch folder a clone is made in, or from the clone."""
    if "://" in repository or ":" in repository.split("/", 1)[0] or os.path.isabs(repository):
        return repository  # a URL, scp-like `host:path`, or an absolute path
    return os.path.abspath(repository)


def git_checkout(
    repository: str, commit_sha: str, clone_directory_name: str = "mnist-pipeline"
) -> dict[str, str]:
    """Check out `commit_sha` of `repository` in ./`clone_directory_name`: cloned the first time,
    fetched into and checked out in place later (a clone of another repository is refused, as
    Prefect's `git_clone` refuses it); runs starting at once on one worker take turns (a file
    lock beside the clone). The run holds the folder until its process ends (in_use.py): while
    runs of one commit work in the clone, a run of another gets a worktree of its commit beside
    it, `<clone_directory_name>@<commit>`. Returns `{"directory": ...}`, which Prefect makes
    the run's working directory, as for its own `git_clone` step."""
    if not COMMIT.fullmatch(commit_sha):
        raise CheckoutError(f"commit_sha must be a full commit hash, got {commit_sha!r}")
    name = Path(clone_directory_name)
    if name.name != clone_directory_name or name.name in ("", ".", ".."):
        raise CheckoutError(
            f"clone_directory_name must be one folder name, got {clone_directory_name!r}"
        )
    clone = Path.cwd() / name
    try:
        folder = _check_out_held(clone, _from_here(repository), commit_sha)
    except CheckoutError as exc:
        fail_the_run(str(exc))
        raise
    except OSError as exc:  # the worker's folder: not writable, full, gone
        where = f": {exc.filename}" if exc.filename else ""
        problem = f"cannot check out {commit_sha} in {clone.parent}{where}: {exc.strerror or exc}"
        fail_the_run(problem)
        raise CheckoutError(problem) from exc
    return {"directory": folder.name}


def _check_out_held(clone: Path, repository: str, commit_sha: str) -> Path:
    """The folder this run works in, held (in_use.py): the clone, at `commit_sha`, unless runs
    of another commit work in it; then a worktree of the commit beside it."""
    with FileLock(clone.parent / f".{clone.name}.lock"):  # the worker's pull steps' turns
        if in_use.try_hold(clone, exclusive=True):  # no run works in it
            try:
                _check_out_in(clone, repository, commit_sha)
            except BaseException:
                in_use.release(clone)
                raise
            in_use.share(clone)
            return clone
        if _check_out_in(clone, repository, commit_sha, change=False):
            _share(clone)
            return clone
        if not clone.exists():
            raise CheckoutError(f"{clone} is missing while runs on this worker hold it")
        return _beside(clone, repository, commit_sha)


def _share(folder: Path) -> None:
    """Hold `folder` beside the runs that hold it (they hold it shared: an exclusive hold is
    only taken under the pull steps' turns, which this process has)."""
    if not in_use.try_hold(folder, exclusive=False):
        raise CheckoutError(f"{folder} is held exclusively by another process on this worker")


def _beside(clone: Path, repository: str, commit_sha: str) -> Path:
    """`<clone>@<commit>`: a worktree of the commit, made from the clone's objects the first
    time (git fetches into the clone, changing none of its files), for runs of a commit other
    than the one runs in the clone work with."""
    side = clone.parent / f"{clone.name}@{commit_sha[:12]}"
    print(f"runs of another commit work in {clone}: this run uses {side}", file=sys.stderr)
    if not in_use.try_hold(side, exclusive=True):  # runs of this commit work there already
        _check_side(side, commit_sha)
        _share(side)
        return side
    try:
        if side.exists():
            _check_side(side, commit_sha)
        else:
            _have_commit(clone, commit_sha, repository)
            run_git(["worktree", "prune"], clone)  # forget worktrees deleted by hand
            done = run_git(["worktree", "add", "--quiet", "--detach", str(side), commit_sha], clone)
            if done.returncode != 0:
                raise CheckoutError(f"cannot add a worktree at {side}: {_reason(done)}")
    except BaseException:
        in_use.release(side)
        raise
    in_use.share(side)
    return side


def _check_side(side: Path, commit_sha: str) -> None:
    top = run_git(["rev-parse", "--show-toplevel"], side).stdout.strip()
    if not (side / ".git").is_file() or not top or Path(top).resolve() != side.resolve():
        raise CheckoutError(f"{side} exists and is not a git worktree: move it away")
    if run_git(["rev-parse", "HEAD"], side).stdout.strip() != commit_sha:
        raise CheckoutError(f"{side} is not at commit {commit_sha}: move it away")
    _refuse_local_changes(side, commit_sha)


def _check_out_in(clone: Path, repository: str, commit_sha: str, change: bool = True) -> bool:
    """Refuse a clone that is not one of `repository` or holds local changes; then True when it
    is at `commit_sha` (cloned, fetched and checked out first if `change`), False when it is not
    and `change` is off."""
    if not clone.exists():
        if not change:
            return False
        _clone(repository, commit_sha, clone)
    elif not (clone / ".git").is_dir():
        raise CheckoutError(f"{clone} exists and is not a git clone: move it away or rename it")
    elif (origin := _origin(clone)) != repository:
        raise CheckoutError(
            f"{clone} is a clone of {origin}, not of {repository}: give the deployment another "
            "clone_directory_name, or move the clone away"
        )
    else:
        _refuse_local_changes(clone, commit_sha)
        if run_git(["rev-parse", "HEAD"], clone).stdout.strip() != commit_sha:
            if not change:
                return False
            _check_out(clone, commit_sha, repository)
    return True
