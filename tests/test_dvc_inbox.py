"""The DVC-tracked inbox (dvc.yaml's `inbox` stage): new labelled digits re-run ingest onwards,
and only then; `dvc push` / `dvc pull` share them; a clone that has not pulled them is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.inbox import extra
from mnist_pipeline.inbox import store as inbox
from tests.dvc_helpers import lock_hashes, make_project, ran, run
from tests.test_dvc import DVC_STAGES, INBOX, STAGES
from tests.test_ingest import stroke_png

pytestmark = pytest.mark.slow


def test_new_labelled_digits_rerun_ingest_onwards_and_are_recorded(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_project(repo, tmp_path / "mirror")
    assert ran(run(repo, "dvc", "repro")) == set(DVC_STAGES)  # the empty inbox: MNIST alone
    empty = json.loads(Layout(repo).train_record.read_text())["fingerprint"]
    assert empty["extra_sha256"] == extra.NO_EXTRA_SHA256
    before = lock_hashes(repo)

    for seed in range(6):
        inbox.add(Layout(repo).inbox, stroke_png(seed), f"s{seed}.png", seed)
    status = run(repo, "dvc", "status")
    assert f"{INBOX}:" in status and "ingest:" in status and "modified" in status
    assert ran(run(repo, "dvc", "repro")) == {INBOX, *STAGES} - {"fetch"}
    after = lock_hashes(repo)
    assert after["data/ingested"] != before["data/ingested"]
    assert after["data/mnist"] == before["data/mnist"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    (tracked,) = lock["stages"][INBOX]["outs"]
    assert (tracked["path"], tracked["nfiles"]) == ("data/extra", 6)  # `dvc repro` recorded it
    assert len(inbox.entries(Layout(repo).inbox)) == 6  # the stage kept the inbox (persist)
    record = json.loads(Layout(repo).train_record.read_text())["fingerprint"]
    assert record["extra_sha256"] == extra.extra_sha256(Layout(repo).extra_dir)
    assert record["extra_sha256"] != extra.NO_EXTRA_SHA256 and record["sha256"] != empty["sha256"]
    # Nothing changed since: nothing runs, and `dvc status` says so.
    assert ran(run(repo, "dvc", "repro")) == set()
    assert "up to date" in run(repo, "dvc", "status")

    # Shared: a clone gets the digits with `dvc pull`; before it, `dvc repro` refuses to start
    # from an empty inbox (it would train without them and record their loss).
    run(repo, "git", "add", "dvc.lock")
    run(repo, "git", "commit", "-q", "-m", "six labelled digits")
    run(repo, "dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"))
    run(repo, "dvc", "push")
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    refused = run(clone, "dvc", "repro", ok=False)
    assert f"failed to reproduce '{INBOX}'" in refused, refused
    assert "records 6 file(s)" in refused and "dvc pull data/extra" in refused, refused
    assert ran(refused) == {INBOX} and not (clone / "data" / "extra").exists()
    run(clone, "dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"))
    run(clone, "dvc", "pull", "data/extra")
    assert len(inbox.entries(Layout(clone).inbox)) == 6
