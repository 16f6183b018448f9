"""A DVC remote on an S3-compatible store (moto's server): one clone fetches and ingests, then
`dvc push`es; another clone with the same remote gets byte-identical data by `dvc pull` alone,
without the mirrors; a remote that cannot be reached or a bucket that does not exist fails."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.inbox import store as inbox
from tests.conftest import unavailable
from tests.dvc_helpers import dvc_env, make_project, ran, run
from tests.s3_helpers import CREDENTIALS, new_bucket
from tests.test_dvc import INBOX
from tests.test_ingest import stroke_png

pytestmark = pytest.mark.slow

REMOTE = "store"
PULLED = (INBOX, "fetch", "ingest")  # the stages whose outputs travel through the remote
DATA = ("data/mnist", "data/extra", "data/ingested", "reports/ingest.json")


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Test credentials in the standard AWS_* variables, empty AWS config files (dvc-s3 refuses
    /dev/null: "could not be found"), and no AWS_ENDPOINT_URL: the endpoint comes from the
    remote's `endpointurl` alone."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "aws-config"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


def use_remote(repo: Path, url: str, endpoint: str) -> None:
    """Configure the remote as a user would: its URL (committed), the endpoint (local)."""
    run(repo, "dvc", "remote", "add", "-d", "--force", REMOTE, url)
    run(repo, "dvc", "remote", "modify", "--local", REMOTE, "endpointurl", endpoint)


def digests(repo: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under the pulled outputs."""
    files = [p for name in DATA for p in sorted([repo / name, *(repo / name).rglob("*")])]
    return {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if p.is_file()
    }


def fails(repo: Path, *args: str) -> str:
    """Run a command in `repo` that must exit non-zero; returns stdout+stderr."""
    done = subprocess.run(
        args, cwd=repo, env=dvc_env(repo), capture_output=True, text=True, timeout=300, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, f"{' '.join(args)} succeeded:\n{output}"
    return output


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def pushed(tmp_path: Path, s3_endpoint: str, aws_env: None) -> tuple[Path, str]:
    """A clone that fetched MNIST (tiny mirror) and ingested three labelled digits, committed
    its dvc.lock and remote, and pushed the data to s3://<new bucket>/dvc; and that URL."""
    if importlib.util.find_spec("dvc_s3") is None:
        unavailable("dvc-s3 is not installed (the dvc-s3 extra)")
    make_project(tmp_path / "origin", tmp_path / "mirror")
    first = tmp_path / "first"
    run(tmp_path, "git", "clone", "-q", str(tmp_path / "origin"), str(first))
    for seed in range(3):
        inbox.add(Layout(first).inbox, stroke_png(seed), f"s{seed}.png", seed)
    url = f"s3://{new_bucket(s3_endpoint)}/dvc"
    use_remote(first, url, s3_endpoint)
    assert ran(run(first, "dvc", "repro", *PULLED)) == set(PULLED)
    run(first, "git", "add", "dvc.lock", ".dvc/config")
    run(first, "git", "commit", "-q", "-m", "data, and where it is stored")
    run(first, "dvc", "push", *PULLED)
    assert "in sync" in run(first, "dvc", "status", "--cloud", *PULLED)
    return first, url


def test_a_second_clone_pulls_the_pushed_data(
    pushed: tuple[Path, str], tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, url = pushed
    shutil.rmtree(tmp_path / "mirror")  # from here on no mirror exists: the data is on S3 only
    second = tmp_path / "second"
    run(tmp_path, "git", "clone", "-q", str(first), str(second))
    assert not (second / ".dvc" / "config.local").exists()  # the endpoint is not committed
    run(second, "dvc", "remote", "modify", "--local", REMOTE, "endpointurl", s3_endpoint)
    assert run(second, "dvc", "remote", "list").split() == [REMOTE, url, "(default)"]
    run(second, "dvc", "pull", *PULLED)
    assert len(inbox.entries(Layout(second).inbox)) == 3
    assert digests(second) == digests(first)
    assert len(digests(second)) > 10  # the four MNIST files, three digits, the ingested set
    assert "Data and pipelines are up to date." in run(second, "dvc", "status", *PULLED)
    assert ran(run(second, "dvc", "repro", *PULLED)) == set()  # would fail: the mirror is gone
    assert "in sync" in run(second, "dvc", "status", "--cloud", *PULLED)
    # Without endpointurl, the AWS_ENDPOINT_URL that the registry's hosts set reaches it too.
    run(second, "dvc", "remote", "modify", "--local", "--unset", REMOTE, "endpointurl")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    assert "in sync" in run(second, "dvc", "status", "--cloud", *PULLED)


def test_a_pull_from_an_unreachable_store_or_a_missing_bucket_fails(
    pushed: tuple[Path, str], tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, url = pushed
    second = tmp_path / "second"
    run(tmp_path, "git", "clone", "-q", str(first), str(second))
    down = f"http://127.0.0.1:{closed_port()}"
    run(second, "dvc", "remote", "modify", "--local", REMOTE, "endpointurl", down)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # one try, not botocore's retries with backoff
    refused = fails(second, "dvc", "pull", INBOX)
    assert "ERROR: failed to connect to s3" in refused, refused
    assert f'Could not connect to the endpoint URL: "{down}/' in refused, refused
    assert not (second / "data" / "extra").exists()

    # A bucket that does not exist reads as a remote without the data (DVC names no bucket).
    use_remote(second, url.replace("models-", "missing-"), s3_endpoint)
    missing = fails(second, "dvc", "pull", INBOX)
    assert "do not exist neither locally nor on remote" in missing, missing
    assert "ERROR: failed to pull data from the cloud" in missing, missing
    assert not (second / "data" / "extra").exists()
