"""The build step of prefect.yaml: which repository and commit workers clone.

`prefect deploy` runs `source()` in the deploying checkout; its outputs fill the deployment's
pull step (mnist_pipeline/deployment/checkout.py), so the deployment holds a repository URL and
a commit, never a path of the deploying machine. Refused, with one line naming the problem: no
URL, a local path (a worker on another machine cannot clone it), a URL holding a password, or
over http(s) any user part (often a token; the deployment would keep either in clear), a
repository that cannot be read, a commit it does not have; and a prefect.yaml whose retraining
deployment says otherwise than params.yaml (deploy_spec.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from flows import deploy_spec
from mnist_pipeline.core.errors import ParamsError
from mnist_pipeline.core.params import DEFAULT_PARAMS_PATH, Params, load_params
from mnist_pipeline.deployment.checkout import run_git
from mnist_pipeline.registry import local_folder

REPO_VARIABLE = "MNIST_PIPELINE_REPO"
# git URLs another machine can reach: scheme://host/..., or scp-like [user@]host:path (git
# reads that form as ssh when no slash comes before the first colon; `host` may be an alias
# from ~/.ssh/config; one letter is a drive, C:/repo, which git on Windows reads as a path)
REMOTE_URL = re.compile(r"^(https?|git|ssh)://[^/]+/.+|^([\w.-]+@)?[\w.-]{2,}:(?!//).+")


class SourceError(RuntimeError):
    """The deployment's source cannot be cloned by a worker (the message says why)."""


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """git without prompts, given 60 s (a deploy must not hang on a password prompt)."""
    return run_git(args, cwd, timeout=60)


def check_url(url: str | None) -> str:
    """`url` if workers on other machines can clone it."""
    if not url:
        raise SourceError(
            f"{REPO_VARIABLE} is not set: export the git URL workers clone, "
            "e.g. https://git.example.com/mnist-pipeline.git"
        )
    if not REMOTE_URL.match(url):
        raise SourceError(
            f"{REPO_VARIABLE}={url!r} is not a remote git URL (https://, git://, ssh:// or "
            "[user@]host:path): a worker on another machine cannot clone a local path"
        )
    parts = urlsplit(url) if "://" in url else None
    # over http(s) the user part is often a token (https://TOKEN@host/...): refused like a
    # password; an ssh:// user names an account, its key stays on the worker
    if parts is not None and (
        parts.password is not None or (parts.scheme.startswith("http") and parts.username)
    ):
        raise SourceError(
            f"{REPO_VARIABLE} holds a password or token, which the deployment would store in "
            "clear: give workers git credentials (an SSH key or a credential helper, with "
            "`git config credential.username` for a user name) instead"
        )
    return url


def remote_tips(url: str, cwd: Path) -> list[str]:
    """The commits the repository's branches and tags point at (it must answer)."""
    listed = _git(["ls-remote", url], cwd)
    if listed.returncode != 0:
        reason = (listed.stderr.strip().splitlines() or ["no answer"])[-1]
        raise SourceError(f"cannot read repository {url}: {reason}")
    return [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]


def check_pushed(commit: str, url: str, cwd: Path) -> None:
    """Refuse `commit` when every branch and tag of `url` is known here and none contains it
    (when some are unknown here, it cannot be told without fetching: the clone will say)."""
    tips = remote_tips(url, cwd)
    if any(_git(["cat-file", "-e", f"{tip}^{{commit}}"], cwd).returncode for tip in tips):
        return
    contained = (_git(["merge-base", "--is-ancestor", commit, tip], cwd) for tip in tips)
    if not any(done.returncode == 0 for done in contained):
        raise SourceError(f"commit {commit} is not on {url}: push it first")


def resolve_source(directory: Path) -> dict[str, str]:
    """`repository` ($MNIST_PIPELINE_REPO) and `commit` (the checkout's HEAD), both checked."""
    url = check_url(os.environ.get(REPO_VARIABLE))
    head = _git(["rev-parse", "HEAD"], directory)
    if head.returncode != 0:
        raise SourceError(f"not a git checkout: {directory.resolve()} ({head.stderr.strip()})")
    commit = head.stdout.strip()
    check_pushed(commit, url, directory)
    return {"repository": url, "commit": commit}


def per_worker_stores(params: Params) -> str | None:
    """A note when the registry or the inbox lies in the clone each worker runs in (a relative
    folder): one per worker, so workers on several machines would share nothing. None when
    both are shared (s3://, or an absolute path such as a mount every worker has)."""
    root, shared = params.registry.root, params.inbox.shared
    local, inbox_local = _in_clone(root), shared is None or _in_clone(shared)
    if not local and not inbox_local:
        return None
    what = " and ".join([f"registry.root {root!r}"] * local + ["the inbox"] * inbox_local)
    are = "are folders" if local and inbox_local else "is a folder"
    return (
        f"note: {what} {are} of the worker's clone, one per worker: workers on several "
        "machines share no versions or labelled digits (set registry.root and inbox.shared to "
        "s3://BUCKET/PREFIX, docs/scale-out.md)"
    )


def _in_clone(location: str) -> bool:
    """A relative folder path (a file:// URL names an absolute one; s3:// no folder)."""
    folder = local_folder(location)
    return folder is not None and not folder.is_absolute()


def source(directory: str = ".") -> dict[str, str]:
    """The build step: `resolve_source`, or one line on stderr and exit status 1 (an exception
    would have `prefect deploy` print a traceback and a generic message)."""
    try:
        spec_file = deploy_spec.deploying_file(Path(directory), sys.argv)
        if differ := deploy_spec.check(spec_file, Path(directory)):
            raise SourceError(
                f"{spec_file}'s retraining deployment does not say what the params file does: "
                + "; ".join(differ)
                + f" (edit {spec_file} to match: `python -m flows.serve` deploys the params')"
            )
        found = resolve_source(Path(directory))
        params_file = Path(directory) / DEFAULT_PARAMS_PATH
        if params_file.is_file() and (note := per_worker_stores(load_params(params_file))):
            print(f"prefect deploy: {note}", file=sys.stderr)
        return found
    except (SourceError, ParamsError, OSError) as exc:
        print(f"prefect deploy: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
